//! The two evaluation paths of the analytic targets (GMM, Many Well): f64 on the host for
//! points on the CPU, candle ops on any other device.

use candle_core::{Device, Tensor};
use fab_core::check_points;

use crate::Result;

/// An analytic log-density with a host path and a candle path that agree to rounding.
pub(crate) trait TwoPaths {
    /// Coordinates per point.
    fn point_dim(&self) -> usize;

    /// log p of the `n` rows of `xs` (row-major f64) and, with `grad`, ∇ log p (`n · d`
    /// entries; empty without `grad`).
    fn host_rows(&self, xs: &[f64], n: usize, grad: bool) -> (Vec<f64>, Vec<f64>);

    /// The same with candle ops, in `x`'s dtype and on its device.
    fn eval_candle(&self, x: &Tensor, grad: bool) -> Result<(Tensor, Option<Tensor>)>;

    /// [`TwoPaths::host_rows`] on `x`, returned in `x`'s dtype and on its device.
    fn eval_host(&self, x: &Tensor, grad: bool) -> Result<(Tensor, Option<Tensor>)> {
        let d = self.point_dim();
        let n = check_points(x, d)?;
        let (lp, g) = self.host_rows(&fab_core::to_f64_vec(x)?, n, grad);
        let like_x = |t: Tensor| t.to_dtype(x.dtype())?.to_device(x.device());
        let lp = like_x(Tensor::from_vec(lp, n, &Device::Cpu)?)?;
        let g = if grad { Some(like_x(Tensor::from_vec(g, (n, d), &Device::Cpu)?)?) } else { None };
        Ok((lp, g))
    }

    /// The host path for points on the CPU, the candle path elsewhere.
    fn eval(&self, x: &Tensor, grad: bool) -> Result<(Tensor, Option<Tensor>)> {
        check_points(x, self.point_dim())?;
        if x.device().is_cpu() {
            self.eval_host(x, grad)
        } else {
            self.eval_candle(x, grad)
        }
    }
}
