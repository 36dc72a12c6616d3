//! Minimal reader and writer for NumPy `.npy` files (version 1.0/2.0, little-endian
//! `<f2`/`<f4`/`<f8`, C order; `<i8` for writing integer samples), so samples can be exchanged with Python tools without extra dependencies.

use std::io::{Read, Write};
use std::path::Path;

use crate::{Error, Result};

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

/// Writes a C-order f64 array of `shape` as `<f8`.
pub fn write_f64(path: &Path, data: &[f64], shape: &[usize]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, "<f8", &bytes, shape, data.len())
}

/// Writes a C-order f32 array of `shape` as `<f4`.
pub fn write_f32(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, "<f4", &bytes, shape, data.len())
}

/// Writes a C-order array of `shape` as IEEE half precision `<f2` (each value rounded to the
/// nearest f16; 11 significant bits, so relative error ≤ 2⁻¹¹, and |x| ≤ 65504), for compact
/// data files.
///
/// # Errors
/// A value outside the finite f16 range, or a shape that does not match.
pub fn write_f16(path: &Path, data: &[f64], shape: &[usize]) -> Result<()> {
    if let Some(bad) = data.iter().find(|v| v.is_finite() && v.abs() > f64::from(half::f16::MAX)) {
        return Err(Error::invalid(format!("npy: {bad} does not fit in float16")));
    }
    let bytes: Vec<u8> = data.iter().flat_map(|v| half::f16::from_f64(*v).to_le_bytes()).collect();
    write_raw(path, "<f2", &bytes, shape, data.len())
}

/// Writes a C-order i64 array of `shape` as `<i8` (e.g. discrete samples).
pub fn write_i64(path: &Path, data: &[i64], shape: &[usize]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, "<i8", &bytes, shape, data.len())
}

fn write_raw(path: &Path, descr: &str, bytes: &[u8], shape: &[usize], len: usize) -> Result<()> {
    if shape.iter().product::<usize>() != len {
        return Err(Error::invalid(format!("npy: shape {shape:?} does not match {len} elements")));
    }
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    let mut out = header(descr, shape);
    out.extend_from_slice(bytes);
    f.write_all(&out).map_err(|e| io_err(path, e))
}

/// The magic, version and padded header of a C-order array of `shape`.
fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_str = match shape {
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_str}, }}");
    // Pad so that magic(6) + version(2) + len(2) + header is a multiple of 64, ending in '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Writes a C-order array of known shape in chunks (e.g. samples streamed as they are drawn):
/// the header first, then the data as it comes; [`finish`](Self::finish) checks the count.
#[derive(Debug)]
pub struct NpyWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
    expected: usize,
    written: usize,
}

impl NpyWriter {
    /// Creates `path` for an array of `shape` with element type `descr` (`"<f8"` or `"<i8"`).
    ///
    /// # Errors
    /// I/O errors naming the file; an unsupported `descr`.
    pub fn create(path: &Path, descr: &str, shape: &[usize]) -> Result<Self> {
        if !matches!(descr, "<f8" | "<i8") {
            return Err(Error::invalid(format!("npy: streaming supports <f8 and <i8, not {descr}")));
        }
        let f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
        let mut file = std::io::BufWriter::new(f);
        file.write_all(&header(descr, shape)).map_err(|e| io_err(path, e))?;
        Ok(Self { file, path: path.to_path_buf(), expected: shape.iter().product(), written: 0 })
    }

    /// Appends f64 elements (for a `<f8` array).
    pub fn write_f64(&mut self, data: &[f64]) -> Result<()> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.append(&bytes, data.len())
    }

    /// Appends i64 elements (for an `<i8` array).
    pub fn write_i64(&mut self, data: &[i64]) -> Result<()> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.append(&bytes, data.len())
    }

    fn append(&mut self, bytes: &[u8], n: usize) -> Result<()> {
        if self.written + n > self.expected {
            return Err(Error::invalid(format!("npy: {} elements written to an array of {}", self.written + n, self.expected)));
        }
        self.file.write_all(bytes).map_err(|e| io_err(&self.path, e))?;
        self.written += n;
        Ok(())
    }

    /// Flushes and checks that the whole array was written.
    ///
    /// # Errors
    /// A short array; I/O errors.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.expected {
            return Err(Error::invalid(format!("npy: {} of {} elements written", self.written, self.expected)));
        }
        self.file.flush().map_err(|e| io_err(&self.path, e))
    }
}

/// Reads a C-order `<f8`, `<f4` or `<f2` array as f64, returning `(data, shape)`.
///
/// # Errors
/// [`Error::InvalidArgument`] for anything else (big-endian, Fortran order, other dtypes).
pub fn read_f64(path: &Path) -> Result<(Vec<f64>, Vec<usize>)> {
    let mut buf = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(|e| io_err(path, e))?;
    let bad = |m: &str| Error::invalid(format!("{}: not a supported .npy file ({m})", path.display()));
    if buf.len() < 10 || &buf[..6] != b"\x93NUMPY" {
        return Err(bad("missing magic"));
    }
    let (hlen, start) = match buf[6] {
        1 => (u16::from_le_bytes([buf[8], buf[9]]) as usize, 10),
        2 | 3 => {
            if buf.len() < 12 {
                return Err(bad("truncated header"));
            }
            (u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize, 12)
        }
        _ => return Err(bad("unknown version")),
    };
    let header = std::str::from_utf8(buf.get(start..start + hlen).ok_or_else(|| bad("truncated header"))?)
        .map_err(|_| bad("header is not utf-8"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order"));
    }
    let descr = if header.contains("'<f8'") {
        8
    } else if header.contains("'<f4'") {
        4
    } else if header.contains("'<f2'") {
        2
    } else {
        return Err(bad("dtype must be <f8, <f4 or <f2"));
    };
    let shape_part = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = shape_part
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let n: usize = shape.iter().product();
    let body = &buf[start + hlen..];
    if body.len() < n * descr {
        return Err(bad("truncated data"));
    }
    let data = match descr {
        8 => body.chunks_exact(8).take(n).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
        4 => body.chunks_exact(4).take(n).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64).collect(),
        _ => body.chunks_exact(2).take(n).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
    };
    Ok((data, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_f64_and_f32() {
        let dir = crate::test_utils::ScratchDir::create("npy");
        let p = dir.join("a.npy");
        let data: Vec<f64> = (0..6).map(|i| i as f64 * 0.5 - 1.0).collect();
        write_f64(&p, &data, &[2, 3]).unwrap();
        let raw = std::fs::read(&p).unwrap();
        // Header length keeps the data 64-byte aligned, as NumPy requires.
        assert_eq!((raw.len() - 48) % 64, 0);
        assert_eq!(read_f64(&p).unwrap(), (data.clone(), vec![2, 3]));
        let p32 = dir.join("b.npy");
        let d32: Vec<f32> = data.iter().map(|v| *v as f32).collect();
        write_f32(&p32, &d32, &[6]).unwrap();
        assert_eq!(read_f64(&p32).unwrap(), (data, vec![6]));
        assert!(write_f64(&p, &[1.0], &[2]).is_err());
        // Half precision: exact for small dyadic values, nearest-even rounding otherwise
        // (0.1 → 0.0999755859375, π → 3.140625), refused beyond 65504.
        let p16 = dir.join("c.npy");
        write_f16(&p16, &[0.5, -1.25, 0.1, std::f64::consts::PI, f64::NAN], &[5]).unwrap();
        let (v, shape) = read_f64(&p16).unwrap();
        assert_eq!((&v[..4], shape), (&[0.5, -1.25, 0.0999755859375, 3.140625][..], vec![5]));
        assert!(v[4].is_nan());
        assert!(std::str::from_utf8(&std::fs::read(&p16).unwrap()[10..60]).unwrap().contains("'<f2'"));
        assert!(write_f16(&p16, &[7e4], &[1]).is_err());
        std::fs::write(&p, b"not npy").unwrap();
        assert!(read_f64(&p).is_err());
    }
}
