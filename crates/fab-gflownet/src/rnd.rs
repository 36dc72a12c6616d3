//! Random network distillation for GAFN's intrinsic rewards (`docs/GFLOWNETS.md`, "GAFN"): a
//! frozen random target network and a trained predictor; the intrinsic reward of a state is
//! scale·‖pred(s) − target(s)‖₂, large where the predictor has seen few states.

use std::path::Path;
use std::sync::Arc;

use fab_optim::{Adam, AdamConfig};
use rand::RngCore;

use crate::env::DiscreteEnv;
use crate::net::{grads_from_host, Mlp, Network};
use crate::{Error, Result};

/// RND target and predictor with the predictor's optimiser.
#[derive(Debug)]
pub struct Rnd {
    target: Mlp,
    predictor: Mlp,
    adam: Adam,
    scale: f64,
    latent: usize,
}

impl Rnd {
    /// Target and predictor `obs → hidden… → latent` (LeakyReLU `slope`), predictor lr `lr`,
    /// intrinsic reward scale `scale`.
    pub fn new(
        env: Arc<dyn DiscreteEnv>,
        hidden: &[usize],
        latent: usize,
        slope: f64,
        lr: f64,
        scale: f64,
        rng: &mut dyn RngCore,
    ) -> Result<Self> {
        let target = Mlp::new(env.clone(), hidden, latent, slope, rng)?;
        let predictor = Mlp::new(env, hidden, latent, slope, rng)?;
        let mut adam = Adam::new(predictor.params(), AdamConfig { lr, ..Default::default() }).map_err(Error::family)?;
        adam.set_update_path(fab_optim::UpdatePath::Fused);
        Ok(Self { target, predictor, adam, scale, latent })
    }

    fn distances(&self, pred: &[f32], targ: &[f32]) -> Vec<f64> {
        pred.chunks_exact(self.latent)
            .zip(targ.chunks_exact(self.latent))
            .map(|(p, t)| p.iter().zip(t).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt())
            .collect()
    }

    /// Intrinsic reward of every state of `states` (`[n, state_len]`).
    pub fn intrinsic(&self, states: &[i32]) -> Vec<f64> {
        let p = self.predictor.forward(states, false).out;
        let t = self.target.forward(states, false).out;
        self.distances(&p, &t).into_iter().map(|d| self.scale * d).collect()
    }

    /// One step on the RND loss mean_s ‖pred(s) − target(s)‖₂ over `states`; returns the loss.
    pub fn train_step(&mut self, states: &[i32]) -> Result<f64> {
        let fwd = self.predictor.forward(states, true);
        let t = self.target.forward(states, false).out;
        let d = self.distances(&fwd.out, &t);
        let n = d.len().max(1) as f64;
        let loss = d.iter().sum::<f64>() / n;
        let mut g = vec![0f32; fwd.out.len()];
        for (i, di) in d.iter().enumerate() {
            if *di > 0.0 {
                for j in 0..self.latent {
                    let k = i * self.latent + j;
                    g[k] = (f64::from(fwd.out[k] - t[k]) / di / n) as f32;
                }
            }
        }
        let grads = self.predictor.backward(&fwd, &g);
        if loss.is_finite() {
            let g = grads_from_host(self.predictor.params(), grads)?;
            self.adam.step(self.predictor.params(), &g).map_err(Error::family)?;
            self.predictor.refresh()?;
        }
        Ok(loss)
    }

    /// Saves target, predictor and optimiser into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.target.params().save(&dir.join("rnd_target.safetensors"))?;
        self.predictor.params().save(&dir.join("rnd_predictor.safetensors"))?;
        self.adam.save(&dir.join("rnd_adam.safetensors")).map_err(Error::family)
    }

    /// Restores what [`save`](Self::save) wrote.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        self.target.params().load(&dir.join("rnd_target.safetensors"))?;
        self.predictor.params().load(&dir.join("rnd_predictor.safetensors"))?;
        self.adam.load(&dir.join("rnd_adam.safetensors")).map_err(Error::family)?;
        self.target.refresh()?;
        self.predictor.refresh()
    }
}
