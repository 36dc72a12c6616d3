//! Which targets evaluate beside a GPU flow (candle ops on the points' device) and which stay
//! on the host, and that routing them through `OnDevice::for_points_on` changes no value.

use candle_core::{DType, Device, Tensor};
use fab_core::{LogDensity, OnDevice};
use fab_targets::TargetConfig;

fn target(text: &str) -> std::sync::Arc<dyn fab_sampler::Target> {
    let cfg: TargetConfig = toml::from_str(text).unwrap();
    cfg.build(DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn mixtures_and_many_well_run_on_the_points_device_the_molecule_on_the_host() {
    for (text, agnostic) in
        [("type = \"gmm\"", true), ("type = \"gmm25\"", true), ("type = \"many_well\"\ndim = 8", true), ("type = \"aldp\"", false)]
    {
        let t = target(text);
        let d = t.density();
        assert_eq!(d.device_agnostic(), agnostic, "{text}");
        // The routing picks the points' device for device-agnostic targets, the host otherwise
        // (on a CPU-only machine both are the host: nothing may change).
        let on = OnDevice::for_points_on(d, &Device::Cpu);
        assert!(on.device().is_cpu());
        let x = Tensor::randn(0.0f64, 1.0, (5, d.dim()), &Device::Cpu).unwrap();
        let a = d.log_prob(&x).unwrap().to_vec1::<f64>().unwrap();
        let b = on.log_prob(&x).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{text}");
    }
    // Wrappers forward the capability.
    let t = target("type = \"gmm\"");
    let boxed: Box<&dyn LogDensity> = Box::new(t.density());
    assert!(boxed.device_agnostic());
    let closure = fab_core::FnDensity::new(2, |x: &Tensor| x.sqr()?.sum(1)? * -0.5);
    assert!(!closure.device_agnostic());
}
