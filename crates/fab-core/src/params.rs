//! Named trainable parameters in a fixed, deterministic order, and gradients aligned with them.
//!
//! candle's `VarMap` iterates in hash order; optimisers, checkpoints and gradient clipping need a
//! stable order and stable names, so models expose a [`ParamSet`] and training code works with
//! [`Grads`] indexed like it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::{Error, Result};

/// An ordered list of named [`Var`]s (names are unique, e.g. `"layers.3.mlp.0.weight"`).
#[derive(Debug, Clone, Default)]
pub struct ParamSet {
    names: Vec<String>,
    vars: Vec<Var>,
}

impl ParamSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter.
    ///
    /// # Errors
    /// If `name` is already used.
    pub fn push(&mut self, name: impl Into<String>, var: Var) -> Result<()> {
        let name = name.into();
        if self.names.contains(&name) {
            return Err(Error::invalid(format!("duplicate parameter name {name}")));
        }
        self.names.push(name);
        self.vars.push(var);
        Ok(())
    }

    /// Creates a `Var` from host values, adds it under `name` and returns it.
    pub fn create(&mut self, name: impl Into<String>, values: Vec<f64>, shape: &[usize], dtype: DType, device: &Device) -> Result<Var> {
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
        let v = Var::from_tensor(&t)?;
        self.push(name, v.clone())?;
        Ok(v)
    }

    /// Appends all parameters of `other`, with `prefix.` prepended to their names.
    pub fn extend_prefixed(&mut self, prefix: &str, other: &ParamSet) -> Result<()> {
        for (n, v) in other.iter() {
            self.push(format!("{prefix}.{n}"), v.clone())?;
        }
        Ok(())
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn num_scalars(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// `(name, var)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.names.iter().map(String::as_str).zip(self.vars.iter())
    }

    /// The parameter names in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The variables in order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.names.iter().position(|n| n == name).map(|i| &self.vars[i])
    }

    /// Snapshot of every parameter as a name → tensor map (copies, safe against later updates).
    pub fn to_tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.iter().map(|(n, v)| Ok((n.to_string(), v.as_tensor().copy()?))).collect()
    }

    /// Saves all parameters to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map = self.to_tensors()?;
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Overwrites every parameter with the tensor of the same name from `tensors`.
    ///
    /// # Errors
    /// If a name is missing or a shape differs (nothing is half-loaded: all checks come first).
    pub fn load_tensors(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (n, v) in self.iter() {
            let t = tensors.get(n).ok_or_else(|| Error::invalid(format!("checkpoint has no parameter {n}")))?;
            if t.dims() != v.dims() {
                return Err(Error::invalid(format!(
                    "parameter {n}: checkpoint shape {:?} differs from model shape {:?}",
                    t.dims(),
                    v.dims()
                )));
            }
        }
        for (n, v) in self.iter() {
            let t = &tensors[n];
            v.set(&t.to_dtype(v.dtype())?.to_device(v.device())?)?;
        }
        Ok(())
    }

    /// Loads parameters saved by [`save`](Self::save).
    pub fn load(&self, path: &Path) -> Result<()> {
        let map = candle_core::safetensors::load(path, &Device::Cpu)?;
        self.load_tensors(&map)
    }

    /// Collects the gradient of every parameter from a candle `GradStore` (missing → `None`).
    pub fn grads_from_store(&self, store: &candle_core::backprop::GradStore) -> Grads {
        Grads(self.vars.iter().map(|v| store.get(v.as_tensor()).cloned()).collect())
    }
}

/// Gradients aligned with a [`ParamSet`]: entry i belongs to parameter i; `None` means zero.
#[derive(Debug, Clone, Default)]
pub struct Grads(pub Vec<Option<Tensor>>);

impl Grads {
    /// All-`None` gradients for `n` parameters.
    pub fn empty(n: usize) -> Self {
        Grads(vec![None; n])
    }

    /// Global L2 norm over all gradients (as `torch.nn.utils.clip_grad_norm_` computes it).
    pub fn global_norm(&self) -> Result<f64> {
        let mut s = 0.0;
        for g in self.0.iter().flatten() {
            s += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
        Ok(s.sqrt())
    }

    /// Scales every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.0.iter_mut().flatten() {
            *g = (&*g * factor)?;
        }
        Ok(())
    }

    /// Adds `other` entry-wise (gradient accumulation).
    pub fn accumulate(&mut self, other: &Grads) -> Result<()> {
        if self.0.len() != other.0.len() {
            return Err(Error::invalid("gradient lists of different lengths"));
        }
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            match (a.as_mut(), b) {
                (Some(x), Some(y)) => *x = (&*x + y)?,
                (None, Some(y)) => *a = Some(y.clone()),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_errors() {
        let mut p = ParamSet::new();
        p.create("a.w", vec![1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F64, &Device::Cpu).unwrap();
        p.create("b", vec![0.5], &[1], DType::F64, &Device::Cpu).unwrap();
        assert!(p.create("b", vec![0.5], &[1], DType::F64, &Device::Cpu).is_err());
        assert_eq!(p.num_scalars(), 5);
        let dir = crate::test_utils::ScratchDir::create("params");
        let f = dir.join("p.safetensors");
        p.save(&f).unwrap();
        p.get("b").unwrap().set(&Tensor::new(&[9.0f64], &Device::Cpu).unwrap()).unwrap();
        p.load(&f).unwrap();
        assert_eq!(p.get("b").unwrap().as_tensor().to_vec1::<f64>().unwrap(), vec![0.5]);
        // A model with a differently shaped parameter refuses the checkpoint.
        let mut q = ParamSet::new();
        q.create("a.w", vec![0.0; 3], &[3], DType::F64, &Device::Cpu).unwrap();
        assert!(q.load(&f).is_err());
    }

    #[test]
    fn grad_norm_and_scale() {
        let g = Tensor::new(&[3.0f64, 4.0], &Device::Cpu).unwrap();
        let mut gr = Grads(vec![Some(g), None]);
        assert!((gr.global_norm().unwrap() - 5.0).abs() < 1e-12);
        gr.scale(0.1).unwrap();
        assert!((gr.global_norm().unwrap() - 0.5).abs() < 1e-12);
    }
}
