//! Coupling layer with rational-quadratic splines, circular splines for periodic coordinates,
//! a residual-net conditioner with periodic input features, and an unconditional element-wise
//! spline on the conditioning coordinates (the alanine-dipeptide flow block of
//! docs/ALGORITHMS.md, "Normalizing flows").

use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor, Var};
use fab_core::ParamSet;
use rand::RngCore;

use crate::cpu::spline_lanes::{self, ParamGrads, Params, SplineCache, SplineSet};
use crate::cpu::{with_slices, CpuLayer, Real, Tape};
use crate::layer::{impl_flow_via_layer, param, Layer};
use crate::nets::{LinearInit, ResNetTape, ResidualNet};
use crate::spline::{self, SplineSpec, Tail};
use crate::{FlowError, Result};

/// Options of a [`SplineCoupling`].
#[derive(Debug, Clone, PartialEq)]
pub struct SplineCouplingOptions {
    /// Number of bins K.
    pub bins: usize,
    /// Hidden width of the residual-net conditioner.
    pub hidden: usize,
    /// Residual blocks in the conditioner.
    pub num_blocks: usize,
    /// Interval half-width for non-circular coordinates (circular ones use π).
    pub tail_bound: f64,
    /// Start as the identity (conditioner's last layer 0 with derivative-1 bias, unconditional
    /// spline at identity). Off gives random splines (tests).
    pub identity_init: bool,
}

impl Default for SplineCouplingOptions {
    fn default() -> Self {
        Self { bins: 8, hidden: 256, num_blocks: 1, tail_bound: 5.0, identity_init: true }
    }
}

/// A coupling layer: coordinates with `mask = true` are transformed by rational-quadratic
/// splines whose parameters a residual net computes from the other ("identity") coordinates;
/// the identity coordinates themselves get an unconditional element-wise spline. Circular
/// coordinates (period 2π on [−π, π)) use circular splines and enter the conditioner as
/// w₁·sin f + w₂·cos f with learnable w (initialised to 1).
///
/// Density direction (data → base): the conditioner reads the identity coordinates *before*
/// their unconditional spline; sampling inverts both.
#[derive(Debug, Clone)]
pub struct SplineCoupling {
    dim: usize,
    bins: usize,
    transform: Vec<usize>,
    identity: Vec<usize>,
    tr_specs: Vec<SplineSpec>,
    id_specs: Vec<SplineSpec>,
    /// Positions (within `identity`) of circular coordinates, which get periodic features.
    id_circular: Vec<usize>,
    pf_weight: Option<Var>,
    net: ResidualNet,
    unconditional: Var,
    params: ParamSet,
    n_net_params: usize,
}

impl SplineCoupling {
    /// A coupling on `dim` coordinates; `mask[i]` says whether coordinate i is transformed and
    /// `circular[i]` whether it is periodic on [−π, π).
    pub fn new(
        mask: &[bool],
        circular: &[bool],
        opts: &SplineCouplingOptions,
        rng: &mut dyn RngCore,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let dim = mask.len();
        if circular.len() != dim {
            return Err(FlowError::InvalidConfig(format!("mask has {dim} entries but circular has {}", circular.len())));
        }
        if opts.bins == 0 || opts.bins > spline::MAX_BINS {
            return Err(FlowError::InvalidConfig(format!("spline bins must be in 1..={}, got {}", spline::MAX_BINS, opts.bins)));
        }
        if !(opts.tail_bound > 0.0) {
            return Err(FlowError::InvalidConfig(format!("tail_bound must be > 0, got {}", opts.tail_bound)));
        }
        let transform: Vec<usize> = (0..dim).filter(|&i| mask[i]).collect();
        let identity: Vec<usize> = (0..dim).filter(|&i| !mask[i]).collect();
        if transform.is_empty() || identity.is_empty() {
            return Err(FlowError::InvalidConfig("a coupling mask needs both transformed and conditioning coordinates".into()));
        }
        let spec = |i: usize, raw_scale: f64| SplineSpec {
            bins: opts.bins,
            bound: if circular[i] { PI } else { opts.tail_bound },
            tail: if circular[i] { Tail::Circular } else { Tail::Linear },
            raw_scale,
        };
        let net_scale = 1.0 / (opts.hidden as f64).sqrt();
        let tr_specs = transform.iter().map(|&i| spec(i, net_scale)).collect();
        let id_specs: Vec<SplineSpec> = identity.iter().map(|&i| spec(i, 1.0)).collect();
        let id_circular: Vec<usize> = identity.iter().enumerate().filter(|(_, &i)| circular[i]).map(|(p, _)| p).collect();
        let np = 3 * opts.bins + 1;

        let mut params = ParamSet::new();
        let pf_weight = if id_circular.is_empty() {
            None
        } else {
            Some(params.create("pf.weight", vec![1.0; 2 * id_circular.len()], &[id_circular.len(), 2], dtype, device)?)
        };
        let last_init = if opts.identity_init {
            LinearInit::Constant { weight: 0.0, bias: spline::identity_derivative_raw() }
        } else {
            LinearInit::TorchDefault
        };
        let before = params.len();
        let net = ResidualNet::new(
            &mut params,
            "net",
            identity.len(),
            opts.hidden,
            transform.len() * np,
            opts.num_blocks,
            last_init,
            rng,
            dtype,
            device,
        )?;
        let n_net_params = params.len() - before;
        let mut raw = vec![0.0; identity.len() * np];
        for j in 0..identity.len() {
            let r = &mut raw[j * np..(j + 1) * np];
            if opts.identity_init {
                r[2 * opts.bins..].fill(spline::identity_derivative_raw());
            } else {
                for v in r.iter_mut() {
                    *v = rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, rng);
                }
            }
        }
        let unconditional = params.create("unconditional", raw, &[identity.len(), np], dtype, device)?;
        Ok(Self {
            dim,
            bins: opts.bins,
            transform,
            identity,
            tr_specs,
            id_specs,
            id_circular,
            pf_weight,
            net,
            unconditional,
            params,
            n_net_params,
        })
    }

    fn n_raw(&self) -> usize {
        3 * self.bins + 1
    }

    fn bounds(specs: &[SplineSpec]) -> (Vec<f64>, Vec<bool>) {
        (specs.iter().map(|s| s.bound).collect(), specs.iter().map(|s| s.tail == Tail::Circular).collect())
    }

    fn cols_t(&self, x: &Tensor, cols: &[usize]) -> Result<Tensor> {
        let idx = Tensor::from_vec(cols.iter().map(|&c| c as u32).collect::<Vec<_>>(), cols.len(), x.device())?;
        Ok(x.index_select(&idx, 1)?)
    }

    /// Puts identity and transformed columns back into their places.
    fn assemble_t(&self, id: &Tensor, tr: &Tensor) -> Result<Tensor> {
        let mut inv = vec![0u32; self.dim];
        for (p, &c) in self.identity.iter().chain(&self.transform).enumerate() {
            inv[c] = p as u32;
        }
        let idx = Tensor::from_vec(inv, self.dim, id.device())?;
        Ok(Tensor::cat(&[id, tr], 1)?.index_select(&idx, 1)?)
    }

    /// Periodic input features with candle ops.
    fn features_t(&self, id: &Tensor, track: bool) -> Result<Tensor> {
        let Some(w) = &self.pf_weight else { return Ok(id.clone()) };
        let (ni, nc) = (self.identity.len(), self.id_circular.len());
        let dt = id.dtype();
        let dev = id.device();
        // Selection matrix S [nc, ni] scatters per-circular-feature weights to their columns.
        let mut sel = vec![0.0; nc * ni];
        let mut cmask = vec![0.0; ni];
        for (c, &p) in self.id_circular.iter().enumerate() {
            sel[c * ni + p] = 1.0;
            cmask[p] = 1.0;
        }
        let sel = Tensor::from_vec(sel, (nc, ni), &Device::Cpu)?.to_dtype(dt)?.to_device(dev)?;
        let cmask = Tensor::from_vec(cmask, (1, ni), &Device::Cpu)?.to_dtype(dt)?.to_device(dev)?;
        let w = param(w, track);
        let w1 = w.narrow(1, 0, 1)?.t()?.matmul(&sel)?;
        let w2 = w.narrow(1, 1, 1)?.t()?.matmul(&sel)?;
        let per = (id.sin()?.broadcast_mul(&w1)? + id.cos()?.broadcast_mul(&w2)?)?;
        Ok((id.broadcast_mul(&(1.0 - &cmask)?)? + per)?)
    }

    fn spline_params_t(&self, id: &Tensor, track: bool) -> Result<Tensor> {
        let n = id.dim(0)?;
        Ok(self.net.forward_t(&self.features_t(id, track)?, track)?.reshape((n, self.transform.len(), self.n_raw()))?)
    }

    /// Conditioner input on the host: the identity columns of `x` (`[n, dim]`), with periodic
    /// features w₁ sin f + w₂ cos f for circular coordinates (scale π/B = 1).
    fn features_cpu<T: Real>(&self, x: &[T], n: usize, w: Option<&[T]>) -> Vec<T> {
        let ni = self.identity.len();
        let mut f = Vec::with_capacity(n * ni);
        for row in x.chunks_exact(self.dim).take(n) {
            f.extend(self.identity.iter().map(|&c| row[c]));
        }
        if let Some(w) = w {
            for fr in f.chunks_exact_mut(ni) {
                for (c, &p) in self.id_circular.iter().enumerate() {
                    let v = fr[p];
                    fr[p] = w[2 * c] * v.sin() + w[2 * c + 1] * v.cos();
                }
            }
        }
        f
    }

    /// The transformed coordinates' splines (per-row parameters from the conditioner).
    fn tr_set(&self) -> SplineSet<'_> {
        SplineSet { specs: &self.tr_specs, cols: &self.transform, stride: self.dim }
    }

    /// The identity coordinates' unconditional splines.
    fn id_set(&self) -> SplineSet<'_> {
        SplineSet { specs: &self.id_specs, cols: &self.identity, stride: self.dim }
    }

    fn pf_slices<T: Real, R>(&self, f: impl FnOnce(Option<&[T]>) -> Result<R>) -> Result<R> {
        match &self.pf_weight {
            Some(w) => with_slices::<T, _>(&[w], |s| f(Some(s[0]))),
            None => f(None),
        }
    }
}

impl Layer for SplineCoupling {
    fn dim(&self) -> usize {
        self.dim
    }
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mask: Vec<f64> = (0..self.dim).map(|i| if self.transform.contains(&i) { 1.0 } else { 0.0 }).collect();
        vec![("mask".into(), Tensor::from_vec(mask, self.dim, &Device::Cpu).expect("mask"))]
    }

    fn forward_t(&self, z: &Tensor, track: bool) -> Result<(Tensor, Tensor)> {
        let zid = self.cols_t(z, &self.identity)?;
        let ztr = self.cols_t(z, &self.transform)?;
        let (bi, ci) = Self::bounds(&self.id_specs);
        let (bt, ct) = Self::bounds(&self.tr_specs);
        let (id, ld_id) = spline::apply_t(&zid, &param(&self.unconditional, track), self.bins, 1.0, &bi, &ci, true)?;
        let raw = self.spline_params_t(&id, track)?;
        let (tr, ld_tr) = spline::apply_t(&ztr, &raw, self.bins, self.tr_specs[0].raw_scale, &bt, &ct, true)?;
        Ok((self.assemble_t(&id, &tr)?, (ld_id.sum(1)? + ld_tr.sum(1)?)?))
    }

    fn inverse_t(&self, x: &Tensor, track: bool) -> Result<(Tensor, Tensor)> {
        let id = self.cols_t(x, &self.identity)?;
        let tr = self.cols_t(x, &self.transform)?;
        let (bi, ci) = Self::bounds(&self.id_specs);
        let (bt, ct) = Self::bounds(&self.tr_specs);
        let raw = self.spline_params_t(&id, track)?;
        let (ztr, ld_tr) = spline::apply_t(&tr, &raw, self.bins, self.tr_specs[0].raw_scale, &bt, &ct, false)?;
        let (zid, ld_id) = spline::apply_t(&id, &param(&self.unconditional, track), self.bins, 1.0, &bi, &ci, false)?;
        Ok((self.assemble_t(&zid, &ztr)?, (ld_id.sum(1)? + ld_tr.sum(1)?)?))
    }

    fn cpu_f64(&self) -> Option<&dyn CpuLayer<f64>> {
        Some(self)
    }
    fn cpu_f32(&self) -> Option<&dyn CpuLayer<f32>> {
        Some(self)
    }
}
impl_flow_via_layer!(SplineCoupling);

struct SplineTape<T> {
    /// The layer's input `[n, dim]`.
    x: Vec<T>,
    /// What the transformed coordinates' splines recorded (instead of the conditioner output).
    splines: SplineCache,
    net: ResNetTape<T>,
}

impl<T: Real> CpuLayer<T> for SplineCoupling {
    fn inverse(&self, mut x: Vec<T>, n: usize, ld: &mut [T], record: bool) -> Result<(Vec<T>, Option<Tape>)> {
        // The conditioner reads the identity coordinates before their unconditional spline.
        let feats = self.pf_slices::<T, _>(|w| Ok(self.features_cpu(&x, n, w)))?;
        let (raw, net_tape) = self.net.cpu_forward(feats, n, record)?;
        let x_in = if record { x.clone() } else { Vec::new() };
        let splines = spline_lanes::apply_rows(&self.tr_set(), &mut x, Params::PerRow(&raw), ld, false, record);
        drop(raw);
        with_slices::<T, _>(&[&self.unconditional], |u| {
            spline_lanes::apply_rows(&self.id_set(), &mut x, Params::Shared(u[0]), ld, false, false);
            Ok(())
        })?;
        let tape = match (net_tape, splines) {
            (Some(net), Some(splines)) => Some(Box::new(SplineTape { x: x_in, splines, net }) as Tape),
            _ => None,
        };
        Ok((x, tape))
    }

    fn inverse_backward(&self, tape: Tape, mut gz: Vec<T>, gld: &[T], n: usize, pgrads: Option<&mut [Vec<T>]>) -> Result<Vec<T>> {
        let tape = *tape.downcast::<SplineTape<T>>().map_err(|_| candle_core::Error::Msg("spline coupling: wrong tape".into()))?;
        let d = self.dim;
        let (ni, nt, np) = (self.identity.len(), self.transform.len(), self.n_raw());
        // Transformed coordinates: ∂/∂input (in place in gz) and ∂/∂(conditioner output).
        let mut g_raw = vec![T::zero(); n * nt * np];
        spline_lanes::backward_rows(&self.tr_set(), &tape.x, Params::Recorded(&tape.splines), &mut gz, gld, ParamGrads::PerRow(&mut g_raw));
        let (pf_idx, net_lo) = if self.pf_weight.is_some() { (Some(0), 1) } else { (None, 0) };
        let net_hi = net_lo + self.n_net_params;
        let mut pg = pgrads;
        // Unconditional splines on the identity coordinates.
        with_slices::<T, _>(&[&self.unconditional], |u| {
            let gu = match pg.as_deref_mut() {
                Some(p) => ParamGrads::Shared(p[net_hi].as_mut_slice()),
                None => ParamGrads::None,
            };
            spline_lanes::backward_rows(&self.id_set(), &tape.x, Params::Shared(u[0]), &mut gz, gld, gu);
            Ok(())
        })?;
        // Conditioner.
        let net_pg = pg.as_deref_mut().map(|p| &mut p[net_lo..net_hi]);
        let g_feat = self.net.cpu_backward(tape.net, g_raw, n, net_pg)?;
        // Periodic features: f' = w₁ sin f + w₂ cos f.
        self.pf_slices::<T, _>(|w| {
            let mut circ_of = vec![None; ni];
            for (c, &p) in self.id_circular.iter().enumerate() {
                circ_of[p] = Some(c);
            }
            let mut gw = vec![T::zero(); 2 * self.id_circular.len()];
            for ((gr, xr), gf) in gz.chunks_exact_mut(d).zip(tape.x.chunks_exact(d)).zip(g_feat.chunks_exact(ni)).take(n) {
                for (p, (&col, circ)) in self.identity.iter().zip(&circ_of).enumerate() {
                    let gfp = gf[p];
                    match (*circ, w) {
                        (Some(c), Some(w)) => {
                            let v = xr[col];
                            let (sv, cv) = (v.sin(), v.cos());
                            gr[col] += gfp * (w[2 * c] * cv - w[2 * c + 1] * sv);
                            gw[2 * c] += gfp * sv;
                            gw[2 * c + 1] += gfp * cv;
                        }
                        _ => gr[col] += gfp,
                    }
                }
            }
            if let (Some(p), Some(i)) = (pg, pf_idx) {
                for (a, b) in p[i].iter_mut().zip(&gw) {
                    *a += *b;
                }
            }
            Ok(())
        })?;
        Ok(gz)
    }

    fn forward(&self, mut z: Vec<T>, n: usize, ld: &mut [T]) -> Result<Vec<T>> {
        with_slices::<T, _>(&[&self.unconditional], |u| {
            spline_lanes::apply_rows(&self.id_set(), &mut z, Params::Shared(u[0]), ld, true, false);
            Ok(())
        })?;
        let feats = self.pf_slices::<T, _>(|w| Ok(self.features_cpu(&z, n, w)))?;
        let (raw, _) = self.net.cpu_forward(feats, n, false)?;
        spline_lanes::apply_rows(&self.tr_set(), &mut z, Params::PerRow(&raw), ld, true, false);
        Ok(z)
    }
}
