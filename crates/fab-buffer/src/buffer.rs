//! The prioritised replay buffer itself.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::{BufferError, Result};

/// Version tag written into checkpoints; [`PrioritisedBuffer::load`] refuses other versions.
const FORMAT_VERSION: i64 = 1;

/// Buffer sizes, in points (not batches), as in the paper configs
/// (docs/ALGORITHMS.md, "Replay buffer").
///
/// The defaults are the GMM values (min 1 280, max 12 800). Many Well uses 65 536 / 512 000 and
/// ALDP 65 536 / 524 288.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// Entries that must have been added before sampling is allowed.
    pub min_len: usize,
    /// Capacity: once full, the oldest entry is overwritten (FIFO).
    pub max_len: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self { min_len: 1280, max_len: 12_800 }
    }
}

impl BufferConfig {
    /// Checks `max_len > 0` and `min_len <= max_len`.
    ///
    /// # Errors
    /// [`BufferError::InvalidConfig`] saying which value to change.
    pub fn validate(&self) -> Result<()> {
        if self.max_len == 0 {
            return Err(BufferError::InvalidConfig("max_len (capacity) must be > 0".into()));
        }
        if self.min_len > self.max_len {
            return Err(BufferError::InvalidConfig(format!(
                "min_len = {} exceeds max_len = {}: the buffer could never become ready; \
                 lower min_len or raise max_len",
                self.min_len, self.max_len
            )));
        }
        Ok(())
    }

    /// Builds an empty buffer for points of dimension `dim`.
    ///
    /// # Errors
    /// As [`PrioritisedBuffer::new`].
    pub fn init(&self, dim: usize) -> Result<PrioritisedBuffer> {
        PrioritisedBuffer::new(dim, self.max_len, self.min_len)
    }
}

/// What [`PrioritisedBuffer::add`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddReport {
    /// Entries written into the buffer.
    pub added: usize,
    /// Entries refused because x, log w or log q was NaN or ±∞.
    pub dropped: usize,
}

/// A batch drawn from the buffer (row i of every field belongs to buffer slot `indices[i]`).
#[derive(Debug, Clone)]
pub struct BufferBatch {
    /// The points, `[n, dim]`, in the dtype and on the device that were asked for.
    pub x: Tensor,
    /// Their stored log-weights at the time of drawing.
    pub log_w: Vec<f64>,
    /// Their stored log q_old (log density of the flow when last generated or adjusted).
    pub log_q_old: Vec<f64>,
    /// The buffer slots, to pass back to [`PrioritisedBuffer::adjust`].
    pub indices: Vec<usize>,
}

/// The result of [`PrioritisedBuffer::adjust`], one value per adjusted index, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Adjustment {
    /// log_w_adjust = (1 − α)(log q_new − log q_old), unclipped; NaN or ±∞ where the entry was
    /// killed. This is what was added to the stored log-weights.
    pub log_w_adjust: Vec<f64>,
    /// The loss weights w_adj = min(exp(log_w_adjust), clip) (no `min` when there is no clip).
    ///
    /// A killed entry keeps its non-finite value here (NaN stays NaN, +∞ becomes `clip` when a
    /// clip is set), so that a loss built from these weights is non-finite and the training step
    /// is skipped, as in the reference.
    pub loss_weights: Vec<f64>,
    /// Entries whose log-weight was set to −∞ because the adjustment or log q_new was not finite.
    pub n_killed: usize,
}

/// log_w_adjust = (1 − α)·(log q_new − log q_old), the change of an entry's log importance weight
/// when the flow moves from q_old to q_new (for α = 2: log q_old − log q_new).
pub fn log_weight_adjustment(log_q_old: f64, log_q_new: f64, alpha: f64) -> f64 {
    (1.0 - alpha) * (log_q_new - log_q_old)
}

/// A prioritised replay buffer of (x, log w, log q_old) for FAB (Midgley et al. 2023;
/// docs/ALGORITHMS.md, "Replay buffer").
///
/// * Fixed capacity with circular (FIFO) overwrite: entry `i` of the k-th point ever added lives in
///   slot `k mod capacity`.
/// * Sampling is allowed once at least `min_len` entries were ever added ([`can_sample`](Self::can_sample)).
/// * [`sample_indices`](Self::sample_indices) draws K distinct slots with probability ∝ w = exp(log w)
///   by Gumbel-top-k, then shuffles them.
/// * [`adjust`](Self::adjust) re-weights drawn entries after the flow changed.
///
/// Everything is stored on the host in f64; the filled part is always slots `0..len()`.
#[derive(Clone)]
pub struct PrioritisedBuffer {
    dim: usize,
    capacity: usize,
    min_len: usize,
    /// `[len × dim]`, row-major; grows until `capacity` rows, then rows are overwritten.
    x: Vec<f64>,
    log_w: Vec<f64>,
    log_q_old: Vec<f64>,
    /// The slot the next added entry goes to.
    next: usize,
    /// Entries ever added (dropped ones not counted).
    total_added: u64,
}

impl fmt::Debug for PrioritisedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrioritisedBuffer")
            .field("dim", &self.dim)
            .field("capacity", &self.capacity)
            .field("min_len", &self.min_len)
            .field("len", &self.len())
            .field("next", &self.next)
            .field("total_added", &self.total_added)
            .finish()
    }
}

impl PrioritisedBuffer {
    /// An empty buffer for points of dimension `dim`, holding at most `capacity` entries, that
    /// allows sampling once `min_len` entries were added.
    ///
    /// # Errors
    /// [`BufferError::InvalidConfig`] if `dim == 0`, `capacity == 0` or `min_len > capacity`.
    pub fn new(dim: usize, capacity: usize, min_len: usize) -> Result<Self> {
        if dim == 0 {
            return Err(BufferError::InvalidConfig("dim must be > 0".into()));
        }
        BufferConfig { min_len, max_len: capacity }.validate()?;
        Ok(Self { dim, capacity, min_len, x: Vec::new(), log_w: Vec::new(), log_q_old: Vec::new(), next: 0, total_added: 0 })
    }

    /// Dimension of the stored points.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries needed before sampling is allowed.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// Number of filled slots (`min(total_added, capacity)`).
    pub fn len(&self) -> usize {
        self.log_w.len()
    }

    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.log_w.is_empty()
    }

    /// Whether every slot is filled (further additions overwrite the oldest entries).
    pub fn is_full(&self) -> bool {
        self.log_w.len() == self.capacity
    }

    /// Entries ever added (including overwritten ones).
    pub fn total_added(&self) -> u64 {
        self.total_added
    }

    /// Whether at least `min_len` entries were ever added.
    pub fn can_sample(&self) -> bool {
        self.total_added >= self.min_len as u64
    }

    /// The slot the next added entry will be written to.
    pub fn next_slot(&self) -> usize {
        self.next
    }

    /// Stored points of the filled part, row-major `[len × dim]`.
    pub fn x(&self) -> &[f64] {
        &self.x
    }

    /// Stored log-weights of the filled part (−∞ for killed entries).
    pub fn log_w(&self) -> &[f64] {
        &self.log_w
    }

    /// Stored log q_old of the filled part.
    pub fn log_q_old(&self) -> &[f64] {
        &self.log_q_old
    }

    /// Slot `i` as `(x, log w, log q_old)`, or `None` if `i >= len()`.
    pub fn entry(&self, i: usize) -> Option<(&[f64], f64, f64)> {
        (i < self.len()).then(|| (&self.x[i * self.dim..(i + 1) * self.dim], self.log_w[i], self.log_q_old[i]))
    }

    /// Number of filled slots with a finite log-weight (the ones that can be drawn).
    pub fn n_live(&self) -> usize {
        self.log_w.iter().filter(|l| l.is_finite()).count()
    }

    /// Fraction of filled slots whose log-weight is −∞ (killed by [`adjust`](Self::adjust));
    /// 0 for an empty buffer.
    pub fn dead_fraction(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        (self.len() - self.n_live()) as f64 / self.len() as f64
    }

    /// Effective sample size of the stored weights as a fraction of the live entries,
    /// 1 / (N Σ w̄ᵢ²) with w̄ = softmax(log w) over the N finite entries (0 when none).
    pub fn ess(&self) -> f64 {
        fab_core::stats::effective_sample_size(&self.log_w)
    }

    /// Adds a batch from tensors: `x` `[n, dim]`, `log_w` `[n]`, `log_q` `[n]` (any float dtype,
    /// any device). See [`add_host`](Self::add_host).
    ///
    /// # Errors
    /// [`BufferError::InvalidArgument`] on a shape mismatch; candle errors on copy failures.
    pub fn add(&mut self, x: &Tensor, log_w: &Tensor, log_q: &Tensor) -> Result<AddReport> {
        let n = log_w.dims1().map_err(|_| BufferError::InvalidArgument(format!("log_w must have shape [n], got {:?}", log_w.dims())))?;
        if log_q.dims() != [n] {
            return Err(BufferError::InvalidArgument(format!("log_q must have shape [{n}] like log_w, got {:?}", log_q.dims())));
        }
        if x.dims() != [n, self.dim] {
            return Err(BufferError::InvalidArgument(format!("x must have shape [{n}, {}], got {:?}", self.dim, x.dims())));
        }
        let x = fab_core::to_f64_vec(x)?;
        let log_w = fab_core::to_f64_vec(log_w)?;
        let log_q = fab_core::to_f64_vec(log_q)?;
        self.add_host(&x, &log_w, &log_q)
    }

    /// Adds a batch from host slices: `x` row-major `[n × dim]`, `log_w` and `log_q` of length n.
    ///
    /// Entries are written in order at the next slots, wrapping around and overwriting the oldest
    /// entries once the buffer is full (a batch larger than the capacity leaves only its last
    /// `capacity` entries). Entries whose x, log w or log q is NaN or ±∞ are not stored and are
    /// counted in [`AddReport::dropped`] (the reference's AIS removes them before adding).
    ///
    /// # Errors
    /// [`BufferError::InvalidArgument`] on inconsistent lengths (nothing is added then).
    pub fn add_host(&mut self, x: &[f64], log_w: &[f64], log_q: &[f64]) -> Result<AddReport> {
        let n = log_w.len();
        if log_q.len() != n || x.len() != n * self.dim {
            return Err(BufferError::InvalidArgument(format!(
                "add: got {n} log-weights, {} log q values and {} x values; expected n, n and n·{} ",
                log_q.len(),
                x.len(),
                self.dim
            )));
        }
        let mut report = AddReport { added: 0, dropped: 0 };
        for i in 0..n {
            let row = &x[i * self.dim..(i + 1) * self.dim];
            if !(log_w[i].is_finite() && log_q[i].is_finite() && row.iter().all(|v| v.is_finite())) {
                report.dropped += 1;
                continue;
            }
            let slot = self.next;
            if slot == self.log_w.len() {
                self.x.extend_from_slice(row);
                self.log_w.push(log_w[i]);
                self.log_q_old.push(log_q[i]);
            } else {
                self.x[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(row);
                self.log_w[slot] = log_w[i];
                self.log_q_old[slot] = log_q[i];
            }
            self.next = (slot + 1) % self.capacity;
            self.total_added += 1;
            report.added += 1;
        }
        Ok(report)
    }

    /// Draws `k` distinct slots with probability ∝ exp(log w), in random order.
    ///
    /// Gumbel-top-k: every filled slot i gets the key log wᵢ + gᵢ with gᵢ ~ Gumbel(0, 1); the k
    /// largest keys are selected, which is exactly successive sampling without replacement with
    /// probabilities ∝ wᵢ. The selected slots are then put in ascending order and shuffled
    /// (Fisher–Yates), so that consecutive chunks of the result are exchangeable.
    ///
    /// Randomness: exactly `len()` Gumbel draws (one per filled slot, in slot order, one
    /// `next_u64` each) followed by k − 1 uniform index draws for the shuffle, whatever the weights.
    /// `k == 0` returns an empty list and draws nothing. Slots with log w = −∞ are never drawn.
    ///
    /// # Errors
    /// [`BufferError::NotReady`] before `min_len` entries were added;
    /// [`BufferError::NotEnoughEntries`] if `k` exceeds the number of slots with a finite
    /// log-weight (the reference's `topk` would then return −∞ entries; here it is an error).
    pub fn sample_indices(&self, k: usize, rng: &mut dyn RngCore) -> Result<Vec<usize>> {
        if !self.can_sample() {
            return Err(BufferError::NotReady { added: self.total_added, min_len: self.min_len });
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let available = self.n_live();
        if k > available {
            return Err(BufferError::NotEnoughEntries { requested: k, available });
        }
        let mut keys: Vec<(f64, usize)> = Vec::with_capacity(available);
        for (i, &lw) in self.log_w.iter().enumerate() {
            let g = standard_gumbel(rng);
            if lw.is_finite() {
                keys.push((lw + g, i));
            }
        }
        // Largest key first; ties (probability zero) broken by slot for determinism.
        let by_key_desc = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if k < keys.len() {
            keys.select_nth_unstable_by(k - 1, by_key_desc);
        }
        let mut idx: Vec<usize> = keys[..k].iter().map(|&(_, i)| i).collect();
        idx.sort_unstable();
        for i in (1..idx.len()).rev() {
            let j = rng.random_range(0..=i);
            idx.swap(i, j);
        }
        Ok(idx)
    }

    /// Copies the entries at `indices` into a [`BufferBatch`], x as a `[n, dim]` tensor of
    /// `dtype` on `device`.
    ///
    /// # Errors
    /// [`BufferError::InvalidArgument`] if an index is not a filled slot; candle errors.
    pub fn gather(&self, indices: &[usize], dtype: DType, device: &Device) -> Result<BufferBatch> {
        let mut x = Vec::with_capacity(indices.len() * self.dim);
        let mut log_w = Vec::with_capacity(indices.len());
        let mut log_q_old = Vec::with_capacity(indices.len());
        for &i in indices {
            let (row, lw, lq) = self
                .entry(i)
                .ok_or_else(|| BufferError::InvalidArgument(format!("index {i} is not a filled slot (len {})", self.len())))?;
            x.extend_from_slice(row);
            log_w.push(lw);
            log_q_old.push(lq);
        }
        let x = Tensor::from_vec(x, (indices.len(), self.dim), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
        Ok(BufferBatch { x, log_w, log_q_old, indices: indices.to_vec() })
    }

    /// One batch of `n` distinct entries drawn ∝ w ([`sample_indices`](Self::sample_indices) then
    /// [`gather`](Self::gather)).
    ///
    /// # Errors
    /// As [`sample_indices`](Self::sample_indices) and [`gather`](Self::gather).
    pub fn sample(&self, n: usize, dtype: DType, device: &Device, rng: &mut dyn RngCore) -> Result<BufferBatch> {
        let idx = self.sample_indices(n, rng)?;
        self.gather(&idx, dtype, device)
    }

    /// FAB's draw for one iteration: K = `batch_size`·`n_batches` distinct entries at once
    /// (all with the weights as they are now), split into `n_batches` consecutive chunks of
    /// `batch_size` (docs/ALGORITHMS.md, "Replay buffer"). The data of every chunk is copied now;
    /// adjust each chunk with [`adjust`](Self::adjust) after its gradient step.
    ///
    /// # Errors
    /// As [`sample_indices`](Self::sample_indices) with k = K.
    pub fn sample_batches(
        &self,
        batch_size: usize,
        n_batches: usize,
        dtype: DType,
        device: &Device,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<BufferBatch>> {
        let k = batch_size
            .checked_mul(n_batches)
            .ok_or_else(|| BufferError::InvalidArgument(format!("batch_size·n_batches overflows ({batch_size}·{n_batches})")))?;
        if batch_size == 0 {
            return (0..n_batches).map(|_| self.gather(&[], dtype, device)).collect();
        }
        let idx = self.sample_indices(k, rng)?;
        idx.chunks(batch_size).map(|c| self.gather(c, dtype, device)).collect()
    }

    /// Re-weights the entries at `indices` after the flow changed from q_old to q_new
    /// (docs/ALGORITHMS.md, "Replay buffer", weight correction), given `log_q_new[i]` = log q_θ(x)
    /// of entry `indices[i]` under the current flow.
    ///
    /// For every entry: log_w_adjust = (1 − α)(log q_new − log q_old), with log q_old as currently
    /// stored. If log_w_adjust and log q_new are finite, the stored log w += log_w_adjust (the
    /// **unclipped** adjustment) and the stored log q_old = log q_new; otherwise the stored log w
    /// becomes −∞ (the entry is never drawn again until overwritten) and log q_old is left as it was.
    ///
    /// Returns the adjustments and the loss weights w_adj = exp(log_w_adjust), clipped above at
    /// `w_adjust_max_clip` when it is `Some` (the clip acts **only** on the returned loss weights,
    /// never on what is stored: this is the reference's behaviour). For α = 2, w_adj = q_old/q_new.
    ///
    /// In FAB the loss −mean(w_adj · log q_θ(x)) needs w_adj before the optimiser step, and the
    /// reference adjusts with log q_θ from before the step; both are served by calling `adjust`
    /// right after evaluating log q_θ(x) on a chunk. Call it before the next [`add`](Self::add),
    /// which could overwrite the slots.
    ///
    /// # Errors
    /// [`BufferError::InvalidArgument`] (nothing is modified) if `indices` and `log_q_new` differ
    /// in length, an index is not a filled slot or appears twice, `alpha` is not finite, or the
    /// clip is not a positive number.
    pub fn adjust(&mut self, indices: &[usize], log_q_new: &[f64], alpha: f64, w_adjust_max_clip: Option<f64>) -> Result<Adjustment> {
        if indices.len() != log_q_new.len() {
            return Err(BufferError::InvalidArgument(format!("adjust: {} indices but {} log q values", indices.len(), log_q_new.len())));
        }
        if !alpha.is_finite() {
            return Err(BufferError::InvalidArgument(format!("alpha must be finite, got {alpha}")));
        }
        if let Some(c) = w_adjust_max_clip {
            if c.is_nan() || c <= 0.0 {
                return Err(BufferError::InvalidArgument(format!("w_adjust_max_clip must be > 0 (or None for no clip), got {c}")));
            }
        }
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        if let Some(&last) = sorted.last() {
            if last >= self.len() {
                return Err(BufferError::InvalidArgument(format!("adjust: index {last} is not a filled slot (len {})", self.len())));
            }
        }
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(BufferError::InvalidArgument(format!("adjust: index {} appears twice", w[0])));
        }
        let mut out =
            Adjustment { log_w_adjust: Vec::with_capacity(indices.len()), loss_weights: Vec::with_capacity(indices.len()), n_killed: 0 };
        for (&i, &lq) in indices.iter().zip(log_q_new) {
            let adj = log_weight_adjustment(self.log_q_old[i], lq, alpha);
            if adj.is_finite() && lq.is_finite() {
                self.log_w[i] += adj;
                self.log_q_old[i] = lq;
            } else {
                self.log_w[i] = f64::NEG_INFINITY;
                out.n_killed += 1;
            }
            let w = adj.exp();
            out.loss_weights.push(match w_adjust_max_clip {
                Some(c) if w > c => c,
                _ => w,
            });
            out.log_w_adjust.push(adj);
        }
        Ok(out)
    }

    /// Saves the buffer to a safetensors file: the filled part as f64 tensors `x` `[len, dim]`,
    /// `log_w` `[len]`, `log_q_old` `[len]`, and an i64 tensor `state` =
    /// `[version, dim, capacity, min_len, len, next, total_added]`.
    ///
    /// # Errors
    /// Candle/IO errors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let n = self.len();
        let cpu = Device::Cpu;
        let state = [
            FORMAT_VERSION,
            self.dim as i64,
            self.capacity as i64,
            self.min_len as i64,
            n as i64,
            self.next as i64,
            self.total_added as i64,
        ];
        let mut map = HashMap::new();
        map.insert("x".to_string(), Tensor::from_slice(&self.x, (n, self.dim), &cpu)?);
        map.insert("log_w".to_string(), Tensor::from_slice(&self.log_w, n, &cpu)?);
        map.insert("log_q_old".to_string(), Tensor::from_slice(&self.log_q_old, n, &cpu)?);
        map.insert("state".to_string(), Tensor::from_slice(&state, state.len(), &cpu)?);
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Loads a buffer written by [`save`](Self::save); it continues exactly where the saved one
    /// stopped (same slots, same next slot, same counters, bit-identical values).
    ///
    /// # Errors
    /// [`BufferError::Format`] if a tensor is missing, has the wrong dtype or shape, or the
    /// counters are inconsistent; candle/IO errors.
    pub fn load(path: &Path) -> Result<Self> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let get = |name: &str, dtype: DType| -> Result<&Tensor> {
            let t = map.get(name).ok_or_else(|| BufferError::Format(format!("{}: no tensor `{name}`", path.display())))?;
            if t.dtype() != dtype {
                return Err(BufferError::Format(format!("`{name}` has dtype {:?}, expected {dtype:?}", t.dtype())));
            }
            Ok(t)
        };
        let state = get("state", DType::I64)?.to_vec1::<i64>()?;
        if state.len() != 7 || state[0] != FORMAT_VERSION {
            return Err(BufferError::Format(format!(
                "unsupported buffer state header {state:?} (expected version {FORMAT_VERSION}, 7 fields)"
            )));
        }
        if state[1..].iter().any(|&v| v < 0) {
            return Err(BufferError::Format(format!("negative counter in state {state:?}")));
        }
        let (dim, capacity, min_len, n, next) =
            (state[1] as usize, state[2] as usize, state[3] as usize, state[4] as usize, state[5] as usize);
        let total_added = state[6] as u64;
        let mut buf = Self::new(dim, capacity, min_len).map_err(|e| BufferError::Format(e.to_string()))?;
        let consistent = n <= capacity
            && n as u64 == total_added.min(capacity as u64)
            && next < capacity
            && next as u64 == total_added % capacity as u64;
        if !consistent {
            return Err(BufferError::Format(format!("inconsistent counters in state {state:?}")));
        }
        let x = get("x", DType::F64)?;
        let log_w = get("log_w", DType::F64)?;
        let log_q_old = get("log_q_old", DType::F64)?;
        if x.dims() != [n, dim] || log_w.dims() != [n] || log_q_old.dims() != [n] {
            return Err(BufferError::Format(format!(
                "array shapes x {:?}, log_w {:?}, log_q_old {:?} do not match len {n}, dim {dim}",
                x.dims(),
                log_w.dims(),
                log_q_old.dims()
            )));
        }
        buf.x = x.flatten_all()?.to_vec1::<f64>()?;
        buf.log_w = log_w.to_vec1::<f64>()?;
        buf.log_q_old = log_q_old.to_vec1::<f64>()?;
        buf.next = next;
        buf.total_added = total_added;
        Ok(buf)
    }
}

/// One Gumbel(0, 1) draw, −ln(−ln u) with u uniform on the open interval (0, 1) built from the
/// top 53 bits of one `next_u64` (u = (m + ½)·2⁻⁵³, m ∈ {0, …, 2⁵³ − 1}), so it is always finite.
fn standard_gumbel(rng: &mut dyn RngCore) -> f64 {
    let m = rng.next_u64() >> 11;
    let u = (m as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -(-u.ln()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fab_core::seeded_rng;

    fn filled(cap: usize, min_len: usize, log_w: &[f64]) -> PrioritisedBuffer {
        let mut b = PrioritisedBuffer::new(1, cap, min_len).unwrap();
        let x: Vec<f64> = (0..log_w.len()).map(|i| i as f64).collect();
        b.add_host(&x, log_w, &vec![0.0; log_w.len()]).unwrap();
        b
    }

    #[test]
    fn validation_errors() {
        assert!(matches!(PrioritisedBuffer::new(0, 10, 1), Err(BufferError::InvalidConfig(_))));
        assert!(matches!(PrioritisedBuffer::new(2, 0, 0), Err(BufferError::InvalidConfig(_))));
        assert!(matches!(PrioritisedBuffer::new(2, 10, 11), Err(BufferError::InvalidConfig(_))));
        assert!(PrioritisedBuffer::new(2, 10, 10).is_ok());
        let mut b = PrioritisedBuffer::new(2, 10, 1).unwrap();
        // x has 3 values for 2 entries of dim 2.
        assert!(matches!(b.add_host(&[0.0; 3], &[0.0; 2], &[0.0; 2]), Err(BufferError::InvalidArgument(_))));
        assert!(matches!(b.add_host(&[0.0; 4], &[0.0; 2], &[0.0; 1]), Err(BufferError::InvalidArgument(_))));
        let cpu = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F64, &cpu).unwrap();
        let lw = Tensor::zeros(2, DType::F64, &cpu).unwrap();
        assert!(matches!(b.add(&x, &lw, &lw), Err(BufferError::InvalidArgument(_))));
        assert!(b.is_empty());
        b.add_host(&[0.0; 4], &[0.0; 2], &[0.0; 2]).unwrap();
        // alpha, clip, lengths, indices.
        assert!(b.adjust(&[0], &[0.0], f64::NAN, None).is_err());
        assert!(b.adjust(&[0], &[0.0], 2.0, Some(0.0)).is_err());
        assert!(b.adjust(&[0], &[0.0], 2.0, Some(f64::NAN)).is_err());
        assert!(b.adjust(&[0, 1], &[0.0], 2.0, None).is_err());
        assert!(b.adjust(&[2], &[0.0], 2.0, None).is_err());
        assert!(b.adjust(&[1, 1], &[0.0, 0.0], 2.0, None).is_err());
        assert!(b.gather(&[5], DType::F64, &cpu).is_err());
        // Nothing was modified by the failed calls.
        assert_eq!(b.log_w(), &[0.0, 0.0]);
    }

    #[test]
    fn config_defaults_and_serde() {
        let c = BufferConfig::default();
        assert_eq!((c.min_len, c.max_len), (1280, 12_800));
        assert!(c.validate().is_ok());
        assert!(BufferConfig { min_len: 5, max_len: 4 }.validate().is_err());
        let b = c.init(2).unwrap();
        assert_eq!((b.dim(), b.capacity(), b.min_len()), (2, 12_800, 1280));
    }

    #[test]
    fn fifo_overwrite_order() {
        let mut b = PrioritisedBuffer::new(2, 4, 2).unwrap();
        let add = |b: &mut PrioritisedBuffer, ids: &[f64]| {
            let x: Vec<f64> = ids.iter().flat_map(|&v| [v, -v]).collect();
            let lw: Vec<f64> = ids.iter().map(|v| v * 0.1).collect();
            let lq: Vec<f64> = ids.iter().map(|v| -v).collect();
            b.add_host(&x, &lw, &lq).unwrap()
        };
        add(&mut b, &[1.0]);
        assert_eq!((b.len(), b.is_full(), b.can_sample(), b.next_slot()), (1, false, false, 1));
        add(&mut b, &[2.0, 3.0]);
        assert_eq!((b.len(), b.is_full(), b.can_sample(), b.next_slot()), (3, false, true, 3));
        // Slot 3 gets 4, then 5 and 6 overwrite the two oldest (1, 2) in slots 0 and 1.
        add(&mut b, &[4.0, 5.0, 6.0]);
        assert_eq!((b.len(), b.is_full(), b.next_slot(), b.total_added()), (4, true, 2, 6));
        assert_eq!(b.x(), &[5.0, -5.0, 6.0, -6.0, 3.0, -3.0, 4.0, -4.0]);
        assert_eq!(b.log_q_old(), &[-5.0, -6.0, -3.0, -4.0]);
        assert_eq!(b.entry(2).unwrap(), (&[3.0, -3.0][..], 3.0 * 0.1, -3.0));
        // A batch longer than the capacity keeps only its last `capacity` entries, in order:
        // 7..=12 written at slots 2,3,0,1,2,3 → slots hold [9, 10, 11, 12].
        add(&mut b, &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        assert_eq!(b.log_q_old(), &[-9.0, -10.0, -11.0, -12.0]);
        assert_eq!(b.next_slot(), 0);
        assert_eq!(b.total_added(), 12);
    }

    #[test]
    fn min_len_gating_and_non_finite_adds_dropped() {
        let mut b = PrioritisedBuffer::new(1, 10, 3).unwrap();
        let mut rng = seeded_rng(0, 0);
        b.add_host(&[0.0, 1.0], &[0.0, 0.0], &[0.0, 0.0]).unwrap();
        assert!(matches!(b.sample_indices(1, &mut rng), Err(BufferError::NotReady { added: 2, min_len: 3 })));
        // Non-finite log w, log q or x are dropped and do not count towards min_len.
        let r = b.add_host(&[2.0, f64::NAN, 4.0, 5.0], &[f64::NEG_INFINITY, 0.0, 0.0, f64::NAN], &[0.0, 0.0, f64::INFINITY, 0.0]).unwrap();
        assert_eq!(r, AddReport { added: 0, dropped: 4 });
        assert!(!b.can_sample());
        b.add_host(&[6.0], &[0.0], &[0.0]).unwrap();
        assert!(b.can_sample());
        assert_eq!(b.sample_indices(3, &mut rng).unwrap().len(), 3);
        assert!(b.sample_indices(0, &mut rng).unwrap().is_empty());
        // can_sample stays true forever once reached.
        assert!(b.can_sample());
    }

    #[test]
    fn not_enough_finite_entries_is_an_error() {
        let mut b = filled(8, 1, &[0.0, 1.0, 2.0, 3.0]);
        let mut rng = seeded_rng(1, 0);
        b.adjust(&[1, 3], &[f64::NAN, 0.0], 2.0, None).unwrap();
        assert_eq!(b.n_live(), 3);
        assert!(matches!(b.sample_indices(4, &mut rng), Err(BufferError::NotEnoughEntries { requested: 4, available: 3 })));
        let mut all = b.sample_indices(3, &mut rng).unwrap();
        all.sort_unstable();
        assert_eq!(all, vec![0, 2, 3]);
    }

    #[test]
    fn adjust_alpha_two_by_hand() {
        // Two entries: log w = [0.2, 0.3], log q_old = [-1.0, -2.0]; new log q = [-1.5, -1.0].
        // α = 2: log_w_adjust = (1 − 2)(new − old) = −(−0.5) = 0.5 and −(1.0) = −1.0.
        let mut b = PrioritisedBuffer::new(1, 4, 1).unwrap();
        b.add_host(&[0.0, 1.0], &[0.2, 0.3], &[-1.0, -2.0]).unwrap();
        let a = b.adjust(&[1, 0], &[-1.0, -1.5], 2.0, None).unwrap();
        assert_eq!(a.log_w_adjust, vec![-1.0, 0.5]);
        // w_adj = q_old / q_new: exp(−1) and exp(0.5).
        assert!((a.loss_weights[0] - 0.36787944117144233).abs() < 1e-15);
        assert!((a.loss_weights[1] - 1.6487212707001282).abs() < 1e-15);
        assert_eq!(a.n_killed, 0);
        assert!((b.log_w()[0] - 0.7).abs() < 1e-15);
        assert!((b.log_w()[1] - (-0.7)).abs() < 1e-15);
        assert_eq!(b.log_q_old(), &[-1.5, -1.0]);

        // With clip 1.5: the loss weight e^0.5 = 1.6487 is clipped to 1.5, e^−1 is not; the stored
        // log w still receives the unclipped 0.5.
        let mut c = PrioritisedBuffer::new(1, 4, 1).unwrap();
        c.add_host(&[0.0, 1.0], &[0.2, 0.3], &[-1.0, -2.0]).unwrap();
        let a = c.adjust(&[0, 1], &[-1.5, -1.0], 2.0, Some(1.5)).unwrap();
        assert_eq!(a.loss_weights[0], 1.5);
        assert!((a.loss_weights[1] - 0.36787944117144233).abs() < 1e-15);
        assert!((c.log_w()[0] - 0.7).abs() < 1e-15);
    }

    #[test]
    fn adjust_general_alpha_by_hand() {
        // α = 0.5: log_w_adjust = 0.5 (new − old): old −1, new −1.5 → −0.25; old −2, new −1 → 0.5.
        // α = −1: 2 (new − old) → −1.0 and 2.0.
        for (alpha, expect) in [(0.5, [-0.25, 0.5]), (-1.0, [-1.0, 2.0])] {
            let mut b = PrioritisedBuffer::new(1, 4, 1).unwrap();
            b.add_host(&[0.0, 1.0], &[0.2, 0.3], &[-1.0, -2.0]).unwrap();
            let a = b.adjust(&[0, 1], &[-1.5, -1.0], alpha, None).unwrap();
            assert_eq!(a.log_w_adjust, expect.to_vec());
            assert!((b.log_w()[0] - (0.2 + expect[0])).abs() < 1e-15);
            assert!((b.log_w()[1] - (0.3 + expect[1])).abs() < 1e-15);
            assert!((a.loss_weights[1] - expect[1].exp()).abs() < 1e-15);
        }
        // α = 1 leaves the weights unchanged but still refreshes log q_old.
        let mut b = PrioritisedBuffer::new(1, 4, 1).unwrap();
        b.add_host(&[0.0], &[0.2], &[-1.0]).unwrap();
        let a = b.adjust(&[0], &[-3.0], 1.0, None).unwrap();
        assert_eq!((a.log_w_adjust[0], a.loss_weights[0], b.log_w()[0], b.log_q_old()[0]), (0.0, 1.0, 0.2, -3.0));
    }

    #[test]
    fn non_finite_adjustment_kills_entry() {
        let mut b = PrioritisedBuffer::new(1, 4, 1).unwrap();
        b.add_host(&[0.0, 1.0, 2.0, 3.0], &[0.0; 4], &[-1.0; 4]).unwrap();
        // NaN log q, −∞ log q (adjustment +∞ for α = 2), +∞ log q, and one valid entry.
        let a = b.adjust(&[0, 1, 2, 3], &[f64::NAN, f64::NEG_INFINITY, f64::INFINITY, -1.0], 2.0, Some(10.0)).unwrap();
        assert_eq!(a.n_killed, 3);
        assert_eq!(&b.log_w()[..3], &[f64::NEG_INFINITY; 3]);
        assert_eq!(b.log_w()[3], 0.0);
        // Killed entries keep their old log q_old.
        assert_eq!(b.log_q_old(), &[-1.0; 4]);
        // Loss weights: NaN stays NaN; +∞ adjustment → clipped to 10; −∞ adjustment → 0.
        assert!(a.loss_weights[0].is_nan());
        assert_eq!(a.loss_weights[1], 10.0);
        assert_eq!(a.loss_weights[2], 0.0);
        assert_eq!(a.loss_weights[3], 1.0);
        assert!((b.dead_fraction() - 0.75).abs() < 1e-15);
        assert_eq!(b.n_live(), 1);
        // A killed entry is never drawn.
        let mut rng = seeded_rng(2, 0);
        for _ in 0..100 {
            assert_eq!(b.sample_indices(1, &mut rng).unwrap(), vec![3]);
        }
        // An overwrite revives the slot.
        b.add_host(&[9.0], &[0.0], &[0.0]).unwrap();
        assert_eq!(b.n_live(), 2);
    }

    #[test]
    fn ess_of_stored_weights() {
        // Equal finite weights plus a dead entry: ESS fraction over the live ones is 1.
        let mut b = filled(8, 1, &[0.5, 0.5, 0.5, 0.5]);
        assert!((b.ess() - 1.0).abs() < 1e-12);
        b.adjust(&[0], &[f64::NAN], 2.0, None).unwrap();
        assert!((b.ess() - 1.0).abs() < 1e-12);
        // Weights (1, 1, 2) (log (0, 0, ln 2)): w̄ = (1/4, 1/4, 1/2), Σw̄² = 3/8, ESS = 1/(3·3/8) = 8/9.
        let b = filled(8, 1, &[0.0, 0.0, 2f64.ln()]);
        assert!((b.ess() - 8.0 / 9.0).abs() < 1e-12);
        assert_eq!(PrioritisedBuffer::new(1, 2, 0).unwrap().dead_fraction(), 0.0);
    }

    #[test]
    fn sample_batches_shapes_dtype_and_no_duplicates() {
        let lw: Vec<f64> = (0..50).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut b = PrioritisedBuffer::new(3, 64, 10).unwrap();
        let x: Vec<f64> = (0..150).map(|i| i as f64).collect();
        b.add_host(&x, &lw, &vec![-2.0; 50]).unwrap();
        let mut rng = seeded_rng(3, 0);
        let batches = b.sample_batches(8, 5, DType::F32, &Device::Cpu, &mut rng).unwrap();
        assert_eq!(batches.len(), 5);
        let mut all = Vec::new();
        for bt in &batches {
            assert_eq!(bt.x.dims(), &[8, 3]);
            assert_eq!(bt.x.dtype(), DType::F32);
            let xs = bt.x.to_vec2::<f32>().unwrap();
            for (r, &i) in xs.iter().zip(&bt.indices) {
                assert_eq!(r, &[3.0 * i as f32, 3.0 * i as f32 + 1.0, 3.0 * i as f32 + 2.0]);
            }
            for (k, &i) in bt.indices.iter().enumerate() {
                assert_eq!(bt.log_w[k], lw[i]);
                assert_eq!(bt.log_q_old[k], -2.0);
            }
            all.extend_from_slice(&bt.indices);
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40, "the 40 indices of one draw are distinct");
        assert!(b.sample_batches(10, 6, DType::F64, &Device::Cpu, &mut rng).is_err());
    }
}
