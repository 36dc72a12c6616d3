//! Fixtures with known answers for the tests of every fab-rs crate (feature `test-utils`):
//! an analytic diagonal Gaussian, finite-difference gradients and Jacobians, and the
//! Kolmogorov–Smirnov statistic; and scratch directories, removed after a passing test.

use candle_core::{DType, Device, Tensor};
use rand::RngCore;

use crate::density::check_points;
use crate::{rng, ExactSample, LogDensity, Proposal, Result};

/// An axis-aligned Gaussian N(mean, diag(std²)), optionally unnormalised by a constant:
/// log p̃(x) = log N(x; mean, std) + `log_z`, so its normalising constant is exp(`log_z`).
#[derive(Debug, Clone)]
pub struct DiagGaussian {
    mean: Vec<f64>,
    std: Vec<f64>,
    log_z: f64,
    dtype: DType,
    device: Device,
}

impl DiagGaussian {
    /// A normalised Gaussian in f64 on the CPU.
    pub fn new(mean: Vec<f64>, std: Vec<f64>) -> Self {
        assert_eq!(mean.len(), std.len());
        assert!(std.iter().all(|s| *s > 0.0));
        Self { mean, std, log_z: 0.0, dtype: DType::F64, device: Device::Cpu }
    }
    /// The standard normal in `dim` dimensions.
    pub fn standard(dim: usize) -> Self {
        Self::new(vec![0.0; dim], vec![1.0; dim])
    }
    /// Multiplies the density by exp(`log_z`) (an unnormalised target with known log Z).
    pub fn with_log_z(mut self, log_z: f64) -> Self {
        self.log_z = log_z;
        self
    }
    /// Samples in `dtype` instead of f64.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Mean vector.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }
    /// Standard deviations.
    pub fn std(&self) -> &[f64] {
        &self.std
    }
    fn row(&self, v: &[f64], x: &Tensor) -> Result<Tensor> {
        Ok(Tensor::from_slice(v, (1, v.len()), &Device::Cpu)?.to_dtype(x.dtype())?.to_device(x.device())?)
    }
}

impl LogDensity for DiagGaussian {
    fn dim(&self) -> usize {
        self.mean.len()
    }
    fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        check_points(x, self.dim())?;
        let mu = self.row(&self.mean, x)?;
        let sd = self.row(&self.std, x)?;
        let zz = x.broadcast_sub(&mu)?.broadcast_div(&sd)?.sqr()?.sum(1)?;
        let c: f64 =
            self.log_z - self.std.iter().map(|s| s.ln()).sum::<f64>() - 0.5 * self.dim() as f64 * (2.0 * std::f64::consts::PI).ln();
        Ok(((zz * -0.5)? + c)?)
    }
    fn log_prob_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let lp = self.log_prob(x)?;
        let mu = self.row(&self.mean, x)?;
        let var: Vec<f64> = self.std.iter().map(|s| s * s).collect();
        let var = self.row(&var, x)?;
        let g = x.broadcast_sub(&mu)?.broadcast_div(&var)?.neg()?;
        Ok((lp, g))
    }
    fn log_normalizer(&self) -> Option<f64> {
        Some(self.log_z)
    }
}

impl ExactSample for DiagGaussian {
    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Result<Tensor> {
        let d = self.dim();
        let eps = rng::normal_vec(rng, n * d);
        let v: Vec<f64> = eps.iter().enumerate().map(|(i, e)| self.mean[i % d] + self.std[i % d] * e).collect();
        Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?.to_dtype(self.dtype)?.to_device(&self.device)?)
    }
}

impl Proposal for DiagGaussian {
    fn sample_and_log_prob(&self, n: usize, rng: &mut dyn RngCore) -> Result<(Tensor, Tensor)> {
        let x = self.sample(n, rng)?;
        let lp = (self.log_prob(&x)? - self.log_z)?;
        Ok((x, lp))
    }
}

/// Central finite-difference gradient of the *sum* of log-densities at the rows of `x`
/// (`[n, d]` f64, row-major), with step `eps`. Rows are independent, so this is each row's
/// gradient.
pub fn finite_difference_grad(density: &dyn LogDensity, x: &[f64], n: usize, eps: f64) -> Vec<f64> {
    let d = density.dim();
    let eval = |v: &[f64]| -> Vec<f64> {
        let t = Tensor::from_slice(v, (n, d), &Device::Cpu).expect("tensor");
        density.log_prob(&t).expect("log_prob").to_vec1::<f64>().expect("f64")
    };
    let mut g = vec![0.0; n * d];
    for j in 0..d {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        for i in 0..n {
            xp[i * d + j] += eps;
            xm[i * d + j] -= eps;
        }
        let (fp, fm) = (eval(&xp), eval(&xm));
        for i in 0..n {
            g[i * d + j] = (fp[i] - fm[i]) / (2.0 * eps);
        }
    }
    g
}

/// Central finite-difference Jacobian `J[i][j] = ∂fᵢ/∂xⱼ` of `f: ℝᵈ → ℝᵐ` at `x`.
pub fn numerical_jacobian(f: &dyn Fn(&[f64]) -> Vec<f64>, x: &[f64], eps: f64) -> Vec<Vec<f64>> {
    let d = x.len();
    let m = f(x).len();
    let mut jac = vec![vec![0.0; d]; m];
    for j in 0..d {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[j] += eps;
        xm[j] -= eps;
        let (fp, fm) = (f(&xp), f(&xm));
        for i in 0..m {
            jac[i][j] = (fp[i] - fm[i]) / (2.0 * eps);
        }
    }
    jac
}

/// log|det| of a Jacobian given as rows.
pub fn log_abs_det_rows(j: &[Vec<f64>]) -> f64 {
    let n = j.len();
    let flat: Vec<f64> = j.iter().flatten().copied().collect();
    crate::linalg::log_abs_det(&flat, n)
}

/// Standard normal CDF Φ(x) (Abramowitz–Stegun 7.1.26 via erfc, |error| < 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erfc = poly * (-z * z).exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// One-sample Kolmogorov–Smirnov statistic sup |F_n − F| of `samples` against `cdf`.
pub fn ks_statistic(samples: &[f64], cdf: &dyn Fn(f64) -> f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    s.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

/// Two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b|.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d
}

/// The KS critical value at level 0.001 for sample size `n` (asymptotic 1.95/√n).
pub fn ks_critical_001(n: usize) -> f64 {
    1.95 / (n as f64).sqrt()
}

/// The first CUDA device, or `None` after printing why a device test is skipped (to the real
/// standard error: the test harness captures only `print!`/`eprint!`). With
/// `FAB_REQUIRE_CUDA=1` a missing device fails the test instead.
pub fn cuda_device_or_skip(test: &str) -> Option<candle_core::Device> {
    use std::io::Write;
    match candle_core::Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            let why = e.to_string().lines().next().unwrap_or("").to_string();
            assert!(std::env::var("FAB_REQUIRE_CUDA").as_deref() != Ok("1"), "FAB_REQUIRE_CUDA=1 but no CUDA device: {why}");
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no CUDA device ({why})");
            None
        }
    }
}

/// A scratch path for one test, `<system temp dir>/fab_<name>_<process id>`, deleted with
/// everything under it when the value is dropped, so passing tests leave nothing in the
/// temporary directory; when the test fails (the drop runs while its panic unwinds) the files
/// are kept for inspection and their path is printed. Whatever a killed earlier process left
/// at that path is removed first. [`ScratchDir::new`] does not create the directory, since run
/// drivers create their own output directory; [`ScratchDir::create`] does. Dereferences to the
/// [`Path`](std::path::Path).
#[derive(Debug)]
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    /// The path, made free: nothing exists at it afterwards.
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("fab_{name}_{}", std::process::id()));
        remove_any(&path);
        Self(path)
    }

    /// As [`ScratchDir::new`], with the (empty) directory created.
    pub fn create(name: &str) -> Self {
        let dir = Self::new(name);
        std::fs::create_dir_all(&dir.0).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.0.display()));
        dir
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for ScratchDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl From<&ScratchDir> for std::path::PathBuf {
    fn from(dir: &ScratchDir) -> Self {
        dir.0.clone()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "the test failed; its files are kept in {}", self.0.display());
        } else {
            remove_any(&self.0);
        }
    }
}

/// Removes whatever is at `path` (a directory tree or a file), ignoring what is not there.
fn remove_any(path: &std::path::Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    #[test]
    fn scratch_dir_is_removed_on_drop_even_with_files_in_it() {
        let dir = ScratchDir::create("scratch_self_test");
        let path = dir.to_path_buf();
        std::fs::create_dir_all(path.join("sub")).unwrap();
        std::fs::write(path.join("sub").join("f.txt"), "x").unwrap();
        drop(dir);
        assert!(!path.exists());
        // A leftover of a killed run is cleared by the next one.
        std::fs::create_dir_all(path.join("stale")).unwrap();
        let again = ScratchDir::new("scratch_self_test");
        assert!(!again.exists());
    }

    #[test]
    fn gaussian_grad_matches_finite_differences() {
        let g = DiagGaussian::new(vec![1.0, -2.0], vec![0.5, 2.0]).with_log_z(3.0);
        let x = [0.3, 0.1, -1.0, 4.0];
        let t = Tensor::from_slice(&x, (2, 2), &Device::Cpu).unwrap();
        let (_, grad) = g.log_prob_and_grad(&t).unwrap();
        let fd = finite_difference_grad(&g, &x, 2, 1e-5);
        for (a, b) in grad.flatten_all().unwrap().to_vec1::<f64>().unwrap().iter().zip(&fd) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        // The autodiff default agrees with the analytic override.
        let (_, ad) = crate::density::autodiff_log_prob_and_grad(&g, &t).unwrap();
        assert_eq!(ad.flatten_all().unwrap().to_vec1::<f64>().unwrap(), grad.flatten_all().unwrap().to_vec1::<f64>().unwrap());
    }

    #[test]
    fn gaussian_samples_pass_ks() {
        let g = DiagGaussian::new(vec![1.0], vec![2.0]);
        let mut rng = seeded_rng(0, 0);
        let x = g.sample(4000, &mut rng).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let d = ks_statistic(&x, &|v| normal_cdf((v - 1.0) / 2.0));
        // α = 0.001: a correct sampler fails this 1 time in 1000 (fixed seed: deterministic).
        assert!(d < ks_critical_001(x.len()), "KS {d}");
    }

    #[test]
    fn normal_cdf_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959963985) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.0) - 0.158655254).abs() < 1e-6);
    }
}
