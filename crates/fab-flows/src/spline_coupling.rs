//! Coupling layer with rational-quadratic splines, circular splines for periodic coordinates,
//! a residual-net conditioner with periodic input features, and an unconditional element-wise
//! spline on the conditioning coordinates (the alanine-dipeptide flow block of SPEC §4.2).

use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor, Var};
use fab_core::ParamSet;
use rand::RngCore;
use rayon::prelude::*;

use crate::cpu::{gather_cols, scatter_cols, with_slices, CpuLayer, Real, Tape};
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
    pub fn new(mask: &[bool], circular: &[bool], opts: &SplineCouplingOptions, rng: &mut dyn RngCore, dtype: DType, device: &Device) -> Result<Self> {
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
        let net = ResidualNet::new(&mut params, "net", identity.len(), opts.hidden, transform.len() * np, opts.num_blocks, last_init, rng, dtype, device)?;
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
        Ok(Self { dim, bins: opts.bins, transform, identity, tr_specs, id_specs, id_circular, pf_weight, net, unconditional, params, n_net_params })
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

    /// Periodic features on the host (scale π/B = 1 for circular coordinates).
    fn features_cpu<T: Real>(&self, id: &[T], n: usize, w: Option<&[T]>) -> Vec<T> {
        let mut f = id.to_vec();
        if let Some(w) = w {
            let ni = self.identity.len();
            for i in 0..n {
                for (c, &p) in self.id_circular.iter().enumerate() {
                    let v = id[i * ni + p];
                    f[i * ni + p] = w[2 * c] * v.sin() + w[2 * c + 1] * v.cos();
                }
            }
        }
        f
    }

    fn pf_slices<T: Real, R>(&self, f: impl FnOnce(Option<&[T]>) -> Result<R>) -> Result<R> {
        match &self.pf_weight {
            Some(w) => with_slices::<T, _>(&[w], |s| f(Some(s[0]))),
            None => f(None),
        }
    }

    /// Applies per-element splines to the `[n, F]` buffer `v` with per-row parameters `raw`
    /// (`[n, F·P]`, or shared `[F·P]` when `shared`), adding log-dets to `ld`.
    fn splines_cpu<T: Real>(specs: &[SplineSpec], v: &mut [T], raw: &[T], shared: bool, ld: &mut [T], inverse: bool) {
        let f = specs.len();
        let np = specs[0].n_params();
        // Shared parameters: one set of knots per feature for the whole batch.
        let prepared: Vec<spline::Knots> = if shared {
            (0..f).map(|j| spline::knots(&specs[j], &raw[j * np..(j + 1) * np])).collect()
        } else {
            Vec::new()
        };
        let row = |(i, (vr, l)): (usize, (&mut [T], &mut T))| {
            let mut acc = T::zero();
            for j in 0..f {
                let (y, dl) = if shared {
                    spline::apply_knots(&specs[j], &prepared[j], vr[j], inverse)
                } else {
                    spline::apply(&specs[j], &raw[(i * f + j) * np..(i * f + j + 1) * np], vr[j], inverse)
                };
                vr[j] = y;
                acc = acc + dl;
            }
            *l = *l + acc;
        };
        if crate::cpu::parallel_rows(ld.len(), f * 20) {
            v.par_chunks_mut(f).zip(ld.par_iter_mut()).enumerate().for_each(row);
        } else {
            v.chunks_mut(f).zip(ld.iter_mut()).enumerate().for_each(row);
        }
    }

    /// Reverse of [`splines_cpu`](Self::splines_cpu) on the original inputs `v`: overwrites `g`
    /// (∂L/∂out) with ∂L/∂in and adds ∂L/∂raw into `graw` (per-row, or summed when `shared`).
    #[allow(clippy::too_many_arguments)]
    fn splines_backward_cpu<T: Real>(specs: &[SplineSpec], v: &[T], raw: &[T], shared: bool, g: &mut [T], gld: &[T], graw: Option<&mut [T]>, inverse: bool) {
        let f = specs.len();
        let np = specs[0].n_params();
        let n = gld.len();
        if shared {
            let prepared: Vec<spline::Knots> = (0..f).map(|j| spline::knots(&specs[j], &raw[j * np..(j + 1) * np])).collect();
            let mut graw = graw;
            for i in 0..n {
                for j in 0..f {
                    let gp = graw.as_deref_mut().map(|gr| &mut gr[j * np..(j + 1) * np]);
                    g[i * f + j] = spline::apply_backward_knots(&specs[j], &prepared[j], v[i * f + j], inverse, g[i * f + j], gld[i], gp);
                }
            }
            return;
        }
        let work = |i: usize, gr: &mut [T], mut gp: Option<&mut [T]>| {
            for j in 0..f {
                let p = &raw[(i * f + j) * np..(i * f + j + 1) * np];
                let gpj = gp.as_deref_mut().map(|x| &mut x[j * np..(j + 1) * np]);
                gr[j] = spline::apply_backward(&specs[j], p, v[i * f + j], inverse, gr[j], gld[i], gpj);
            }
        };
        match graw {
            Some(graw) => {
                if crate::cpu::parallel_rows(n, f * 40) {
                    g.par_chunks_mut(f).zip(graw.par_chunks_mut(f * np)).enumerate().for_each(|(i, (gr, gp))| work(i, gr, Some(gp)));
                } else {
                    g.chunks_mut(f).zip(graw.chunks_mut(f * np)).enumerate().for_each(|(i, (gr, gp))| work(i, gr, Some(gp)));
                }
            }
            None => {
                if crate::cpu::parallel_rows(n, f * 40) {
                    g.par_chunks_mut(f).enumerate().for_each(|(i, gr)| work(i, gr, None));
                } else {
                    g.chunks_mut(f).enumerate().for_each(|(i, gr)| work(i, gr, None));
                }
            }
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
    id: Vec<T>,
    tr: Vec<T>,
    raw: Vec<T>,
    net: ResNetTape<T>,
}

impl<T: Real> CpuLayer<T> for SplineCoupling {
    fn inverse(&self, mut x: Vec<T>, n: usize, ld: &mut [T], record: bool) -> Result<(Vec<T>, Option<Tape>)> {
        let d = self.dim;
        let id = gather_cols(&x, n, d, &self.identity);
        let mut tr = gather_cols(&x, n, d, &self.transform);
        let feats = self.pf_slices::<T, _>(|w| Ok(self.features_cpu(&id, n, w)))?;
        let (raw, net_tape) = self.net.cpu_forward(feats, n, record)?;
        let tr_in = if record { tr.clone() } else { Vec::new() };
        Self::splines_cpu(&self.tr_specs, &mut tr, &raw, false, ld, false);
        let mut zid = id.clone();
        with_slices::<T, _>(&[&self.unconditional], |u| {
            Self::splines_cpu(&self.id_specs, &mut zid, u[0], true, ld, false);
            Ok(())
        })?;
        scatter_cols(&mut x, n, d, &self.transform, &tr);
        scatter_cols(&mut x, n, d, &self.identity, &zid);
        let tape = net_tape.map(|net| Box::new(SplineTape { id, tr: tr_in, raw, net }) as Tape);
        Ok((x, tape))
    }

    fn inverse_backward(&self, tape: Tape, mut gz: Vec<T>, gld: &[T], n: usize, pgrads: Option<&mut [Vec<T>]>) -> Result<Vec<T>> {
        let tape = *tape.downcast::<SplineTape<T>>().map_err(|_| candle_core::Error::Msg("spline coupling: wrong tape".into()))?;
        let d = self.dim;
        let (ni, nt, np) = (self.identity.len(), self.transform.len(), self.n_raw());
        let mut g_tr = gather_cols(&gz, n, d, &self.transform);
        let mut g_id = gather_cols(&gz, n, d, &self.identity);
        // Transformed coordinates: ∂/∂input and ∂/∂(conditioner output).
        let mut g_raw = vec![T::zero(); n * nt * np];
        Self::splines_backward_cpu(&self.tr_specs, &tape.tr, &tape.raw, false, &mut g_tr, gld, Some(&mut g_raw), false);
        let (pf_idx, net_lo) = if self.pf_weight.is_some() { (Some(0), 1) } else { (None, 0) };
        let net_hi = net_lo + self.n_net_params;
        let mut pg = pgrads;
        // Unconditional splines on the identity coordinates.
        with_slices::<T, _>(&[&self.unconditional], |u| {
            let gu = pg.as_deref_mut().map(|p| p[net_hi].as_mut_slice());
            Self::splines_backward_cpu(&self.id_specs, &tape.id, u[0], true, &mut g_id, gld, gu, false);
            Ok(())
        })?;
        // Conditioner.
        let net_pg = pg.as_deref_mut().map(|p| &mut p[net_lo..net_hi]);
        let g_feat = self.net.cpu_backward(tape.net, g_raw, n, net_pg)?;
        // Periodic features: f' = w₁ sin f + w₂ cos f.
        self.pf_slices::<T, _>(|w| {
            match w {
                Some(w) => {
                    let mut circ_of = vec![None; ni];
                    for (c, &p) in self.id_circular.iter().enumerate() {
                        circ_of[p] = Some(c);
                    }
                    let mut gw = vec![T::zero(); 2 * self.id_circular.len()];
                    for i in 0..n {
                        for (p, circ) in circ_of.iter().enumerate() {
                            let gf = g_feat[i * ni + p];
                            let dst = &mut g_id[i * ni + p];
                            match *circ {
                                None => *dst = *dst + gf,
                                Some(c) => {
                                    let v = tape.id[i * ni + p];
                                    *dst = *dst + gf * (w[2 * c] * v.cos() - w[2 * c + 1] * v.sin());
                                    gw[2 * c] = gw[2 * c] + gf * v.sin();
                                    gw[2 * c + 1] = gw[2 * c + 1] + gf * v.cos();
                                }
                            }
                        }
                    }
                    if let (Some(p), Some(i)) = (pg.as_deref_mut(), pf_idx) {
                        for (a, b) in p[i].iter_mut().zip(&gw) {
                            *a = *a + *b;
                        }
                    }
                }
                None => {
                    for (a, b) in g_id.iter_mut().zip(&g_feat) {
                        *a = *a + *b;
                    }
                }
            }
            Ok(())
        })?;
        scatter_cols(&mut gz, n, d, &self.transform, &g_tr);
        scatter_cols(&mut gz, n, d, &self.identity, &g_id);
        Ok(gz)
    }

    fn forward(&self, mut z: Vec<T>, n: usize, ld: &mut [T]) -> Result<Vec<T>> {
        let d = self.dim;
        let mut id = gather_cols(&z, n, d, &self.identity);
        let mut tr = gather_cols(&z, n, d, &self.transform);
        with_slices::<T, _>(&[&self.unconditional], |u| {
            Self::splines_cpu(&self.id_specs, &mut id, u[0], true, ld, true);
            Ok(())
        })?;
        let feats = self.pf_slices::<T, _>(|w| Ok(self.features_cpu(&id, n, w)))?;
        let (raw, _) = self.net.cpu_forward(feats, n, false)?;
        Self::splines_cpu(&self.tr_specs, &mut tr, &raw, false, ld, true);
        scatter_cols(&mut z, n, d, &self.transform, &tr);
        scatter_cols(&mut z, n, d, &self.identity, &id);
        Ok(z)
    }
}
