//! Gaussian mixtures with axis-aligned components: the FAB 40-component 2-D benchmark
//! ([`Gmm::fab40`]) and any user-defined mixture ([`GmmConfig`]).
//!
//! log p(x) = logsumexp_k [ log w_k + Σ_j log N(x_j; μ_kj, σ_kj²) ], evaluated with candle ops on
//! the mixture's device; values below a floor (−1e4 by default, as in the reference) become −∞.
//! The mixture is normalised (`log_normalizer() = Some(0)`), samples exactly and has an analytic
//! gradient.
//!
//! The paper target (docs/ALGORITHMS.md, "Targets"): 40 means uniform in [−40, 40]² drawn by
//! PyTorch with seed 0 (stored in `data/gmm40_means.json`, see `data/README.md`), isotropic
//! std softplus(1) = ln(1 + e) ≈ 1.31326 rounded to float32 as in the reference
//! (1.31326162815094), uniform weights.

use candle_core::{DType, Device, Tensor};
use fab_core::{check_points, rng, ExactSample, LogDensity};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::two_paths::TwoPaths;
use crate::{Result, TargetError};

/// The FAB paper's 40 means and component std, with their provenance (`data/gmm40_means.json`).
const FAB40_JSON: &str = include_str!("../data/gmm40_means.json");

/// Default floor of the log-density: values below it are reported as −∞
/// (docs/ALGORITHMS.md, "Targets").
pub const DEFAULT_LOG_PROB_FLOOR: f64 = -1e4;

/// The reference's Monte-Carlo estimate of `E_p[f]` for the quadratic test function
/// (docs/ALGORITHMS.md, "Targets") on the FAB 40-component mixture (1e7 float32 samples).
/// Papers' "bias" numbers are relative to it.
pub const FAB40_QUADRATIC_MC_EXPECTATION: f64 = 1777.66845703125;

/// Standard deviations of the mixture components, in one of three TOML forms.
///
/// ```toml
/// scales = 1.3              # one std for every component and axis
/// scales = [1.0, 2.0]       # one std per component (isotropic)
/// scales = [[1.0, 0.5], [2.0, 2.0]]   # per component and axis
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GmmScales {
    /// The same std for every component and axis.
    Shared(f64),
    /// One isotropic std per component.
    PerComponent(Vec<f64>),
    /// One std per component and axis (`[K][dim]`).
    PerAxis(Vec<Vec<f64>>),
}

/// A user-defined Gaussian mixture with axis-aligned components, as read from TOML.
///
/// ```toml
/// dim = 2
/// means = [[0.0, 0.0], [4.0, 4.0]]
/// scales = [1.0, 0.5]
/// weights = [0.25, 0.75]   # optional: uniform if absent; normalised to sum to one
/// ```
///
/// [`validate`](Self::validate) checks shapes (every mean and scale row has `dim` entries, one
/// scale and weight per component), positivity and finiteness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmmConfig {
    /// Dimension of the space.
    pub dim: usize,
    /// Component means, `[K][dim]`.
    pub means: Vec<Vec<f64>>,
    /// Component standard deviations (see [`GmmScales`]).
    pub scales: GmmScales,
    /// Positive component weights (normalised); uniform if absent.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Log-densities below this value are reported as −∞ (the reference's −1e4). Use
    /// `-inf` to disable.
    #[serde(default = "default_floor")]
    pub log_prob_floor: f64,
}

fn default_floor() -> f64 {
    DEFAULT_LOG_PROB_FLOOR
}

#[derive(Deserialize)]
struct Fab40File {
    component_std: f64,
    means: Vec<Vec<f64>>,
}

impl GmmConfig {
    /// The FAB paper's 40-component 2-D mixture (docs/ALGORITHMS.md, "Targets").
    pub fn fab40() -> Self {
        // The embedded file is part of the crate and checked by the tests; it cannot be malformed
        // in a build that passed them.
        let f: Fab40File = serde_json::from_str(FAB40_JSON).unwrap_or_else(|e| unreachable!("embedded gmm40_means.json is malformed: {e}"));
        // The reference computes softplus(1) in float32 when it builds the mixture and only then
        // casts the target to float64, so its σ is the float32 rounding of ln(1 + e):
        // 1.31326162815094 (not 1.3132616875182228). With it, log p((0,0)) and log p(μ₀)
        // reproduce the reference's values (docs/ALGORITHMS.md, "Targets") to ~1e-14; with the
        // exact σ they are off by ~1e-6.
        let std = f64::from(f.component_std as f32);
        // The means are float32 values printed exactly; serde_json's default float parser can
        // be one f64 ulp off, which rounding through f32 undoes exactly.
        let means = f.means.iter().map(|r| r.iter().map(|v| f64::from(*v as f32)).collect()).collect();
        Self { dim: 2, means, scales: GmmScales::Shared(std), weights: None, log_prob_floor: DEFAULT_LOG_PROB_FLOOR }
    }

    /// The 25-component 2-D mixture of the diffusion-sampler benchmarks ("25GMM"): means on the
    /// grid {−10, −5, 0, 5, 10}², variance 0.3 in every direction, equal weights, normalised
    /// (log Z = 0; no log-density floor). `docs/ALGORITHMS.md`, "Targets".
    pub fn grid25() -> Self {
        let coords = [-10.0, -5.0, 0.0, 5.0, 10.0];
        let means = coords.iter().flat_map(|&a| coords.iter().map(move |&b| vec![a, b])).collect();
        Self { dim: 2, means, scales: GmmScales::Shared(0.3f64.sqrt()), weights: None, log_prob_floor: f64::NEG_INFINITY }
    }

    /// Parses a TOML mixture description and validates it.
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] for malformed TOML, unknown keys or an inconsistent mixture.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(s).map_err(|e| TargetError::InvalidConfig(format!("GMM config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of components K.
    pub fn n_components(&self) -> usize {
        self.means.len()
    }

    /// Checks shapes, positivity and finiteness.
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TargetError::InvalidConfig(format!("GMM: {m}")));
        if self.dim == 0 {
            return bad("dim must be at least 1".into());
        }
        let k = self.means.len();
        if k == 0 {
            return bad("means must list at least one component".into());
        }
        for (i, m) in self.means.iter().enumerate() {
            if m.len() != self.dim {
                return bad(format!("means[{i}] has {} entries but dim = {}", m.len(), self.dim));
            }
            if m.iter().any(|v| !v.is_finite()) {
                return bad(format!("means[{i}] has a non-finite entry"));
            }
        }
        let check_scale = |s: f64, at: String| -> Result<()> {
            if !(s.is_finite() && s > 0.0) {
                return bad(format!("scales{at} must be finite and > 0, got {s}"));
            }
            Ok(())
        };
        match &self.scales {
            GmmScales::Shared(s) => check_scale(*s, String::new())?,
            GmmScales::PerComponent(v) => {
                if v.len() != k {
                    return bad(format!("scales has {} entries but there are {k} means", v.len()));
                }
                for (i, s) in v.iter().enumerate() {
                    check_scale(*s, format!("[{i}]"))?;
                }
            }
            GmmScales::PerAxis(v) => {
                if v.len() != k {
                    return bad(format!("scales has {} rows but there are {k} means", v.len()));
                }
                for (i, row) in v.iter().enumerate() {
                    if row.len() != self.dim {
                        return bad(format!("scales[{i}] has {} entries but dim = {}", row.len(), self.dim));
                    }
                    for (j, s) in row.iter().enumerate() {
                        check_scale(*s, format!("[{i}][{j}]"))?;
                    }
                }
            }
        }
        if let Some(w) = &self.weights {
            if w.len() != k {
                return bad(format!("weights has {} entries but there are {k} means", w.len()));
            }
            for (i, v) in w.iter().enumerate() {
                if !(v.is_finite() && *v > 0.0) {
                    return bad(format!("weights[{i}] must be finite and > 0, got {v}"));
                }
            }
        }
        if self.log_prob_floor.is_nan() || self.log_prob_floor == f64::INFINITY {
            return bad(format!("log_prob_floor must be a number < +inf, got {}", self.log_prob_floor));
        }
        Ok(())
    }

    /// Per-component, per-axis standard deviations `[K * dim]` (row-major).
    fn std_matrix(&self) -> Vec<f64> {
        let k = self.means.len();
        match &self.scales {
            GmmScales::Shared(s) => vec![*s; k * self.dim],
            GmmScales::PerComponent(v) => v.iter().flat_map(|s| std::iter::repeat_n(*s, self.dim)).collect(),
            GmmScales::PerAxis(v) => v.iter().flatten().copied().collect(),
        }
    }
}

/// A Gaussian mixture with axis-aligned components, evaluated on a fixed dtype and device.
///
/// Built with [`Gmm::fab40`] (the paper target) or [`Gmm::from_config`].
#[derive(Debug, Clone)]
pub struct Gmm {
    dim: usize,
    means: Vec<f64>,
    stds: Vec<f64>,
    weights: Vec<f64>,
    /// Cumulative weights for sampling.
    cum_weights: Vec<f64>,
    log_prob_floor: f64,
    /// `[1, K, d]`
    means_t: Tensor,
    /// `[1, K, d]`, 1/σ²
    inv_var_t: Tensor,
    /// `[1, K]`, log w_k − Σ_j log σ_kj − d/2 · log 2π
    log_coef_t: Tensor,
    /// Host copies of the two above.
    inv_var: Vec<f64>,
    log_coef: Vec<f64>,
    dtype: DType,
    device: Device,
}

impl Gmm {
    /// The FAB 40-component 2-D mixture (docs/ALGORITHMS.md, "Targets") in `dtype` on `device`.
    ///
    /// # Errors
    /// Only tensor allocation failures.
    pub fn fab40(dtype: DType, device: &Device) -> Result<Self> {
        Self::from_config(&GmmConfig::fab40(), dtype, device)
    }

    /// A mixture from a validated configuration.
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] if `config.validate()` fails; tensor allocation failures.
    pub fn from_config(config: &GmmConfig, dtype: DType, device: &Device) -> Result<Self> {
        config.validate()?;
        if !dtype.is_float() {
            return Err(TargetError::InvalidConfig(format!("GMM: dtype must be a float type, got {dtype:?}")));
        }
        let (k, d) = (config.means.len(), config.dim);
        let means: Vec<f64> = config.means.iter().flatten().copied().collect();
        let stds = config.std_matrix();
        let raw_w: Vec<f64> = config.weights.clone().unwrap_or_else(|| vec![1.0; k]);
        let total: f64 = raw_w.iter().sum();
        let weights: Vec<f64> = raw_w.iter().map(|w| w / total).collect();
        let mut acc = 0.0;
        let cum_weights: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let log_coef: Vec<f64> = (0..k)
            .map(|c| weights[c].ln() - stds[c * d..(c + 1) * d].iter().map(|s| s.ln()).sum::<f64>() - d as f64 * half_log_2pi)
            .collect();
        let inv_var: Vec<f64> = stds.iter().map(|s| 1.0 / (s * s)).collect();
        let up = |v: &[f64], shape: &[usize]| -> Result<Tensor> {
            Ok(Tensor::from_slice(v, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
        };
        Ok(Self {
            dim: d,
            means_t: up(&means, &[1, k, d])?,
            inv_var_t: up(&inv_var, &[1, k, d])?,
            log_coef_t: up(&log_coef, &[1, k])?,
            inv_var,
            log_coef,
            means,
            stds,
            weights,
            cum_weights,
            log_prob_floor: config.log_prob_floor,
            dtype,
            device: device.clone(),
        })
    }

    /// Number of components K.
    pub fn n_components(&self) -> usize {
        self.weights.len()
    }

    /// Mean of component `k` (`dim` entries). Panics if `k >= n_components()`.
    pub fn mean(&self, k: usize) -> &[f64] {
        &self.means[k * self.dim..(k + 1) * self.dim]
    }

    /// All means, `[K * dim]` row-major.
    pub fn means(&self) -> &[f64] {
        &self.means
    }

    /// All per-axis standard deviations, `[K * dim]` row-major.
    pub fn stds(&self) -> &[f64] {
        &self.stds
    }

    /// Normalised component weights, `[K]`.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The dtype of samples and of the internal tensors.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of samples and of the internal tensors.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Per-component log-densities (including log weights) `[n, K]` and the scaled differences
    /// (x − μ_k)/σ_k² `[n, K, d]`.
    fn components(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_points(x, self.dim)?;
        let x = x.to_dtype(self.dtype)?;
        let diff = x.unsqueeze(1)?.broadcast_sub(&self.means_t)?;
        let scaled = diff.broadcast_mul(&self.inv_var_t)?;
        let quad = (diff * &scaled)?.sum(2)?;
        let comp = (quad * -0.5)?.broadcast_add(&self.log_coef_t)?;
        Ok((comp, scaled))
    }

    /// log-sum-exp over components and the floor mask (1 where the value is kept).
    fn mixture(&self, comp: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let max = comp.max_keepdim(1)?;
        let lse = (comp.broadcast_sub(&max)?.exp()?.sum(1)?.log()? + max.squeeze(1)?)?;
        // NaN compares false, so NaN (non-finite input) becomes -inf as well.
        let keep = lse.ge(self.log_prob_floor)?;
        let out = keep.where_cond(&lse, &neg_inf_like(&lse)?)?;
        Ok((out, lse, keep))
    }

    /// Index of the most responsible component (largest log w_k + log N_k(x)) for every row,
    /// `None` for rows with non-finite coordinates. Used for per-mode evaluation.
    ///
    /// # Errors
    /// Shape errors.
    pub fn component_assignment(&self, x: &Tensor) -> Result<Vec<Option<usize>>> {
        let (comp, _) = self.components(x)?;
        let idx = comp.argmax(1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let xs = fab_core::to_f64_vec(x)?;
        Ok(idx
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let row = &xs[i * self.dim..(i + 1) * self.dim];
                row.iter().all(|v| v.is_finite()).then_some(*k as usize)
            })
            .collect())
    }

    /// Draws `n` exact samples together with the index of the component each came from.
    ///
    /// Randomness, in order: `n` uniforms choosing the components, then `n · dim` standard normals
    /// (row-major).
    ///
    /// # Errors
    /// Tensor allocation failures.
    pub fn sample_with_components(&self, n: usize, rng: &mut dyn RngCore) -> Result<(Tensor, Vec<usize>)> {
        let k_last = self.n_components() - 1;
        let comps: Vec<usize> = (0..n)
            .map(|_| {
                let u: f64 = rng.random();
                self.cum_weights.partition_point(|c| *c <= u).min(k_last)
            })
            .collect();
        let eps = rng::normal_vec(rng, n * self.dim);
        let d = self.dim;
        let v: Vec<f64> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (r, j) = (i / d, i % d);
                let c = comps[r];
                self.means[c * d + j] + self.stds[c * d + j] * e
            })
            .collect();
        let x = Tensor::from_vec(v, (n, d), &Device::Cpu)?.to_dtype(self.dtype)?.to_device(&self.device)?;
        Ok((x, comps))
    }

    /// The exact expectation `E_p[f]` of a quadratic test function under this mixture:
    /// Σ_k w_k [ (μ_k+s)ᵀA(μ_k+s) + Σ_j A_jj σ_kj² + bᵀ(μ_k+s) ].
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] if `f`'s dimension differs from the mixture's.
    pub fn quadratic_expectation(&self, f: &QuadraticFunction) -> Result<f64> {
        let d = self.dim;
        f.check(d)?;
        let mut total = 0.0;
        for (k, w) in self.weights.iter().enumerate() {
            let m: Vec<f64> = (0..d).map(|j| self.means[k * d + j] + f.shift[j]).collect();
            let mut v = 0.0;
            for i in 0..d {
                for j in 0..d {
                    v += m[i] * f.a[i][j] * m[j];
                }
                v += f.a[i][i] * self.stds[k * d + i].powi(2) + f.b[i] * m[i];
            }
            total += w * v;
        }
        Ok(total)
    }
}

pub(crate) fn neg_inf_like(t: &Tensor) -> candle_core::Result<Tensor> {
    t.zeros_like()? - f64::INFINITY
}

impl TwoPaths for Gmm {
    fn point_dim(&self) -> usize {
        self.dim
    }

    /// Value (and gradient) with candle ops, for any device.
    fn eval_candle(&self, x: &Tensor, grad: bool) -> Result<(Tensor, Option<Tensor>)> {
        let (comp, scaled) = self.components(x)?;
        let (out, lse, keep) = self.mixture(&comp)?;
        let out = out.to_dtype(x.dtype())?;
        if !grad {
            return Ok((out, None));
        }
        let resp = comp.broadcast_sub(&lse.unsqueeze(1)?)?.exp()?;
        let g = resp.unsqueeze(2)?.broadcast_mul(&scaled)?.sum(1)?.neg()?;
        let keep2 = keep.unsqueeze(1)?.broadcast_as(g.shape())?.contiguous()?;
        let g = keep2.where_cond(&g, &g.zeros_like()?)?;
        Ok((out, Some(g.to_dtype(x.dtype())?)))
    }

    /// The same on the host in f64, one pass per row (the CPU path; avoids the `[n, K, d]`
    /// intermediates of the candle path).
    fn host_rows(&self, xs: &[f64], n: usize, grad: bool) -> (Vec<f64>, Vec<f64>) {
        let (d, k) = (self.dim, self.n_components());
        let mut lp = vec![f64::NEG_INFINITY; n];
        let mut g = if grad { vec![0.0f64; n * d] } else { Vec::new() };
        let mut comp = vec![0.0f64; k];
        for r in 0..n {
            let row = &xs[r * d..(r + 1) * d];
            for (c, out) in comp.iter_mut().enumerate() {
                let (mu, iv) = (&self.means[c * d..(c + 1) * d], &self.inv_var[c * d..(c + 1) * d]);
                let q: f64 = row.iter().zip(mu).zip(iv).map(|((x, m), v)| (x - m) * (x - m) * v).sum();
                *out = self.log_coef[c] - 0.5 * q;
            }
            let m = comp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            // Components more than 60 nats below the best add < 1e-26 relative (far below f64
            // rounding) and are skipped, which saves most exp calls for separated modes.
            let lse = m + comp.iter().filter(|c| **c > m - 60.0).map(|c| (c - m).exp()).sum::<f64>().ln();
            // Non-finite rows (NaN) become −∞ with zero gradient, like values below the floor.
            if lse.is_nan() || lse < self.log_prob_floor {
                continue;
            }
            lp[r] = lse;
            if grad {
                let gr = &mut g[r * d..(r + 1) * d];
                for (c, lc) in comp.iter().enumerate().filter(|(_, lc)| **lc > m - 60.0) {
                    let resp = (lc - lse).exp();
                    for j in 0..d {
                        gr[j] -= resp * (row[j] - self.means[c * d + j]) * self.inv_var[c * d + j];
                    }
                }
            }
        }
        (lp, g)
    }
}

impl LogDensity for Gmm {
    fn dim(&self) -> usize {
        self.dim
    }

    /// log p(x), `[n]`; −∞ below the floor and for non-finite rows. On the CPU it is computed
    /// in f64 on the host, elsewhere with candle ops in the mixture's dtype.
    fn log_prob(&self, x: &Tensor) -> fab_core::Result<Tensor> {
        Ok(self.eval(x, false)?.0)
    }

    /// Analytic value and gradient ∇log p = −Σ_k r_k(x) (x − μ_k)/σ_k², with r the component
    /// responsibilities. Where the value is −∞ (below the floor, non-finite rows) the gradient is
    /// 0, as for the reference's masked autograd.
    fn log_prob_and_grad(&self, x: &Tensor) -> fab_core::Result<(Tensor, Tensor)> {
        let (lp, g) = self.eval(x, true)?;
        let g = g.ok_or_else(|| fab_core::Error::invalid("GMM: gradient missing"))?;
        Ok((lp, g))
    }

    fn log_normalizer(&self) -> Option<f64> {
        Some(0.0)
    }

    /// Both paths exist: f64 on the host for CPU points, candle ops on any other device.
    fn device_agnostic(&self) -> bool {
        true
    }
}

impl ExactSample for Gmm {
    /// Exact samples: k ~ Categorical(w), x = μ_k + σ_k ⊙ ε (see
    /// [`Gmm::sample_with_components`] for the order of random draws).
    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> fab_core::Result<Tensor> {
        Ok(self.sample_with_components(n, rng)?.0)
    }
}

/// The quadratic test function f(x) = (x+s)ᵀA(x+s) + bᵀ(x+s) (docs/ALGORITHMS.md, "Targets").
///
/// Only the symmetric part of A matters; it is kept as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuadraticFunction {
    /// The shift s, `[d]`.
    pub shift: Vec<f64>,
    /// The matrix A, `[d][d]` (not symmetrised).
    pub a: Vec<Vec<f64>>,
    /// The linear term b, `[d]`.
    pub b: Vec<f64>,
}

impl QuadraticFunction {
    /// The reference's function for d = 2 (PyTorch seed 0, float32 values;
    /// docs/ALGORITHMS.md, "Targets").
    pub fn fab_2d() -> Self {
        Self {
            shift: vec![3.0819921493530273, -0.586857795715332],
            a: vec![vec![0.6148456335067749, 1.2681573629379272], vec![0.9801868200302124, 1.7928894758224487]],
            b: vec![0.455627977848053, 0.6323062777519226],
        }
    }

    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.shift.len()
    }

    fn check(&self, d: usize) -> Result<()> {
        let ok = self.shift.len() == d && self.b.len() == d && self.a.len() == d && self.a.iter().all(|r| r.len() == d);
        if ok {
            Ok(())
        } else {
            Err(TargetError::InvalidConfig(format!("quadratic function must have shift [d], A [d][d], b [d] with d = {d}")))
        }
    }

    /// f at one point.
    ///
    /// # Errors
    /// [`TargetError::InvalidConfig`] if the function's parts are inconsistent with `x.len()`.
    pub fn eval_point(&self, x: &[f64]) -> Result<f64> {
        let d = x.len();
        self.check(d)?;
        let m: Vec<f64> = (0..d).map(|j| x[j] + self.shift[j]).collect();
        let mut v = 0.0;
        for i in 0..d {
            for j in 0..d {
                v += m[i] * self.a[i][j] * m[j];
            }
            v += self.b[i] * m[i];
        }
        Ok(v)
    }

    /// f at every row of `x: [n, d]` (host computation in f64), `[n]`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn eval(&self, x: &Tensor) -> Result<Vec<f64>> {
        let d = self.dim();
        let n = check_points(x, d)?;
        let xs = fab_core::to_f64_vec(x)?;
        (0..n).map(|i| self.eval_point(&xs[i * d..(i + 1) * d])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_candle_paths_agree() {
        let g = Gmm::fab40(DType::F64, &Device::Cpu).unwrap();
        let mut rng = fab_core::seeded_rng(4, 0);
        let mut v: Vec<f64> = rng::normal_vec(&mut rng, 2 * 60).iter().map(|z| 30.0 * z).collect();
        v[0] = f64::NAN;
        v[3] = f64::INFINITY;
        v[4] = 1e3;
        let x = Tensor::from_vec(v, (60, 2), &Device::Cpu).unwrap();
        let (a, ga) = g.eval_host(&x, true).unwrap();
        let (b, gb) = g.eval_candle(&x, true).unwrap();
        let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
        assert!(a[..3].iter().all(|v| *v == f64::NEG_INFINITY));
        for (u, w) in a.iter().zip(&b) {
            assert!(u == w || (u - w).abs() < 1e-10 * (1.0 + w.abs()), "{u} vs {w}");
        }
        let ga = fab_core::to_f64_vec(&ga.unwrap()).unwrap();
        let gb = fab_core::to_f64_vec(&gb.unwrap()).unwrap();
        for (u, w) in ga.iter().zip(&gb) {
            assert!((u - w).abs() < 1e-10 * (1.0 + w.abs()), "{u} vs {w}");
        }
    }

    #[test]
    fn floor_and_shapes() {
        let g = Gmm::fab40(DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::new(&[[1000.0f64, 1000.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let lp = g.log_prob(&x).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(lp[0], f64::NEG_INFINITY);
        assert!(lp[1].is_finite());
        let bad = Tensor::new(&[[1.0f64, 2.0, 3.0]], &Device::Cpu).unwrap();
        assert!(g.log_prob(&bad).is_err());
    }
}
