//! The losses of FAB and its baselines as free functions: each takes the flow and the data the
//! loss needs, and returns the loss value with the gradient of the objective it minimises
//! (`docs/ALGORITHMS.md`, "Losses"). The sampler composes them with data (AIS, the buffer, flow
//! samples, exact samples) and the optimiser; each is tested against a finite-difference
//! gradient of its objective.

use candle_core::Tensor;
use fab_core::stats::normalized_weights;
use fab_core::{Grads, LogDensity, OnDevice, Proposal};
use fab_flows::FlowModel;
use rand::RngCore;

use crate::Result;

/// A loss value with its parameter gradients (`None` when the loss was not finite and the
/// backward pass was skipped).
#[derive(Debug)]
pub struct LossGrad {
    /// The loss value.
    pub value: f64,
    /// ∇θ of the loss.
    pub grads: Option<Grads>,
}

/// FAB with the prioritised buffer (α-divergence with buffered AIS samples):
/// L(θ) = −(1/n) Σᵢ w̃ᵢ log q_θ(xᵢ), the weights w̃ held fixed. `weights` receives log q at the
/// points before the backward pass and returns w̃ — for the buffer, its importance-weight
/// correction exp((1−α)(log q − log q_old)) (which also updates the buffer's stored weights).
pub fn fab_buffer(flow: &FlowModel, x: &Tensor, weights: &mut dyn FnMut(&[f64]) -> fab_core::Result<Vec<f64>>) -> Result<LossGrad> {
    let mut value = f64::NAN;
    let (_, grads) = flow.log_prob_backward_with(x, &mut |lq| {
        let w = weights(lq)?;
        let n = lq.len() as f64;
        let coef: Vec<f64> = w.iter().map(|w| -w / n).collect();
        value = coef.iter().zip(lq).map(|(c, q)| c * q).sum();
        Ok(value.is_finite().then_some(coef))
    })?;
    Ok(LossGrad { value, grads })
}

/// FAB without the buffer, on one AIS batch with log-weights `log_w`:
/// L(θ) = −sign(α)·Σᵢ w̄ᵢ log q_θ(xᵢ) / n with w̄ = softmax(log w) held fixed.
pub fn fab_no_buffer(flow: &FlowModel, x: &Tensor, log_w: &[f64], alpha: f64) -> Result<LossGrad> {
    let w = normalized_weights(log_w);
    let n = w.len() as f64;
    let coef: Vec<f64> = w.iter().map(|v| -alpha.signum() * v / n).collect();
    let (lq, grads) = flow.log_prob_backward(x, &coef)?;
    let value: f64 = coef.iter().zip(fab_core::to_f64_vec(&lq)?).map(|(c, q)| c * q).sum();
    Ok(LossGrad { value, grads: Some(grads) })
}

/// Maximum likelihood on exact target samples (forward KL up to a constant):
/// L(θ) = −(1/n) Σᵢ log q_θ(xᵢ).
pub fn forward_kl(flow: &FlowModel, x: &Tensor) -> Result<LossGrad> {
    let b = x.dim(0)?;
    let coef = vec![-1.0 / b as f64; b];
    let (lq, grads) = flow.log_prob_backward(x, &coef)?;
    let value = -fab_core::to_f64_vec(&lq)?.iter().sum::<f64>() / b as f64;
    Ok(LossGrad { value, grads: Some(grads) })
}

/// The α = 2 divergence with flow samples (neural importance sampling): at fixed samples
/// xᵢ ~ q_θ₀ the objective D̂(θ) = (1/n) Σᵢ p̃(xᵢ)² / (q_θ(xᵢ) q_θ₀(xᵢ)) has the gradient
/// −(1/n) Σᵢ (p̃/q_θ₀)²(xᵢ) ∇θ log q_θ(xᵢ) at θ₀ (the score-function form; see
/// `docs/DEVIATIONS.md` for how this differs from the reference, which keeps the
/// reparameterisation path of x). The reported value is that surrogate, Σᵢ cᵢ log q(xᵢ).
pub fn alpha2_nis(flow: &FlowModel, target: &dyn LogDensity, b: usize, rng: &mut dyn RngCore) -> Result<LossGrad> {
    let (x, lq0) = flow.sample_and_log_prob(b, rng)?;
    let lp = fab_core::to_f64_vec(&OnDevice::for_points_on(target, x.device()).log_prob(&x)?)?;
    let lq0 = fab_core::to_f64_vec(&lq0)?;
    let coef: Vec<f64> = lp.iter().zip(&lq0).map(|(p, q)| -(2.0 * (p - q)).exp() / b as f64).collect();
    let (lq, grads) = flow.log_prob_backward(&x, &coef)?;
    let value: f64 = coef.iter().zip(fab_core::to_f64_vec(&lq)?).map(|(c, q)| c * q).sum();
    Ok(LossGrad { value, grads: Some(grads) })
}

/// Reverse KL on reparameterised flow samples x = f_θ(z), z ~ base:
/// L(θ) = (1/n) Σᵢ [log q_θ(xᵢ) − log p̃(xᵢ)]; the target enters through ∇ₓ log p̃.
pub fn reverse_kl(flow: &FlowModel, target: &dyn LogDensity, b: usize, rng: &mut dyn RngCore) -> Result<LossGrad> {
    let (x, lq) = flow.sample_t(b, rng, true)?;
    let (lp, g) = OnDevice::for_points_on(target, x.device()).log_prob_and_grad(&x.detach())?;
    let value = fab_core::to_f64_vec(&(&lq - &lp)?)?.iter().sum::<f64>() / b as f64;
    // Surrogate with the gradient of mean(log q − log p): log p enters linearised as x·∇ₓ log p
    // at the (detached) samples.
    let g = g.to_dtype(x.dtype())?;
    let surrogate = ((lq.sum_all()? - (&x * &g)?.sum_all()?)? / b as f64)?;
    let grads = if value.is_finite() {
        let store = surrogate.backward()?;
        Some(flow.params().grads_from_store(&store))
    } else {
        None
    };
    Ok(LossGrad { value, grads })
}
