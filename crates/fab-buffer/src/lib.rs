//! # fab-buffer
//!
//! The prioritised replay buffer of FAB (Midgley et al. 2023, "Flow Annealed Importance Sampling
//! Bootstrap", §3.3 and Algorithm 2): a fixed-capacity FIFO store of AIS samples x with their
//! log importance weights log w and the flow's log density log q_old at the time they were
//! generated, from which FAB draws training batches with probability ∝ w (without replacement)
//! and whose weights it corrects as the flow changes.
//!
//! One FAB iteration with this crate:
//! ```
//! # use candle_core::{DType, Device};
//! # use fab_buffer::PrioritisedBuffer;
//! # fn main() -> fab_buffer::Result<()> {
//! let mut rng = fab_core::seeded_rng(0, 3);
//! let mut buf = PrioritisedBuffer::new(2, 100, 4)?;
//! // 1. add an AIS batch: x [n × 2], log w, log q(x) at generation
//! buf.add_host(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], &[0.0, -1.0, 0.5, 0.1], &[-2.0; 4])?;
//! // 2. draw K = B·L distinct entries ∝ w, as L chunks of B
//! let chunks = buf.sample_batches(2, 2, DType::F64, &Device::Cpu, &mut rng)?;
//! for chunk in &chunks {
//!     // 3. log q_θ(x) under the current flow (here a stand-in), then re-weight the chunk
//!     let log_q_new = vec![-1.9; chunk.indices.len()];
//!     let adj = buf.adjust(&chunk.indices, &log_q_new, 2.0, None)?;
//!     // loss = −mean(adj.loss_weights · log q_θ(x)); backward; clip; Adam step
//!     assert_eq!(adj.loss_weights.len(), 2);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![forbid(unsafe_code)]

mod buffer;
mod error;

pub use buffer::{log_weight_adjustment, AddReport, Adjustment, BufferBatch, BufferConfig, PrioritisedBuffer};
pub use error::{BufferError, Result};
