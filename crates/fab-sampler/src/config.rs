//! Configuration text shared by every family: TOML with `key=value` overrides on dotted keys,
//! deserialised with errors that name the offending key.

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// The first line of a (possibly multi-line) parser message.
pub fn first_line(s: &str) -> String {
    s.lines().filter(|l| !l.trim().is_empty()).map(str::trim).collect::<Vec<_>>().join(" ")
}

/// Parses TOML text, applies `key=value` overrides (dotted keys, TOML values; a value that does
/// not parse as TOML is taken as a string) and deserialises into `T` (no validation).
///
/// # Errors
/// [`Error::Config`] naming the key for malformed overrides, unknown keys or wrong types.
pub fn parse_with_overrides<T: DeserializeOwned>(text: &str, overrides: &[String]) -> Result<T> {
    let mut value: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config(first_line(&e.to_string())))?;
    for ov in overrides {
        let (key, raw) = ov.split_once('=').ok_or_else(|| Error::Config(format!("override `{ov}` is not of the form key=value")))?;
        let key = key.trim();
        let parsed: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").expect("parsed key"),
            Err(_) => toml::Value::String(raw.to_string()),
        };
        set_dotted(&mut value, key, parsed)?;
    }
    serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
        let path = e.path().to_string();
        let msg = first_line(&e.into_inner().to_string());
        if path.is_empty() || path == "." {
            Error::Config(msg)
        } else {
            Error::Config(format!("{path}: {msg}"))
        }
    })
}

/// The key of a `key=value` override (trimmed; the whole text when there is no `=`).
pub fn override_key(ov: &str) -> &str {
    ov.split_once('=').map_or(ov, |(k, _)| k).trim()
}

/// Checks the run limits a family's `[train]` section carries: `train.checkpoint_minutes` and
/// `train.time_limit_hours`, when set, must be positive finite numbers.
///
/// # Errors
/// [`Error::Config`] naming the key.
pub fn check_run_limits(checkpoint_minutes: Option<f64>, time_limit_hours: Option<f64>) -> Result<()> {
    for (key, v) in [("train.checkpoint_minutes", checkpoint_minutes), ("train.time_limit_hours", time_limit_hours)] {
        if let Some(v) = v {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::Config(format!("{key} = {v}: must be a positive number")));
            }
        }
    }
    Ok(())
}

/// The run-level keys of a family's `[train]` and `[eval]` sections that `fab train --resume`
/// may change, for a family whose `[train]` section carries the driver's settings under these
/// names: the length, the time limit, the checkpoint intervals and retention, and plotting.
pub const RESUME_SAFE_RUN_KEYS: &[&str] = &[
    "train.n_iterations",
    "train.time_limit_hours",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.checkpoint_keep_last",
    "train.checkpoint_keep_every",
    "eval.plots",
];

/// Checks `train.checkpoint_keep_every`, which only means something beside a
/// `train.checkpoint_keep_last` (with 0 every checkpoint is kept anyway).
///
/// # Errors
/// [`Error::Config`] naming both keys.
pub fn check_keep_checkpoints(keep: crate::KeepCheckpoints) -> Result<()> {
    if keep.every > 0 && keep.last == 0 {
        return Err(Error::Config(format!(
            "train.checkpoint_keep_every = {} needs train.checkpoint_keep_last ≥ 1 (0 keeps every checkpoint already)",
            keep.every
        )));
    }
    Ok(())
}

/// Sets `table[a][b]…[z] = value` for the dotted key `a.b.….z`, creating tables on the way.
fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Config(format!("override key `{key}` is malformed")));
    }
    let mut cur = table;
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur.insert(p.to_string(), value);
            return Ok(());
        }
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| Error::Config(format!("override `{key}`: `{p}` is not a table")))?;
    }
    Ok(())
}
