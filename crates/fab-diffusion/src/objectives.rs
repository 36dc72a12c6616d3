//! The training objectives of the diffusion sampler (`docs/DIFFUSION.md`, "Objectives"), as
//! losses on the per-step terms of a batch of [`Paths`]:
//!
//! - TB: mean ½(log Z + Σlog P_F − Σlog P_B − log R)²;
//! - VarGrad: TB with log Z replaced by the batch mean of log R + Σlog P_B − Σlog P_F;
//! - DB: batch mean of Σ_i ½(log P_F,i + log F_i − log P_B,i − log F_{i+1})², F_0 = Z, F_T = R;
//! - SubTB(λ): batch sum of Σ_{i<j} c_ij (log F_i − log F_j + Σ_{k=i}^{j−1}(log P_F − log P_B)_k)²,
//!   c_ij = λ^{j−i} / Σ_{i′<j′} λ^{j′−i′};
//! - PIS: mean (Σlog P_F − Σlog P_B − log R)/d on reparameterised paths.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::Paths;
use crate::Result;

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Objective {
    /// Trajectory balance with a learned log Z.
    Tb,
    /// Trajectory balance with the batch's log-partition estimate (log-variance loss).
    VarGrad,
    /// Detailed balance with learned log-flows.
    Db,
    /// Sub-trajectory balance with geometric weights λ^{length}.
    SubTb {
        /// λ (2 in the reference).
        lambda: f64,
    },
    /// Path-integral sampler: the reverse KL through reparameterised paths.
    Pis,
}

impl Objective {
    /// Whether the objective needs log-flows of the states x_0..x_{T−1} (log F(x_0) = log Z).
    pub fn needs_flows(&self) -> bool {
        matches!(self, Objective::Db | Objective::SubTb { .. })
    }

    /// Whether the objective differentiates through the sampled path.
    pub fn reparameterised(&self) -> bool {
        matches!(self, Objective::Pis)
    }

    /// Whether the objective learns log Z (VarGrad and PIS do not; DB and SubTB learn it as
    /// log F(x_0)).
    pub fn uses_log_z(&self) -> bool {
        !matches!(self, Objective::VarGrad | Objective::Pis)
    }
}

/// Which part of a training batch a [`loss`] call sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPart {
    /// Paths in the whole batch: every per-path mean divides by this.
    pub batch: usize,
    /// VarGrad's centre (the batch mean of Σlog P_F − Σlog P_B − log R), given as a constant
    /// when the paths are one chunk of a larger batch; `None`: the mean of these paths, on the
    /// graph. Either way the gradient is the same, since the residuals sum to zero about it.
    pub center: Option<f64>,
}

impl BatchPart {
    /// The whole batch of `n` paths.
    pub fn whole(n: usize) -> Self {
        Self { batch: n, center: None }
    }
}

/// The loss of `paths` under `objective`, with training log-rewards `log_r` (usually
/// `paths.log_r`) and the learned scalar `log_z` (`[1]`, read by TB only: DB and SubTB take
/// log Z = log F(x_0) from the paths' log-flows). `score_end` is ∇log R at the end points
/// (needed by PIS only: the gradient of log R through x_T). For one chunk of a batch (`part`),
/// the chunks' losses and gradients add up to those of the whole batch.
pub fn loss(
    objective: Objective,
    paths: &Paths,
    log_r: &[f64],
    log_z: &Tensor,
    score_end: Option<&[f64]>,
    part: BatchPart,
) -> Result<Tensor> {
    let dtype = log_z.dtype();
    let n = paths.n;
    let per_path = part.batch as f64;
    let lr = Tensor::from_slice(log_r, n, &Device::Cpu)?.to_dtype(dtype)?;
    let pf = paths.sum_log_pf()?;
    let pb = paths.sum_log_pb()?;
    Ok(match objective {
        Objective::Tb => {
            let delta = ((pf - pb)?.broadcast_add(log_z)? - lr)?;
            ((delta.sqr()?.sum_all()? / per_path)? * 0.5)?.reshape(1)?
        }
        Objective::VarGrad => {
            let b = ((pf - pb)? - lr)?;
            let delta = match part.center {
                None => b.broadcast_sub(&b.mean_all()?)?,
                Some(c) => (b - c)?,
            };
            ((delta.sqr()?.sum_all()? / per_path)? * 0.5)?.reshape(1)?
        }
        Objective::Pis => {
            let d = paths.x_last.dim(1)?;
            let score = score_end.ok_or_else(|| crate::Error::Config("the PIS loss needs the score at the end points".into()))?;
            let g = Tensor::from_slice(score, (n, d), &Device::Cpu)?.to_dtype(dtype)?;
            // log R(x_T) carries the gradient g·∂x_T; its value is log R itself.
            let moved = (&paths.x_last - paths.x_last.detach())?;
            let lr_path = (lr + (moved * g)?.sum(1)?)?;
            ((((pf - pb)? - lr_path)?.sum_all()? / per_path)? / d as f64)?.reshape(1)?
        }
        Objective::Db => {
            let a = flow_terms(paths, &lr)?;
            let t = paths.log_pf.dim(1)?;
            let steps = (&paths.log_pf - &paths.log_pb)?;
            let f_from = a.narrow(1, 0, t)?;
            let f_to = a.narrow(1, 1, t)?;
            let r = ((steps + f_from)? - f_to)?;
            ((r.sqr()?.sum(1)?.sum_all()? / per_path)? * 0.5)?.reshape(1)?
        }
        Objective::SubTb { lambda } => {
            let f = flow_terms(paths, &lr)?;
            let t = paths.log_pf.dim(1)?;
            // A_i = log F_i − Σ_{k<i}(log P_F − log P_B)_k; a sub-trajectory residual is A_i − A_j.
            let steps = (&paths.log_pf - &paths.log_pb)?;
            let cum = Tensor::cat(&[Tensor::zeros((n, 1), dtype, &Device::Cpu)?, steps.cumsum(1)?], 1)?;
            let a = (f - cum)?;
            let diff = a.unsqueeze(2)?.broadcast_sub(&a.unsqueeze(1)?)?;
            let w = Tensor::from_vec(subtb_weights(t, lambda), (t + 1, t + 1), &Device::Cpu)?.to_dtype(dtype)?;
            diff.sqr()?.broadcast_mul(&w)?.sum_all()?.reshape(1)?
        }
    })
}

/// log F_0..T as `[n, T+1]`: the log-flows of x_0..x_{T−1} (log F(x_0) being log Z) and log R.
fn flow_terms(paths: &Paths, log_r: &Tensor) -> Result<Tensor> {
    let f = paths.log_f.as_ref().ok_or_else(|| crate::Error::Config("DB and SubTB need paths evaluated with log-flows".into()))?;
    Ok(Tensor::cat(&[f, &log_r.unsqueeze(1)?], 1)?)
}

/// The SubTB weights c_ij = λ^{j−i} / Σ_{i′<j′} λ^{j′−i′} for 0 ≤ i < j ≤ T (0 elsewhere),
/// row-major `[T+1, T+1]`.
pub fn subtb_weights(t: usize, lambda: f64) -> Vec<f64> {
    let m = t + 1;
    let mut w = vec![0.0; m * m];
    let mut total = 0.0;
    for i in 0..m {
        for j in i + 1..m {
            let v = lambda.powi((j - i) as i32);
            w[i * m + j] = v;
            total += v;
        }
    }
    w.iter_mut().for_each(|v| *v /= total);
    w
}

/// The TB residuals Δ = log Z + Σlog P_F − Σlog P_B − log R of each path (host, detached), from
/// the paths' `log_q` = Σlog P_F − Σlog P_B ([`Paths::log_q_host`]).
pub fn tb_residuals(log_q: &[f64], log_r: &[f64], log_z: f64) -> Vec<f64> {
    log_q.iter().zip(log_r).map(|(q, r)| log_z + q - r).collect()
}
