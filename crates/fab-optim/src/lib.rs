//! # fab-optim
//!
//! The optimiser of fab-rs: Adam/AdamW with PyTorch semantics and checkpointable state,
//! learning-rate schedules (warm-up, cosine), global gradient-norm clipping, and the
//! training-step rule of the reference (see `docs/ALGORITHMS.md`, "Optimiser and schedules").
//!
//! candle-nn's `AdamW` hides its moments (no checkpoint/resume) and has no clipping helper, so
//! fab-rs owns these pieces. Everything works on a [`fab_core::ParamSet`] (stable order and
//! names) and the [`fab_core::Grads`] aligned with it. `fab_train::optim` re-exports this crate.
//!
//! A training step as in the reference trainer:
//! ```
//! # use candle_core::{DType, Device, Var};
//! # use fab_core::ParamSet;
//! # use fab_optim::{Adam, AdamConfig, LrSchedule, StepOutcome};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut params = ParamSet::new();
//! let w = params.create("w", vec![1.0, -2.0], &[2], DType::F64, &Device::Cpu)?;
//! let mut adam = Adam::new(&params, AdamConfig { lr: 1e-3, ..Default::default() })?;
//! let schedule = LrSchedule::Constant;
//! for it in 0..3u64 {
//!     adam.set_learning_rate(schedule.lr_at(1e-3, it))?;
//!     let loss = w.as_tensor().sqr()?.sum_all()?;
//!     let loss_value = loss.to_scalar::<f64>()?;
//!     if !loss_value.is_finite() {
//!         continue; // StepOutcome::SkippedNonFiniteLoss: no backward, no step
//!     }
//!     let mut grads = params.grads_from_store(&loss.backward()?);
//!     let outcome = adam.step_clipped(&params, &mut grads, Some(100.0))?;
//!     assert!(matches!(outcome, StepOutcome::Applied { .. }));
//! }
//! assert_eq!(adam.step_count(), 3);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use fab_core::{Grads, ParamSet};
use serde::{Deserialize, Serialize};

/// Errors of the optimiser pieces.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A hyper-parameter or schedule setting is out of range.
    #[error("invalid optimiser setting: {0}")]
    InvalidConfig(String),
    /// Parameters, gradients or loaded state do not fit together (count, name, shape, dtype).
    #[error("parameters, gradients and optimiser state do not match: {0}")]
    Mismatch(String),
    /// An optimiser checkpoint is malformed or from an unsupported format version.
    #[error("invalid optimiser checkpoint: {0}")]
    Format(String),
    /// An error from fab-core.
    #[error(transparent)]
    Core(#[from] fab_core::Error),
    /// A tensor operation or safetensors I/O failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type OptimResult<T> = std::result::Result<T, OptimError>;

/// Format version written into optimiser checkpoints.
const FORMAT_VERSION: i64 = 1;

/// Adam hyper-parameters. The defaults are PyTorch's `torch.optim.Adam` defaults
/// (lr 1e-3, β = (0.9, 0.999), eps 1e-8, no weight decay).
///
/// The paper configs (`docs/ALGORITHMS.md`, "Optimiser and schedules"): GMM lr 1e-4; Many Well
/// lr 3e-4; ALDP lr 5e-4 with `weight_decay` 1e-5 (L2, not decoupled).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (the base rate when a schedule is used).
    pub lr: f64,
    /// Decay of the first-moment average, in [0, 1).
    pub beta1: f64,
    /// Decay of the second-moment average, in [0, 1).
    pub beta2: f64,
    /// Term added to the denominator √v̂ for numerical stability.
    pub eps: f64,
    /// Weight-decay coefficient λ ≥ 0. See [`decoupled_weight_decay`](Self::decoupled_weight_decay).
    pub weight_decay: f64,
    /// `false` (torch `Adam`): L2 penalty, the gradient becomes g + λθ before the moments.
    /// `true` (torch `AdamW`): decoupled decay, θ ← θ(1 − lr·λ) before the Adam update.
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled_weight_decay: false }
    }
}

impl AdamConfig {
    /// Checks lr ≥ 0, 0 ≤ β₁, β₂ < 1, eps ≥ 0, weight_decay ≥ 0, all finite.
    ///
    /// # Errors
    /// [`OptimError::InvalidConfig`] naming the offending value.
    pub fn validate(&self) -> OptimResult<()> {
        let check = |name: &str, v: f64, ok: bool| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(OptimError::InvalidConfig(format!("Adam {name} = {v} is out of range")))
            }
        };
        check("lr", self.lr, self.lr >= 0.0)?;
        check("beta1", self.beta1, (0.0..1.0).contains(&self.beta1))?;
        check("beta2", self.beta2, (0.0..1.0).contains(&self.beta2))?;
        check("eps", self.eps, self.eps >= 0.0)?;
        check("weight_decay", self.weight_decay, self.weight_decay >= 0.0)
    }
}

/// Adam (Kingma & Ba 2015) with the semantics of PyTorch's `torch.optim.Adam` / `AdamW`, over a
/// [`ParamSet`], with state that can be saved and resumed bit-identically.
///
/// For a parameter θ with gradient g at its t-th update (t counts only the updates in which this
/// parameter had a gradient, like torch's per-parameter `step`):
///
/// ```text
/// g ← g + λθ                                    (L2 weight decay, torch Adam), or
/// θ ← θ(1 − lr·λ)                               (decoupled, torch AdamW)
/// m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²    (m = v = 0 before the first update)
/// θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + eps)
/// ```
///
/// A parameter whose gradient is `None` is left untouched (no decay, no moment update), as torch
/// does for `p.grad is None`. Moments live on the parameter's device in its dtype.
pub struct Adam {
    config: AdamConfig,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    dtypes: Vec<DType>,
    devices: Vec<Device>,
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
    param_steps: Vec<u64>,
    n_steps: u64,
    update_path: UpdatePath,
}

/// Which code computes the per-parameter update in [`Adam::step`].
///
/// Both compute the same arithmetic in the same order and precision, except that the tensor
/// operations multiply by the reciprocal of √(1 − β₂ᵗ) where the fused kernel divides by it, so
/// results agree to about one rounding per step (tested in `tests/update_paths.rs`). The choice
/// is a run-time setting and is not part of a saved optimiser state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UpdatePath {
    /// The fused host kernel (one pass over the elements instead of about twelve tensor
    /// operations) for every parameter that is a contiguous CPU f32 or f64 tensor, candle tensor
    /// operations for every other parameter. The default.
    #[default]
    Auto,
    /// Candle tensor operations for every parameter (any device, any float dtype).
    TensorOps,
    /// The fused host kernel for every parameter; [`Adam::step`] returns
    /// [`OptimError::Mismatch`] (before modifying anything) if a parameter, its gradient or its
    /// moments are not contiguous CPU f32/f64 tensors.
    Fused,
}

impl fmt::Debug for Adam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adam")
            .field("config", &self.config)
            .field("n_params", &self.names.len())
            .field("n_steps", &self.n_steps)
            .field("update_path", &self.update_path)
            .finish()
    }
}

impl Adam {
    /// An optimiser for `params` (their names, shapes, dtypes and devices are recorded; later
    /// calls must pass the same set), with zero moments and step count 0.
    ///
    /// # Errors
    /// [`OptimError::InvalidConfig`] if `config` does not validate.
    pub fn new(params: &ParamSet, config: AdamConfig) -> OptimResult<Self> {
        config.validate()?;
        let n = params.len();
        Ok(Self {
            config,
            names: params.names().to_vec(),
            shapes: params.vars().iter().map(|v| v.dims().to_vec()).collect(),
            dtypes: params.vars().iter().map(|v| v.dtype()).collect(),
            devices: params.vars().iter().map(|v| v.device().clone()).collect(),
            m: vec![None; n],
            v: vec![None; n],
            param_steps: vec![0; n],
            n_steps: 0,
            update_path: UpdatePath::Auto,
        })
    }

    /// Chooses the code that computes the updates from now on (see [`UpdatePath`]).
    pub fn set_update_path(&mut self, path: UpdatePath) {
        self.update_path = path;
    }

    /// The code that computes the updates (see [`UpdatePath`]).
    pub fn update_path(&self) -> UpdatePath {
        self.update_path
    }

    /// An optimiser for `params` restored from a file written by [`save`](Self::save)
    /// (hyper-parameters, learning rate, step counts and moments all come from the file).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn from_file(params: &ParamSet, path: &Path) -> OptimResult<Self> {
        let mut adam = Self::new(params, AdamConfig::default())?;
        adam.load(path)?;
        Ok(adam)
    }

    /// The current hyper-parameters (`lr` is the current learning rate).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// The current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate used by the next steps (e.g. from an [`LrSchedule`]).
    ///
    /// # Errors
    /// [`OptimError::InvalidConfig`] if `lr` is negative or not finite.
    pub fn set_learning_rate(&mut self, lr: f64) -> OptimResult<()> {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(OptimError::InvalidConfig(format!("learning rate must be finite and >= 0, got {lr}")));
        }
        self.config.lr = lr;
        Ok(())
    }

    /// Number of optimiser steps applied (calls of [`step`](Self::step) that succeeded; skipped
    /// steps of [`step_clipped`](Self::step_clipped) do not count).
    pub fn step_count(&self) -> u64 {
        self.n_steps
    }

    /// Per-parameter update counts t (the exponent of the bias corrections), in parameter order.
    pub fn param_steps(&self) -> &[u64] {
        &self.param_steps
    }

    /// First-moment estimate m of parameter `name` (`None` before its first update).
    pub fn first_moment(&self, name: &str) -> Option<&Tensor> {
        self.position(name).and_then(|i| self.m[i].as_ref())
    }

    /// Second-moment estimate v of parameter `name` (`None` before its first update).
    pub fn second_moment(&self, name: &str) -> Option<&Tensor> {
        self.position(name).and_then(|i| self.v[i].as_ref())
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    fn check_params(&self, params: &ParamSet) -> OptimResult<()> {
        if params.names() != self.names.as_slice() {
            return Err(OptimError::Mismatch(format!(
                "the optimiser was built for {} parameters {:?}…, got {} parameters {:?}…",
                self.names.len(),
                self.names.first(),
                params.len(),
                params.names().first()
            )));
        }
        Ok(())
    }

    /// One Adam update of every parameter that has a gradient (see the type's documentation).
    ///
    /// All shapes and dtypes are checked before any parameter is modified. The update of each
    /// parameter is computed by the code chosen with [`set_update_path`](Self::set_update_path).
    ///
    /// # Errors
    /// [`OptimError::Mismatch`] if `params` is not the set the optimiser was built for, or
    /// `grads` has the wrong length or a gradient with the wrong shape or dtype, or (with
    /// [`UpdatePath::Fused`]) a parameter the fused kernel cannot handle; candle errors.
    pub fn step(&mut self, params: &ParamSet, grads: &Grads) -> OptimResult<()> {
        self.check_params(params)?;
        if grads.0.len() != params.len() {
            return Err(OptimError::Mismatch(format!("{} gradients for {} parameters", grads.0.len(), params.len())));
        }
        for ((name, var), g) in params.iter().zip(&grads.0) {
            if let Some(g) = g {
                if g.dims() != var.dims() || g.dtype() != var.dtype() {
                    return Err(OptimError::Mismatch(format!(
                        "gradient of {name} has shape {:?} and dtype {:?}, the parameter {:?} and {:?}",
                        g.dims(),
                        g.dtype(),
                        var.dims(),
                        var.dtype()
                    )));
                }
            }
        }
        if self.update_path == UpdatePath::Fused {
            for (i, ((name, var), g)) in params.iter().zip(&grads.0).enumerate() {
                let Some(g) = g else { continue };
                let on_host = |t: &Tensor| t.device().is_cpu() && t.is_contiguous();
                let moments_ok = [&self.m[i], &self.v[i]].iter().all(|o| o.as_ref().is_none_or(on_host));
                if !(matches!(var.dtype(), DType::F32 | DType::F64) && on_host(var.as_tensor()) && on_host(g) && moments_ok) {
                    let (dtype, location) = (var.dtype(), var.device().location());
                    return Err(OptimError::Mismatch(format!(
                        "the fused update needs contiguous CPU f32/f64 tensors; \
                         parameter {name} is {dtype:?} on {location:?}"
                    )));
                }
            }
        }
        for (i, (var, g)) in params.vars().iter().zip(&grads.0).enumerate() {
            let Some(g) = g else { continue };
            let t = self.param_steps[i] + 1;
            let (m_prev, v_prev) = (self.m[i].as_ref(), self.v[i].as_ref());
            let fused = match (self.update_path, var.dtype()) {
                (UpdatePath::TensorOps, _) => None,
                (_, DType::F64) => fused_adam_step::<f64>(&self.config, t, var, g, m_prev, v_prev)?,
                (_, DType::F32) => fused_adam_step::<f32>(&self.config, t, var, g, m_prev, v_prev)?,
                _ => None,
            };
            let (m, v) = match fused {
                Some(mv) => mv,
                // Unreachable for `Fused`: the check above ran before anything was modified.
                None => tensor_adam_step(&self.config, t, var, g, m_prev, v_prev)?,
            };
            self.m[i] = Some(m);
            self.v[i] = Some(v);
            self.param_steps[i] = t;
        }
        self.n_steps += 1;
        Ok(())
    }

    /// The training-step rule of the reference (`docs/ALGORITHMS.md`, "Optimiser and schedules")
    /// after a finite loss was back-propagated:
    /// compute the global gradient norm, clip it to `max_norm` when given
    /// ([`clip_grad_norm`]), and apply [`step`](Self::step) only if the pre-clip norm is finite.
    ///
    /// Returns [`StepOutcome::Applied`] with the pre-clip norm, or
    /// [`StepOutcome::SkippedNonFiniteGradNorm`] (parameters, moments and step counts untouched).
    ///
    /// # Errors
    /// As [`clip_grad_norm`] and [`step`](Self::step).
    pub fn step_clipped(&mut self, params: &ParamSet, grads: &mut Grads, max_norm: Option<f64>) -> OptimResult<StepOutcome> {
        let grad_norm = match max_norm {
            Some(m) => clip_grad_norm(grads, m)?,
            None => grads.global_norm()?,
        };
        if !grad_norm.is_finite() {
            return Ok(StepOutcome::SkippedNonFiniteGradNorm { grad_norm });
        }
        self.step(params, grads)?;
        Ok(StepOutcome::Applied { grad_norm })
    }

    /// Saves hyper-parameters, learning rate, step counts and moments to a safetensors file.
    ///
    /// Layout: `adam.hyper` (f64: lr, β₁, β₂, eps, weight_decay, decoupled as 0/1),
    /// `adam.meta` (i64: format version, step count), and per parameter `<name>` that has been
    /// updated: `m.<name>`, `v.<name>` (parameter dtype) and `step.<name>` (i64, shape `[1]`).
    ///
    /// # Errors
    /// Candle/IO errors.
    pub fn save(&self, path: &Path) -> OptimResult<()> {
        let cpu = Device::Cpu;
        let c = &self.config;
        let hyper = [c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, f64::from(u8::from(c.decoupled_weight_decay))];
        let mut map = HashMap::new();
        map.insert("adam.hyper".to_string(), Tensor::from_slice(&hyper, hyper.len(), &cpu)?);
        map.insert("adam.meta".to_string(), Tensor::from_slice(&[FORMAT_VERSION, self.n_steps as i64], 2, &cpu)?);
        for (i, name) in self.names.iter().enumerate() {
            if let (Some(m), Some(v)) = (&self.m[i], &self.v[i]) {
                map.insert(format!("m.{name}"), m.to_device(&cpu)?);
                map.insert(format!("v.{name}"), v.to_device(&cpu)?);
                map.insert(format!("step.{name}"), Tensor::from_slice(&[self.param_steps[i] as i64], 1, &cpu)?);
            }
        }
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Replaces the whole state (hyper-parameters, learning rate, step counts, moments) with the
    /// one saved by [`save`](Self::save). Moments are matched to parameters by name and moved to
    /// each parameter's device and dtype. Nothing changes if the file is rejected.
    ///
    /// # Errors
    /// [`OptimError::Format`] for a malformed file, or state for a parameter this optimiser does
    /// not have, or a moment of the wrong shape; candle/IO errors.
    pub fn load(&mut self, path: &Path) -> OptimResult<()> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let fmt_err = |msg: String| OptimError::Format(format!("{}: {msg}", path.display()));
        let get = |key: &str, dtype: DType| -> OptimResult<&Tensor> {
            let t = map.get(key).ok_or_else(|| fmt_err(format!("no tensor `{key}`")))?;
            if t.dtype() != dtype {
                return Err(fmt_err(format!("`{key}` has dtype {:?}, expected {dtype:?}", t.dtype())));
            }
            Ok(t)
        };
        let meta = get("adam.meta", DType::I64)?.to_vec1::<i64>()?;
        if meta.len() != 2 || meta[0] != FORMAT_VERSION || meta[1] < 0 {
            return Err(fmt_err(format!("unsupported header {meta:?} (expected format version {FORMAT_VERSION})")));
        }
        let hyper = get("adam.hyper", DType::F64)?.to_vec1::<f64>()?;
        if hyper.len() != 6 {
            return Err(fmt_err(format!("`adam.hyper` has {} values, expected 6", hyper.len())));
        }
        let config = AdamConfig {
            lr: hyper[0],
            beta1: hyper[1],
            beta2: hyper[2],
            eps: hyper[3],
            weight_decay: hyper[4],
            decoupled_weight_decay: hyper[5] != 0.0,
        };
        config.validate().map_err(|e| fmt_err(e.to_string()))?;
        // Every per-parameter key must belong to a known parameter.
        for key in map.keys() {
            let known = match key.split_once('.') {
                Some(("m" | "v" | "step", name)) => self.position(name).is_some(),
                Some(("adam", "hyper" | "meta")) => true,
                _ => false,
            };
            if !known {
                return Err(fmt_err(format!("state `{key}` belongs to no parameter of this model")));
            }
        }
        let n = self.names.len();
        let (mut m, mut v, mut steps) = (vec![None; n], vec![None; n], vec![0u64; n]);
        for i in 0..n {
            let name = &self.names[i];
            let (km, kv, ks) = (format!("m.{name}"), format!("v.{name}"), format!("step.{name}"));
            let present = [&km, &kv, &ks].map(|k| map.contains_key(k.as_str()));
            if present == [false; 3] {
                continue;
            }
            if present != [true; 3] {
                return Err(fmt_err(format!("incomplete state for parameter {name}")));
            }
            let s = get(&ks, DType::I64)?.to_vec1::<i64>()?;
            if s.len() != 1 || s[0] < 1 {
                return Err(fmt_err(format!("`{ks}` must hold one positive count, got {s:?}")));
            }
            let tm = map[km.as_str()].clone();
            let tv = map[kv.as_str()].clone();
            for (k, t) in [(&km, &tm), (&kv, &tv)] {
                if t.dims() != self.shapes[i].as_slice() {
                    return Err(fmt_err(format!("`{k}` has shape {:?}, the parameter {:?}", t.dims(), self.shapes[i])));
                }
            }
            m[i] = Some(tm.to_dtype(self.dtypes[i])?.to_device(&self.devices[i])?);
            v[i] = Some(tv.to_dtype(self.dtypes[i])?.to_device(&self.devices[i])?);
            steps[i] = s[0] as u64;
        }
        self.config = config;
        self.m = m;
        self.v = v;
        self.param_steps = steps;
        self.n_steps = meta[1] as u64;
        Ok(())
    }
}

/// One Adam update of parameter `var` (its `t`-th, t ≥ 1) with gradient `g` and the previous
/// moments (`None` before the first update) in candle tensor operations, so on any device and in
/// any float dtype. Sets the parameter and returns the new moments (m, v).
fn tensor_adam_step(
    cfg: &AdamConfig,
    t: u64,
    var: &Var,
    g: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
) -> OptimResult<(Tensor, Tensor)> {
    let AdamConfig { lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay } = *cfg;
    let mut theta = var.as_tensor().clone();
    let mut g = g.clone();
    if weight_decay != 0.0 {
        if decoupled_weight_decay {
            theta = theta.affine(1.0 - lr * weight_decay, 0.0)?;
        } else {
            g = (g + theta.affine(weight_decay, 0.0)?)?;
        }
    }
    let g_part = g.affine(1.0 - beta1, 0.0)?;
    let m = match m {
        Some(m) => (m.affine(beta1, 0.0)? + g_part)?,
        None => g_part,
    };
    let g2_part = g.sqr()?.affine(1.0 - beta2, 0.0)?;
    let v = match v {
        Some(v) => (v.affine(beta2, 0.0)? + g2_part)?,
        None => g2_part,
    };
    let bias_correction1 = 1.0 - beta1.powf(t as f64);
    let bias_correction2_sqrt = (1.0 - beta2.powf(t as f64)).sqrt();
    let step_size = lr / bias_correction1;
    let denom = ((v.sqrt()? / bias_correction2_sqrt)? + eps)?;
    let update = (m.affine(step_size, 0.0)? / denom)?;
    var.set(&(theta - update)?)?;
    Ok((m, v))
}

/// Runs `f` on the contiguous host slice of a CPU tensor of type `T` (`None` otherwise).
fn with_host_slice<T: candle_core::WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(c) if layout.is_contiguous() => {
            let all = c.as_slice::<T>().ok()?;
            let start = layout.start_offset();
            Some(f(&all[start..start + t.elem_count()]))
        }
        _ => None,
    }
}

/// One Adam update of a CPU parameter in a single pass, with the same arithmetic (operation
/// order and precision) as [`tensor_adam_step`] up to the division noted at [`UpdatePath`].
/// Returns the new moments, or `None` when the parameter, gradient or moments are not contiguous
/// CPU tensors of type `T`.
fn fused_adam_step<T: candle_core::WithDType + num_traits::Float + num_traits::NumAssign>(
    cfg: &AdamConfig,
    t: u64,
    var: &Var,
    g: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
) -> OptimResult<Option<(Tensor, Tensor)>> {
    let n = var.elem_count();
    let c = |x: f64| <T as candle_core::WithDType>::from_f64(x);
    let (lr, b1, b2, eps, wd) = (cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay);
    let step_size = c(lr / (1.0 - b1.powf(t as f64)));
    let bc2 = c((1.0 - b2.powf(t as f64)).sqrt());
    let (first_m, first_v) = (m.is_none(), v.is_none());
    let read = |o: Option<&Tensor>| -> Option<Vec<T>> {
        match o {
            Some(x) => with_host_slice::<T, _>(x, |s| s.to_vec()),
            None => Some(vec![T::zero(); n]),
        }
    };
    let (Some(mut m), Some(mut v)) = (read(m), read(v)) else {
        return Ok(None);
    };
    let Some(Some(theta)) = with_host_slice::<T, _>(var.as_tensor(), |theta| {
        with_host_slice::<T, _>(g, |g| {
            let mut out = theta.to_vec();
            let (one_b1, one_b2) = (c(1.0 - b1), c(1.0 - b2));
            let (b1, b2, eps) = (c(b1), c(b2), c(eps));
            for k in 0..n {
                let mut th = theta[k];
                let mut gk = g[k];
                if wd != 0.0 {
                    if cfg.decoupled_weight_decay {
                        th *= c(1.0 - lr * wd);
                    } else {
                        gk += th * c(wd);
                    }
                }
                // The first step starts from zero moments exactly as the tensor version does
                // (which skips the β·0 term).
                let mk = if first_m { gk * one_b1 } else { m[k] * b1 + gk * one_b1 };
                let vk = if first_v { gk * gk * one_b2 } else { v[k] * b2 + gk * gk * one_b2 };
                m[k] = mk;
                v[k] = vk;
                let denom = vk.sqrt() / bc2 + eps;
                out[k] = th - (mk * step_size) / denom;
            }
            out
        })
    }) else {
        return Ok(None);
    };
    let shape = var.shape().clone();
    var.set(&Tensor::from_vec(theta, shape.clone(), &Device::Cpu)?)?;
    Ok(Some((Tensor::from_vec(m, shape.clone(), &Device::Cpu)?, Tensor::from_vec(v, shape, &Device::Cpu)?)))
}

/// What [`Adam::step_clipped`] (or the trainer) did with one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum StepOutcome {
    /// The optimiser step was applied; `grad_norm` is the global norm **before** clipping.
    Applied {
        /// Pre-clip global L2 norm of the gradients.
        grad_norm: f64,
    },
    /// The gradient norm was NaN or ±∞, so no step was taken (`docs/ALGORITHMS.md`,
    /// "Optimiser and schedules").
    SkippedNonFiniteGradNorm {
        /// The non-finite norm.
        grad_norm: f64,
    },
    /// The loss was NaN or ±∞, so neither backward nor a step was run (`docs/ALGORITHMS.md`,
    /// "Optimiser and schedules"). Built by the trainer, which checks the loss before
    /// back-propagating.
    SkippedNonFiniteLoss {
        /// The non-finite loss.
        loss: f64,
    },
}

impl StepOutcome {
    /// Whether the parameters were updated.
    pub fn applied(&self) -> bool {
        matches!(self, StepOutcome::Applied { .. })
    }
}

/// Clips gradients to a global L2 norm of at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` does, and returns the **pre-clip** norm.
///
/// The norm is taken over all gradients together (`None` entries count as zero). If
/// `max_norm / (norm + 1e-6) < 1`, every gradient is multiplied by that factor (so a norm equal
/// to `max_norm` is still shrunk by the 1e-6, exactly as torch). If the norm is not finite the
/// gradients are left unchanged (torch would multiply them by NaN or 0); the caller skips the step.
///
/// # Errors
/// [`OptimError::InvalidConfig`] if `max_norm` is NaN or ≤ 0 (+∞ means no clipping); candle errors.
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f64) -> OptimResult<f64> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(OptimError::InvalidConfig(format!("max_norm must be > 0, got {max_norm}")));
    }
    let norm = grads.global_norm()?;
    if norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            grads.scale(coef)?;
        }
    }
    Ok(norm)
}

/// A learning-rate schedule: [`lr_at`](Self::lr_at)`(base_lr, t)` is the rate for the update
/// made at training iteration t = 0, 1, 2, … (the number of iterations before it, skipped ones
/// included: the reference advances its schedulers every iteration).
///
/// TOML/JSON form: `{ type = "warmup_cosine", warmup_steps = 1000, t_max = 50000 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// lr(t) = base (GMM and Many Well).
    #[default]
    Constant,
    /// Linear warm-up only: lr(t) = base · min(1, t / warmup_steps) (torch `LambdaLR`).
    LinearWarmup {
        /// Iterations W ≥ 1 to reach the base rate.
        warmup_steps: u64,
    },
    /// Cosine annealing to 0 (torch `CosineAnnealingLR`, η_min = 0):
    /// lr(t) = base · ½(1 + cos(π t / T_max)).
    Cosine {
        /// Half-period T_max ≥ 1, in iterations.
        t_max: u64,
    },
    /// The ALDP schedule (`docs/ALGORITHMS.md`, "Optimiser and schedules": warm-up W = 1000 then
    /// cosine with T_max = 50 000 counted from iteration 0), i.e. torch's
    /// `LambdaLR(min(1, s/W))` stepped after the `CosineAnnealingLR(T_max)` for iterations
    /// 0..=W, composed in closed form:
    ///
    /// ```text
    /// lr(t) = base · t / W                                            for t ≤ W
    /// lr(t) = base · (1 + cos(π t / T)) / (1 + cos(π (W + 1) / T))    for W < t ≤ T
    /// lr(t) = base · ½(1 + cos(π t / T))                              for t > T
    /// ```
    ///
    /// So lr(0) = 0, lr rises linearly to base at t = W, stays base at t = W + 1 (the last
    /// warm-up overwrite), and then follows the cosine whose clock started at 0, rescaled so that
    /// it continues from base (torch's chained cosine multiplies the current rate by
    /// (1 + cos(πt/T))/(1 + cos(π(t−1)/T)) each iteration). For W = 1000, T = 50 000 the rescale
    /// factor is 1/(1 + cos(π·1001/50 000)) ≈ 0.500495 instead of ½ (0.1 % above the textbook
    /// cosine). lr(T) = 0; beyond T (never reached by the reference, whose run ends at T) the rate
    /// follows torch's restarted branch base · ½(1 + cos(πt/T)).
    WarmupCosine {
        /// Warm-up iterations W ≥ 1.
        warmup_steps: u64,
        /// Cosine half-period T (the total number of iterations in the reference), T > W + 1.
        t_max: u64,
    },
}

impl LrSchedule {
    /// Checks the step counts (W ≥ 1, T ≥ 1, and T > W + 1 for [`LrSchedule::WarmupCosine`]).
    ///
    /// # Errors
    /// [`OptimError::InvalidConfig`].
    pub fn validate(&self) -> OptimResult<()> {
        let bad = |msg: String| Err(OptimError::InvalidConfig(msg));
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::LinearWarmup { warmup_steps: 0 } => bad("warmup_steps must be >= 1 (use `constant` for no warm-up)".into()),
            LrSchedule::Cosine { t_max: 0 } => bad("t_max must be >= 1".into()),
            LrSchedule::WarmupCosine { warmup_steps, t_max } if warmup_steps == 0 || t_max <= warmup_steps + 1 => {
                bad(format!("warmup_cosine needs warmup_steps >= 1 and t_max > warmup_steps + 1, got {warmup_steps} and {t_max}"))
            }
            _ => Ok(()),
        }
    }

    /// The learning rate for the update of iteration `t` given the base rate (see the variants).
    /// Call [`validate`](Self::validate) first: an invalid schedule may return NaN here.
    pub fn lr_at(&self, base_lr: f64, t: u64) -> f64 {
        use std::f64::consts::PI;
        let cos_factor = |t: u64, t_max: u64| 1.0 + (PI * t as f64 / t_max as f64).cos();
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::LinearWarmup { warmup_steps } => base_lr * (t as f64 / warmup_steps as f64).min(1.0),
            LrSchedule::Cosine { t_max } => base_lr * cos_factor(t, t_max) / 2.0,
            LrSchedule::WarmupCosine { warmup_steps, t_max } => {
                if t <= warmup_steps {
                    base_lr * t as f64 / warmup_steps as f64
                } else if t <= t_max {
                    base_lr * cos_factor(t, t_max) / cos_factor(warmup_steps + 1, t_max)
                } else {
                    base_lr * cos_factor(t, t_max) / 2.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send_sync<T: Send + Sync>() {}

    #[test]
    fn error_is_send_sync() {
        is_send_sync::<OptimError>();
    }

    fn one_param(values: &[f64]) -> (ParamSet, Var) {
        let mut p = ParamSet::new();
        let v = p.create("w", values.to_vec(), &[values.len()], DType::F64, &Device::Cpu).unwrap();
        (p, v)
    }

    fn grads_of(values: &[f64]) -> Grads {
        Grads(vec![Some(Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap())])
    }

    fn vals(v: &Var) -> Vec<f64> {
        v.as_tensor().to_vec1::<f64>().unwrap()
    }

    /// 100 steps on a separable quadratic, compared with PyTorch (CANDLE_NOTES.md, row "`AdamW`
    /// with `weight_decay: 0.0` equals Adam").
    ///
    /// The notes give the final parameters but not the problem. It was reconstructed from those
    /// numbers: Adam is invariant to the gradient scale except through eps, so each coordinate's
    /// end point pins down (offset/lr) and, through eps, the curvature. Searching small integer
    /// offsets and curvatures gives a unique fit, matching all four torch values to ≤ 1.1e-16:
    /// loss(w) = Σ aᵢ(wᵢ − cᵢ)², a = (1, 10, 0.1, 3), c = (0, 1, −1, 2), w₀ = (1, −2, 0.5, 3),
    /// lr 0.05, β = (0.9, 0.999), eps 1e-8. The gradient comes from candle autograd, as in torch.
    ///
    /// Tolerance 1e-13: implementations that apply the same formula in a different rounding order
    /// (torch uses lerp for m and addcdiv; candle's AdamW differs from torch by up to 2.9e-15 on
    /// this problem) agree to a few 1e-15 after 100 steps; any algorithmic difference (no bias
    /// correction, eps inside the square root, a wrong β) moves the result by > 1e-6.
    #[test]
    fn matches_pytorch_adam_on_quadratic() {
        let (params, w) = one_param(&[1.0, -2.0, 0.5, 3.0]);
        let a = Tensor::new(&[1.0f64, 10.0, 0.1, 3.0], &Device::Cpu).unwrap();
        let c = Tensor::new(&[0.0f64, 1.0, -1.0, 2.0], &Device::Cpu).unwrap();
        let mut adam = Adam::new(&params, AdamConfig { lr: 0.05, ..Default::default() }).unwrap();
        for _ in 0..100 {
            let loss = (w.as_tensor() - &c).unwrap().sqr().unwrap().mul(&a).unwrap().sum_all().unwrap();
            let g = params.grads_from_store(&loss.backward().unwrap());
            adam.step(&params, &g).unwrap();
        }
        let torch = [-0.004211400384638859, 0.9434006677176431, -0.990327718005201, 1.9957885998542388];
        for (got, want) in vals(&w).iter().zip(torch) {
            assert!((got - want).abs() < 1e-13, "{got} vs torch {want}");
        }
        assert_eq!(adam.step_count(), 100);
        assert_eq!(adam.param_steps(), &[100]);
    }

    #[test]
    fn first_two_steps_and_bias_correction_by_hand() {
        // lr 0.01, gradients g₁ = 1, g₂ = −2 (given directly).
        // Step 1: m = 0.1, v = 0.001; m̂ = 0.1/0.1 = 1, v̂ = 0.001/0.001 = 1
        //   θ₁ = 0.5 − 0.01·1/(1 + 1e-8) = 0.49000000010000000 (Python: 0.5 - 0.01/(1+1e-8)).
        // Step 2: m = 0.09 − 0.2 = −0.11, v = 0.000999 + 0.004 = 0.004999,
        //   bias corrections 1 − 0.9² = 0.19 and 1 − 0.999² = 0.001999,
        //   θ₂ = θ₁ + 0.01·(0.11/0.19)/(√(0.004999/0.001999) + 1e-8) = 0.4936610353472075 (Python).
        let (params, w) = one_param(&[0.5]);
        let mut adam = Adam::new(&params, AdamConfig { lr: 0.01, ..Default::default() }).unwrap();
        adam.step(&params, &grads_of(&[1.0])).unwrap();
        assert!((vals(&w)[0] - 0.4900000001).abs() < 1e-15);
        let m = adam.first_moment("w").unwrap().to_vec1::<f64>().unwrap()[0];
        let v = adam.second_moment("w").unwrap().to_vec1::<f64>().unwrap()[0];
        assert!((m - 0.1).abs() < 1e-16 && (v - 0.001).abs() < 1e-18);
        adam.step(&params, &grads_of(&[-2.0])).unwrap();
        assert!((vals(&w)[0] - 0.4936610353472075).abs() < 1e-15, "{}", vals(&w)[0]);

        // Bias correction makes the first step ≈ lr·sign(g) whatever the gradient's scale:
        // Δ = −lr·g/(|g| + eps), so for g = 1e-3 it is −lr·(1 − 1e-5) up to 1e-10 relative.
        let (params, w) = one_param(&[0.0, 0.0, 0.0]);
        let mut adam = Adam::new(&params, AdamConfig { lr: 0.1, ..Default::default() }).unwrap();
        adam.step(&params, &grads_of(&[1e-3, -5.0, 200.0])).unwrap();
        let got = vals(&w);
        let want = [-0.1 * 1e-3 / (1e-3 + 1e-8), 0.1 * 5.0 / (5.0 + 1e-8), -0.1 * 200.0 / (200.0 + 1e-8)];
        for (g, e) in got.iter().zip(want) {
            assert!((g - e).abs() < 1e-16, "{g} vs {e}");
        }
    }

    #[test]
    fn weight_decay_l2_and_decoupled_by_hand() {
        // θ = 1, g = 0.5, lr 0.1, λ = 0.1.
        // L2 (torch Adam): g' = 0.5 + 0.1·1 = 0.6, first step θ = 1 − 0.1·0.6/(0.6 + 1e-8).
        let (params, w) = one_param(&[1.0]);
        let cfg = AdamConfig { lr: 0.1, weight_decay: 0.1, ..Default::default() };
        let mut adam = Adam::new(&params, cfg).unwrap();
        adam.step(&params, &grads_of(&[0.5])).unwrap();
        assert!((vals(&w)[0] - (1.0 - 0.1 * 0.6 / (0.6 + 1e-8))).abs() < 1e-15);
        // The decayed gradient went into the moments: m = 0.1·0.6 = 0.06.
        assert!((adam.first_moment("w").unwrap().to_vec1::<f64>().unwrap()[0] - 0.06).abs() < 1e-16);
        // Decoupled (torch AdamW): θ = 1·(1 − 0.1·0.1) = 0.99, then the plain step with g = 0.5:
        // θ = 0.99 − 0.1·0.5/(0.5 + 1e-8).
        let (params, w) = one_param(&[1.0]);
        let mut adam = Adam::new(&params, AdamConfig { decoupled_weight_decay: true, ..cfg }).unwrap();
        adam.step(&params, &grads_of(&[0.5])).unwrap();
        assert!((vals(&w)[0] - (0.99 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-15);
        assert!((adam.first_moment("w").unwrap().to_vec1::<f64>().unwrap()[0] - 0.05).abs() < 1e-16);
    }

    #[test]
    fn none_gradient_leaves_parameter_and_its_step_count_alone() {
        let mut params = ParamSet::new();
        let a = params.create("a", vec![1.0], &[1], DType::F64, &Device::Cpu).unwrap();
        let b = params.create("b", vec![2.0], &[1], DType::F64, &Device::Cpu).unwrap();
        let cfg = AdamConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() };
        let mut adam = Adam::new(&params, cfg).unwrap();
        let ga = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
        for _ in 0..3 {
            adam.step(&params, &Grads(vec![Some(ga.clone()), None])).unwrap();
        }
        assert_eq!(vals(&b), vec![2.0], "no decay either");
        assert_eq!(adam.param_steps(), &[3, 0]);
        assert!(adam.first_moment("b").is_none());
        // b's first update uses its own t = 1: Δ = −lr·g'/(|g'| + eps) with g' = 1 + 0.5·2 = 2.
        adam.step(&params, &Grads(vec![None, Some(ga.clone())])).unwrap();
        assert!((vals(&b)[0] - (2.0 - 0.1 * 2.0 / (2.0 + 1e-8))).abs() < 1e-15);
        assert_eq!(adam.param_steps(), &[3, 1]);
        assert_eq!(adam.step_count(), 4);
        let _ = a;
    }

    #[test]
    fn mismatches_are_errors_and_modify_nothing() {
        let mut params = ParamSet::new();
        let a = params.create("a", vec![1.0, 2.0], &[2], DType::F64, &Device::Cpu).unwrap();
        params.create("b", vec![3.0], &[1], DType::F64, &Device::Cpu).unwrap();
        let mut adam = Adam::new(&params, AdamConfig::default()).unwrap();
        let good = Tensor::new(&[1.0f64, 1.0], &Device::Cpu).unwrap();
        // Wrong length.
        assert!(matches!(adam.step(&params, &Grads(vec![Some(good.clone())])), Err(OptimError::Mismatch(_))));
        // Second gradient of the wrong shape: the first parameter must not have moved.
        let bad = Tensor::new(&[1.0f64, 1.0], &Device::Cpu).unwrap();
        assert!(adam.step(&params, &Grads(vec![Some(good.clone()), Some(bad)])).is_err());
        // Wrong dtype.
        let f32g = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        assert!(adam.step(&params, &Grads(vec![Some(good.clone()), Some(f32g)])).is_err());
        assert_eq!(vals(&a), vec![1.0, 2.0]);
        assert_eq!(adam.step_count(), 0);
        // A different parameter set.
        let (other, _) = one_param(&[0.0]);
        assert!(adam.step(&other, &grads_of(&[1.0])).is_err());
        // Invalid hyper-parameters.
        for bad in [
            AdamConfig { lr: -1.0, ..Default::default() },
            AdamConfig { beta1: 1.0, ..Default::default() },
            AdamConfig { beta2: f64::NAN, ..Default::default() },
            AdamConfig { eps: -1e-8, ..Default::default() },
            AdamConfig { weight_decay: -0.1, ..Default::default() },
        ] {
            assert!(matches!(Adam::new(&params, bad), Err(OptimError::InvalidConfig(_))));
        }
        assert!(adam.set_learning_rate(f64::INFINITY).is_err());
        adam.set_learning_rate(0.25).unwrap();
        assert_eq!(adam.learning_rate(), 0.25);
    }

    #[test]
    fn clip_grad_norm_by_hand() {
        // Gradients (3, 4) and (12): global norm √(9 + 16 + 144) = 13.
        let mk = || {
            Grads(vec![
                Some(Tensor::new(&[3.0f64, 4.0], &Device::Cpu).unwrap()),
                None,
                Some(Tensor::new(&[12.0f64], &Device::Cpu).unwrap()),
            ])
        };
        let mut g = mk();
        let norm = clip_grad_norm(&mut g, 1.3).unwrap();
        assert!((norm - 13.0).abs() < 1e-14);
        // Scale factor 1.3/(13 + 1e-6) = 0.09999999230769291; post-clip norm 1.3·13/(13 + 1e-6).
        let f: f64 = 1.3 / (13.0 + 1e-6);
        assert!((f - 0.09999999230769291).abs() < 1e-16);
        let a = g.0[0].as_ref().unwrap().to_vec1::<f64>().unwrap();
        let c = g.0[2].as_ref().unwrap().to_vec1::<f64>().unwrap();
        assert!((a[0] - 3.0 * f).abs() < 1e-15 && (a[1] - 4.0 * f).abs() < 1e-15 && (c[0] - 12.0 * f).abs() < 1e-15);
        assert!((g.global_norm().unwrap() - 1.3 * 13.0 / (13.0 + 1e-6)).abs() < 1e-14);
        assert!(g.0[1].is_none());
        // Below the threshold nothing changes (and the norm is still returned).
        let mut g = mk();
        assert!((clip_grad_norm(&mut g, 100.0).unwrap() - 13.0).abs() < 1e-14);
        assert_eq!(g.0[0].as_ref().unwrap().to_vec1::<f64>().unwrap(), vec![3.0, 4.0]);
        // At exactly max_norm = norm torch still scales by 13/(13 + 1e-6) (the 1e-6 guard).
        let mut g = mk();
        clip_grad_norm(&mut g, 13.0).unwrap();
        let c = g.0[2].as_ref().unwrap().to_vec1::<f64>().unwrap()[0];
        assert!((c - 12.0 * 13.0 / (13.0 + 1e-6)).abs() < 1e-15 && c < 12.0);
        // Invalid thresholds.
        assert!(clip_grad_norm(&mut mk(), 0.0).is_err());
        assert!(clip_grad_norm(&mut mk(), f64::NAN).is_err());
        assert!((clip_grad_norm(&mut mk(), f64::INFINITY).unwrap() - 13.0).abs() < 1e-14);
    }

    #[test]
    fn step_clipped_skips_non_finite_norms() {
        let (params, w) = one_param(&[1.0, 2.0]);
        let mut adam = Adam::new(&params, AdamConfig { lr: 0.1, ..Default::default() }).unwrap();
        for bad in [f64::NAN, f64::INFINITY] {
            let mut g = grads_of(&[bad, 1.0]);
            let out = adam.step_clipped(&params, &mut g, Some(100.0)).unwrap();
            assert!(matches!(out, StepOutcome::SkippedNonFiniteGradNorm { .. }) && !out.applied());
            let out = adam.step_clipped(&params, &mut grads_of(&[bad, 1.0]), None).unwrap();
            assert!(!out.applied());
        }
        assert_eq!(vals(&w), vec![1.0, 2.0]);
        assert_eq!(adam.step_count(), 0);
        assert!(adam.first_moment("w").is_none());
        // A finite step reports the pre-clip norm 5 and applies the clipped gradient; after
        // clipping to 0.5 the first Adam step is still ≈ −lr·sign(g) (scale invariance).
        let mut g = grads_of(&[3.0, 4.0]);
        let out = adam.step_clipped(&params, &mut g, Some(0.5)).unwrap();
        assert_eq!(out, StepOutcome::Applied { grad_norm: 5.0 });
        let m = adam.first_moment("w").unwrap().to_vec1::<f64>().unwrap();
        let f = 0.5 / (5.0 + 1e-6);
        assert!((m[0] - 0.1 * 3.0 * f).abs() < 1e-16 && (m[1] - 0.1 * 4.0 * f).abs() < 1e-16);
    }

    /// A small two-parameter model with a non-quadratic loss, gradients from autograd.
    fn model(dtype: DType) -> ParamSet {
        let mut p = ParamSet::new();
        p.create("layer.0.weight", vec![0.3, -0.7, 1.1, 0.2], &[2, 2], dtype, &Device::Cpu).unwrap();
        p.create("layer.0.bias", vec![0.05, -0.4], &[2], dtype, &Device::Cpu).unwrap();
        p
    }

    fn grads(p: &ParamSet) -> Grads {
        let wt = p.vars()[0].as_tensor();
        let b = p.vars()[1].as_tensor();
        let x = Tensor::new(&[[1.0f64, -2.0], [0.5, 3.0]], &Device::Cpu).unwrap().to_dtype(wt.dtype()).unwrap();
        let y = x.matmul(wt).unwrap().broadcast_add(b).unwrap().tanh().unwrap();
        let loss = (y.sqr().unwrap().sum_all().unwrap() + y.sum_all().unwrap()).unwrap();
        p.grads_from_store(&loss.backward().unwrap())
    }

    fn bits(p: &ParamSet) -> Vec<Vec<u64>> {
        p.vars()
            .iter()
            .map(|v| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn save_load_resume_is_bit_identical() {
        for dtype in [DType::F64, DType::F32] {
            let cfg = AdamConfig { lr: 0.03, weight_decay: 1e-2, ..Default::default() };
            let schedule = LrSchedule::WarmupCosine { warmup_steps: 3, t_max: 20 };
            let pa = model(dtype);
            let mut adam_a = Adam::new(&pa, cfg).unwrap();
            for t in 0..6 {
                adam_a.set_learning_rate(schedule.lr_at(cfg.lr, t)).unwrap();
                adam_a.step(&pa, &grads(&pa)).unwrap();
            }
            let dir = fab_core::test_utils::ScratchDir::create(&format!("optim_resume_{dtype:?}"));
            let (fp, fo) = (dir.join("params.safetensors"), dir.join("adam.safetensors"));
            pa.save(&fp).unwrap();
            adam_a.save(&fo).unwrap();
            // Resume into a fresh model and an optimiser built with a different config: the file
            // restores the hyper-parameters too.
            let pb = model(dtype);
            pb.load(&fp).unwrap();
            let mut adam_b = Adam::new(&pb, AdamConfig::default()).unwrap();
            adam_b.load(&fo).unwrap();
            assert_eq!(adam_b.config(), adam_a.config());
            assert_eq!(adam_b.step_count(), 6);
            for t in 6..12 {
                for adam in [&mut adam_a, &mut adam_b] {
                    adam.set_learning_rate(schedule.lr_at(cfg.lr, t)).unwrap();
                }
                adam_a.step(&pa, &grads(&pa)).unwrap();
                adam_b.step(&pb, &grads(&pb)).unwrap();
            }
            assert_eq!(bits(&pa), bits(&pb), "{dtype:?}");
            let mb = adam_b.second_moment("layer.0.bias").unwrap();
            assert_eq!(mb.dtype(), dtype);
            let ma = adam_a.second_moment("layer.0.bias").unwrap();
            assert_eq!(
                ma.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap(),
                mb.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
            );
            let c = Adam::from_file(&pb, &fo).unwrap();
            assert_eq!(c.step_count(), 6);
        }
    }

    #[test]
    fn load_rejects_foreign_or_broken_state() {
        let p = model(DType::F64);
        let mut adam = Adam::new(&p, AdamConfig::default()).unwrap();
        adam.step(&p, &grads(&p)).unwrap();
        let dir = fab_core::test_utils::ScratchDir::create("optim_foreign");
        let f = dir.join("adam_foreign.safetensors");
        adam.save(&f).unwrap();
        // A model with other parameter names refuses the state.
        let (other, _) = one_param(&[0.0]);
        assert!(matches!(Adam::from_file(&other, &f), Err(OptimError::Format(_))));
        // Same names, other shape.
        let mut q = ParamSet::new();
        q.create("layer.0.weight", vec![0.0; 2], &[2], DType::F64, &Device::Cpu).unwrap();
        q.create("layer.0.bias", vec![0.0; 2], &[2], DType::F64, &Device::Cpu).unwrap();
        assert!(matches!(Adam::from_file(&q, &f), Err(OptimError::Format(_))));
        // Wrong version; the optimiser is unchanged after a rejected load.
        let mut map = candle_core::safetensors::load(&f, &Device::Cpu).unwrap();
        map.insert("adam.meta".into(), Tensor::new(&[7i64, 1], &Device::Cpu).unwrap());
        candle_core::safetensors::save(&map, &f).unwrap();
        let mut fresh = Adam::new(&p, AdamConfig { lr: 0.5, ..Default::default() }).unwrap();
        assert!(fresh.load(&f).is_err());
        assert_eq!((fresh.learning_rate(), fresh.step_count()), (0.5, 0));
    }

    #[test]
    fn schedule_values_at_key_steps() {
        // ALDP: base 5e-4, W = 1000, T = 50 000. Expected values computed independently in
        // Python (math.cos) from the formulas in the `WarmupCosine` docs.
        let s = LrSchedule::WarmupCosine { warmup_steps: 1000, t_max: 50_000 };
        s.validate().unwrap();
        let base = 5e-4;
        let cases = [
            (0, 0.0),
            (1, 5e-7),
            (500, 2.5e-4),
            (999, 4.995e-4),
            (1000, 5e-4),
            (1001, 5e-4),
            (1002, 4.999990112338074e-4),
            (25_000, 2.5024739692723223e-4),
            (49_999, 4.939685708716201e-13),
            (50_000, 0.0),
        ];
        for (t, want) in cases {
            let got = s.lr_at(base, t);
            assert!((got - want).abs() <= 1e-15 * base, "t = {t}: {got} vs {want}");
        }
        assert_eq!(LrSchedule::Constant.lr_at(base, 12_345), base);
        let w = LrSchedule::LinearWarmup { warmup_steps: 4 };
        assert_eq!([0, 1, 4, 9].map(|t| w.lr_at(1.0, t)), [0.0, 0.25, 1.0, 1.0]);
        let c = LrSchedule::Cosine { t_max: 4 };
        let got = [0, 2, 4].map(|t| c.lr_at(1.0, t));
        assert!((got[0] - 1.0).abs() < 1e-16 && (got[1] - 0.5).abs() < 1e-16 && got[2].abs() < 1e-16);
        for bad in [
            LrSchedule::LinearWarmup { warmup_steps: 0 },
            LrSchedule::Cosine { t_max: 0 },
            LrSchedule::WarmupCosine { warmup_steps: 0, t_max: 10 },
            LrSchedule::WarmupCosine { warmup_steps: 9, t_max: 10 },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    /// The closed form against a step-by-step simulation of what the reference does: torch's
    /// chained `CosineAnnealingLR` (each step multiplies the current rate by
    /// (1 + cos(πe/T))/(1 + cos(π(e−1)/T)), e = its epoch counter) followed, for iterations
    /// 0..=W, by `LambdaLR`, which overwrites the rate with base·min(1, e/W). Relative tolerance
    /// 1e-10: the recursion accumulates one rounding (≈1e-16 relative) per multiplication over
    /// 50 000 iterations, ≤ ~1e-11.
    #[test]
    fn warmup_cosine_equals_chained_reference_schedulers() {
        use std::f64::consts::PI;
        let (base, w, tmax) = (5e-4, 1000u64, 50_000u64);
        let s = LrSchedule::WarmupCosine { warmup_steps: w, t_max: tmax };
        let f = |e: u64| 1.0 + (PI * e as f64 / tmax as f64).cos();
        let mut lr = 0.0; // LambdaLR's constructor sets base·min(1, 0/W) = 0
        for it in 0..tmax {
            let want = lr;
            let got = s.lr_at(base, it);
            assert!((got - want).abs() <= 1e-10 * base, "iteration {it}: closed form {got}, recursion {want}");
            // After the optimiser step of iteration `it`: cosine epoch it + 1, then warm-up.
            let e = it + 1;
            lr *= f(e) / f(e - 1);
            if it <= w {
                lr = base * (e as f64 / w as f64).min(1.0);
            }
        }
    }

    #[test]
    fn configs_serde() {
        let s: LrSchedule = serde_json::from_str(r#"{"type": "warmup_cosine", "warmup_steps": 1000, "t_max": 50000}"#).unwrap();
        assert_eq!(s, LrSchedule::WarmupCosine { warmup_steps: 1000, t_max: 50_000 });
        let s: LrSchedule = serde_json::from_str(r#"{"type": "constant"}"#).unwrap();
        assert_eq!(s, LrSchedule::Constant);
        assert!(serde_json::from_str::<LrSchedule>(r#"{"type": "cosine", "t_max": 5, "eta_min": 0.1}"#).is_err());
        let c: AdamConfig = serde_json::from_str(r#"{"lr": 5e-4, "weight_decay": 1e-5}"#).unwrap();
        assert_eq!(c, AdamConfig { lr: 5e-4, weight_decay: 1e-5, ..Default::default() });
        assert!(serde_json::from_str::<AdamConfig>(r#"{"betas": [0.9, 0.99]}"#).is_err());
        let round: AdamConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }
}
