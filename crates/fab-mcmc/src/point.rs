//! Cached points of an annealed density log f = c_q·log q + c_p·log p.
//!
//! AIS moves between densities that differ only in their coefficients, so a point caches the two
//! *parts* (log q, log p and, for gradient-based kernels, their gradients) instead of log f. When
//! the level changes, log f and ∇log f are recombined from the cache with the new [`Coeffs`] and
//! nothing is re-evaluated. A plain target is the special case c_q = 0, c_p = 1
//! ([`TargetOnly`]).

use candle_core::{DType, Tensor};
use fab_core::{check_points, LogDensity};
use serde::{Deserialize, Serialize};

use crate::{McmcError, Result};

/// A batch of points (one chain per row) with cached log-density parts.
///
/// # Shapes
/// `x: [n, d]`, `log_q`, `log_p: [n]`, gradients `[n, d]`, all in the same dtype and device.
#[derive(Debug, Clone)]
pub struct Point {
    /// Positions.
    pub x: Tensor,
    /// log q(x) (the base / flow part; zeros for [`TargetOnly`]).
    pub log_q: Tensor,
    /// log p(x) (the target part).
    pub log_p: Tensor,
    /// ∇ₓ log q(x), present when evaluated with gradients.
    pub grad_log_q: Option<Tensor>,
    /// ∇ₓ log p(x), present when evaluated with gradients.
    pub grad_log_p: Option<Tensor>,
}

impl Point {
    /// Number of chains (rows).
    pub fn len(&self) -> usize {
        self.x.dims().first().copied().unwrap_or(0)
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether both gradients are cached.
    pub fn has_grad(&self) -> bool {
        self.grad_log_q.is_some() && self.grad_log_p.is_some()
    }

    /// Rowwise choice: rows where `mask` (u8 `[n]`) is non-zero come from `self`, the others from
    /// `other`. Gradients are kept only if both points have them.
    ///
    /// # Errors
    /// Shape mismatches.
    pub fn select(&self, mask: &Tensor, other: &Point) -> Result<Point> {
        let m_row = mask;
        let m_full = mask.unsqueeze(1)?.broadcast_as(self.x.shape())?.contiguous()?;
        let pick = |a: &Option<Tensor>, b: &Option<Tensor>| -> Result<Option<Tensor>> {
            Ok(match (a, b) {
                (Some(a), Some(b)) => Some(m_full.where_cond(a, b)?),
                _ => None,
            })
        };
        Ok(Point {
            x: m_full.where_cond(&self.x, &other.x)?,
            log_q: m_row.where_cond(&self.log_q, &other.log_q)?,
            log_p: m_row.where_cond(&self.log_p, &other.log_p)?,
            grad_log_q: pick(&self.grad_log_q, &other.grad_log_q)?,
            grad_log_p: pick(&self.grad_log_p, &other.grad_log_p)?,
        })
    }

    /// The rows listed in `idx` (u32 `[m]`), in that order.
    ///
    /// # Errors
    /// Out-of-range indices or a wrong index dtype.
    pub fn index_select(&self, idx: &Tensor) -> Result<Point> {
        let sel = |t: &Tensor| t.index_select(idx, 0);
        Ok(Point {
            x: sel(&self.x)?,
            log_q: sel(&self.log_q)?,
            log_p: sel(&self.log_p)?,
            grad_log_q: self.grad_log_q.as_ref().map(sel).transpose()?,
            grad_log_p: self.grad_log_p.as_ref().map(sel).transpose()?,
        })
    }

    /// A copy with every tensor detached from any autodiff graph.
    pub fn detach(&self) -> Point {
        Point {
            x: self.x.detach(),
            log_q: self.log_q.detach(),
            log_p: self.log_p.detach(),
            grad_log_q: self.grad_log_q.as_ref().map(Tensor::detach),
            grad_log_p: self.grad_log_p.as_ref().map(Tensor::detach),
        }
    }
}

/// Coefficients of an annealed log-density log f = `q`·log q + `p`·log p.
///
/// A zero coefficient drops its term entirely (so 0·(−∞) never produces NaN).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coeffs {
    /// Coefficient of log q.
    pub q: f64,
    /// Coefficient of log p.
    pub p: f64,
}

impl Coeffs {
    /// The plain target: log f = log p.
    pub const TARGET: Coeffs = Coeffs { q: 0.0, p: 1.0 };

    /// AIS toward g = p: log f_β = (1−β)·log q + β·log p
    /// (docs/ALGORITHMS.md, "Annealed importance sampling").
    pub fn p_target(beta: f64) -> Self {
        Self { q: 1.0 - beta, p: beta }
    }

    /// AIS toward g = p^α q^{1−α}: log f_β = [(1−β) + β(1−α)]·log q + βα·log p
    /// (docs/ALGORITHMS.md, "Annealed importance sampling").
    ///
    /// The gradient is combined with the same coefficients, which is the exact gradient for any
    /// α (the reference hard-codes α = 2 in its gradient; identical for α = 2).
    pub fn alpha_target(beta: f64, alpha: f64) -> Self {
        Self { q: (1.0 - beta) + beta * (1.0 - alpha), p: beta * alpha }
    }

    /// c_q·a + c_p·b, skipping zero-coefficient terms (whose tensor may then be absent).
    fn combine(&self, a: Option<&Tensor>, b: Option<&Tensor>, like: &Tensor) -> Result<Tensor> {
        let scale = |t: &Tensor, c: f64| -> Result<Tensor> { Ok(if c == 1.0 { t.clone() } else { (t * c)? }) };
        let a = if self.q == 0.0 { None } else { a };
        let b = if self.p == 0.0 { None } else { b };
        Ok(match (a, b) {
            (None, None) => like.zeros_like()?,
            (None, Some(b)) => scale(b, self.p)?,
            (Some(a), None) => scale(a, self.q)?,
            (Some(a), Some(b)) => (scale(a, self.q)? + scale(b, self.p)?)?,
        })
    }

    /// log f at the cached point, `[n]`.
    ///
    /// # Errors
    /// Tensor faults only.
    pub fn log_f(&self, point: &Point) -> Result<Tensor> {
        self.combine(Some(&point.log_q), Some(&point.log_p), &point.log_p)
    }

    /// ∇log f at the cached point, `[n, d]`.
    ///
    /// # Errors
    /// [`McmcError::MissingGradient`] if a gradient with a non-zero coefficient is not cached.
    pub fn grad_log_f(&self, point: &Point) -> Result<Tensor> {
        if (self.q != 0.0 && point.grad_log_q.is_none()) || (self.p != 0.0 && point.grad_log_p.is_none()) {
            return Err(McmcError::MissingGradient);
        }
        self.combine(point.grad_log_q.as_ref(), point.grad_log_p.as_ref(), &point.x)
    }

    /// The increment log f_other − log f_self from the cached parts, computed on the host in
    /// f64: (Δc_q)·log q + (Δc_p)·log p, with zero-coefficient terms dropped.
    pub fn log_ratio_host(&self, other: &Coeffs, log_q: &[f64], log_p: &[f64]) -> Vec<f64> {
        let (dq, dp) = (other.q - self.q, other.p - self.p);
        log_q
            .iter()
            .zip(log_p)
            .map(|(lq, lp)| {
                let a = if dq == 0.0 { 0.0 } else { dq * lq };
                let b = if dp == 0.0 { 0.0 } else { dp * lp };
                a + b
            })
            .collect()
    }
}

/// A density whose log f is a combination of two parts, evaluated together at a batch of
/// points (the flow q and the target p in AIS).
///
/// Implementations must return detached tensors in `x`'s dtype and device.
pub trait PartsDensity: Send + Sync {
    /// Dimension d.
    fn dim(&self) -> usize;

    /// Evaluates log q and log p at `x: [n, d]`, and their gradients if `with_grad`.
    ///
    /// # Errors
    /// Shape or tensor faults of the underlying densities (bad points give −∞ or NaN values,
    /// not errors).
    fn evaluate(&self, x: &Tensor, with_grad: bool) -> fab_core::Result<Point>;
}

/// The pair (q, p) of AIS: `base` is the flow (or any proposal), `target` the target density.
#[derive(Debug, Clone, Copy)]
pub struct Annealed<Q, P> {
    /// The base density q.
    pub base: Q,
    /// The target density p.
    pub target: P,
}

impl<Q: LogDensity, P: LogDensity> Annealed<Q, P> {
    /// Pairs `base` and `target`.
    ///
    /// # Errors
    /// [`McmcError::InvalidConfig`] if their dimensions differ.
    pub fn new(base: Q, target: P) -> Result<Self> {
        if base.dim() != target.dim() {
            return Err(McmcError::InvalidConfig(format!("base has dim {} but target has dim {}", base.dim(), target.dim())));
        }
        Ok(Self { base, target })
    }
}

impl<Q: LogDensity, P: LogDensity> PartsDensity for Annealed<Q, P> {
    fn dim(&self) -> usize {
        self.target.dim()
    }

    fn evaluate(&self, x: &Tensor, with_grad: bool) -> fab_core::Result<Point> {
        check_points(x, self.dim())?;
        let x = x.detach();
        let fix = |t: Tensor| -> fab_core::Result<Tensor> { Ok(t.detach().to_dtype(x.dtype())?) };
        if with_grad {
            let (lq, gq) = self.base.log_prob_and_grad(&x)?;
            let (lp, gp) = self.target.log_prob_and_grad(&x)?;
            Ok(Point { log_q: fix(lq)?, log_p: fix(lp)?, grad_log_q: Some(fix(gq)?), grad_log_p: Some(fix(gp)?), x })
        } else {
            let lq = self.base.log_prob(&x)?;
            let lp = self.target.log_prob(&x)?;
            Ok(Point { log_q: fix(lq)?, log_p: fix(lp)?, grad_log_q: None, grad_log_p: None, x })
        }
    }
}

/// A plain target density seen as parts: log q ≡ 0, so use it with [`Coeffs::TARGET`].
#[derive(Debug, Clone, Copy)]
pub struct TargetOnly<P>(pub P);

impl<P: LogDensity> PartsDensity for TargetOnly<P> {
    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn evaluate(&self, x: &Tensor, with_grad: bool) -> fab_core::Result<Point> {
        let n = check_points(x, self.dim())?;
        let x = x.detach();
        let zeros = Tensor::zeros(n, x.dtype(), x.device())?;
        let (lp, gp) = if with_grad {
            let (lp, gp) = self.0.log_prob_and_grad(&x)?;
            (lp, Some(gp.detach().to_dtype(x.dtype())?))
        } else {
            (self.0.log_prob(&x)?, None)
        };
        Ok(Point {
            log_q: zeros,
            log_p: lp.detach().to_dtype(x.dtype())?,
            grad_log_q: gp.as_ref().map(|g| g.zeros_like()).transpose()?,
            grad_log_p: gp,
            x,
        })
    }
}

/// Copies a `[n]` tensor of any float dtype into host f64.
pub(crate) fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}
