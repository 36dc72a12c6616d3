//! The floating-point precision a configuration names (`"f64"` or `"f32"`).

use serde::{Deserialize, Serialize};

/// Floating-point precision of a model and its computations, as written in configs
/// (`precision = "f64"`, `dtype = "f32"`). The default is f64 (every FAB paper config); a family
/// whose configs default to f32 says so in its own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// float64.
    #[default]
    F64,
    /// float32.
    F32,
}

impl Precision {
    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F64 => candle_core::DType::F64,
            Precision::F32 => candle_core::DType::F32,
        }
    }
}
