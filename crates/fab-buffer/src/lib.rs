//! # fab-buffer
//!
//! The crate holds two replay buffers: FAB's weight-prioritised [`PrioritisedBuffer`] (below) and
//! the rank-prioritised, keyed [`RankedBuffer`] that the GFlowNet and diffusion-sampler families
//! share for replay: a fixed-capacity FIFO of (key, value, priority) entries with unique keys
//! (re-adding a key makes it the newest entry), sampled with replacement either uniformly or with
//! probability ∝ 1/(k·N + rank) ([`Prioritisation`]), and serialisable for checkpoints.
//!
//! ## FAB's prioritised buffer
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
//!
//! ## The ranked buffer
//!
//! Replay for GFlowNets and diffusion samplers, keyed by terminal state:
//! ```
//! # use fab_buffer::{Prioritisation, RankedBuffer};
//! # fn main() -> fab_buffer::Result<()> {
//! let mut rng = fab_core::seeded_rng(0, 4);
//! // Terminal states (here strings) with their log-rewards as priorities.
//! let mut replay = RankedBuffer::new(3)?;
//! replay.insert("s1", vec![0, 1], -2.0)?;
//! replay.insert("s2", vec![1, 1], 0.5)?;
//! replay.insert("s1", vec![0, 1], -1.0)?; // re-added: "s1" is now the newest entry
//! replay.insert("s3", vec![2, 0], f64::NEG_INFINITY)?;
//! replay.insert("s4", vec![2, 2], 3.0)?; // full: the oldest entry, "s2", is evicted
//! assert_eq!(replay.iter().map(|(k, _, _)| *k).collect::<Vec<_>>(), ["s1", "s3", "s4"]);
//! assert_eq!(replay.ranks(), [1, 2, 0]);
//! let idx = replay.sample(4, Prioritisation::rank_default(), &mut rng)?; // positions, oldest = 0
//! let batch: Vec<&Vec<u8>> = idx.iter().filter_map(|&i| replay.get(i)).map(|(_, x, _)| x).collect();
//! assert_eq!(batch.len(), 4);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![forbid(unsafe_code)]

mod buffer;
mod error;
mod ranked;

pub use buffer::{log_weight_adjustment, AddReport, Adjustment, BufferBatch, BufferConfig, PrioritisedBuffer};
pub use error::{BufferError, Result};
pub use ranked::{Prioritisation, RankedBuffer, RankedIter};
