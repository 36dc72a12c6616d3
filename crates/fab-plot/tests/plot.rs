//! Tests of `fab_plot`: the pure parts (colormap, histogram binning, marching squares,
//! grid interpolation) on hand-made data, and every figure function end to end: the PNG it
//! writes is decoded (with the small decoder below) and checked for size, a white background
//! and non-trivial content; empty and non-finite inputs must not panic.
//!
//! `cargo test --release -p fab-plot --test plot -- --ignored render_examples` writes one
//! example of each figure to `/tmp/plot_examples` (or `$FAB_PLOT_EXAMPLES`) for looking at.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use fab_plot::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

// ---------------------------------------------------------------------------------------------
// A minimal PNG reader (8-bit RGB/RGBA, non-interlaced) with its own inflate.
// ---------------------------------------------------------------------------------------------

mod png {
    /// A decoded image, pixels row by row.
    pub struct Image {
        pub width: u32,
        pub height: u32,
        pub pixels: Vec<[u8; 3]>,
    }

    impl Image {
        pub fn at(&self, x: u32, y: u32) -> [u8; 3] {
            self.pixels[(y * self.width + x) as usize]
        }
    }

    struct Bits<'a> {
        data: &'a [u8],
        pos: usize,
        buf: u64,
        count: u32,
    }

    impl Bits<'_> {
        fn take(&mut self, n: u32) -> u32 {
            while self.count < n {
                let byte = *self.data.get(self.pos).expect("deflate stream truncated");
                self.pos += 1;
                self.buf |= (byte as u64) << self.count;
                self.count += 8;
            }
            let v = (self.buf & ((1u64 << n) - 1)) as u32;
            self.buf >>= n;
            self.count -= n;
            v
        }

        /// Drop the bits left of the current byte (fewer than 8 are ever buffered).
        fn align(&mut self) {
            self.buf = 0;
            self.count = 0;
        }
    }

    /// A canonical Huffman code: number of codes per length and symbols ordered by code.
    struct Huffman {
        counts: [u16; 16],
        symbols: Vec<u16>,
    }

    impl Huffman {
        fn new(lengths: &[u8]) -> Self {
            let mut counts = [0u16; 16];
            for &l in lengths {
                counts[l as usize] += 1;
            }
            counts[0] = 0;
            let mut offsets = [0usize; 16];
            for len in 1..15 {
                offsets[len + 1] = offsets[len] + counts[len] as usize;
            }
            let mut symbols = vec![0u16; lengths.len()];
            for (sym, &l) in lengths.iter().enumerate() {
                if l > 0 {
                    symbols[offsets[l as usize]] = sym as u16;
                    offsets[l as usize] += 1;
                }
            }
            Self { counts, symbols }
        }

        fn decode(&self, bits: &mut Bits<'_>) -> usize {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for len in 1..16 {
                code |= bits.take(1) as i32;
                let count = self.counts[len] as i32;
                if code - first < count {
                    return self.symbols[(index + code - first) as usize] as usize;
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            panic!("invalid Huffman code");
        }
    }

    const LEN_BASE: [usize; 29] =
        [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
    const LEN_EXTRA: [u32; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
    const DIST_BASE: [usize; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289,
        16385, 24577,
    ];
    const DIST_EXTRA: [u32; 30] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
    const CL_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

    fn inflate_block(bits: &mut Bits<'_>, out: &mut Vec<u8>, lit: &Huffman, dist: &Huffman) {
        loop {
            let sym = lit.decode(bits);
            match sym {
                0..=255 => out.push(sym as u8),
                256 => return,
                _ => {
                    let i = sym - 257;
                    let len = LEN_BASE[i] + bits.take(LEN_EXTRA[i]) as usize;
                    let d = dist.decode(bits);
                    let back = DIST_BASE[d] + bits.take(DIST_EXTRA[d]) as usize;
                    let start = out.len() - back;
                    for k in 0..len {
                        out.push(out[start + k]);
                    }
                }
            }
        }
    }

    /// Inflate a raw deflate stream.
    pub fn inflate(data: &[u8]) -> Vec<u8> {
        let mut bits = Bits { data, pos: 0, buf: 0, count: 0 };
        let mut out = Vec::new();
        loop {
            let last = bits.take(1);
            match bits.take(2) {
                0 => {
                    bits.align();
                    let p = bits.pos;
                    let len = u16::from_le_bytes([data[p], data[p + 1]]) as usize;
                    out.extend_from_slice(&data[p + 4..p + 4 + len]);
                    bits.pos = p + 4 + len;
                }
                1 => {
                    let mut lengths = [0u8; 288];
                    lengths[..144].fill(8);
                    lengths[144..256].fill(9);
                    lengths[256..280].fill(7);
                    lengths[280..].fill(8);
                    let lit = Huffman::new(&lengths);
                    let dist = Huffman::new(&[5u8; 30]);
                    inflate_block(&mut bits, &mut out, &lit, &dist);
                }
                2 => {
                    let hlit = bits.take(5) as usize + 257;
                    let hdist = bits.take(5) as usize + 1;
                    let hclen = bits.take(4) as usize + 4;
                    let mut cl = [0u8; 19];
                    for &i in CL_ORDER.iter().take(hclen) {
                        cl[i] = bits.take(3) as u8;
                    }
                    let cl = Huffman::new(&cl);
                    let mut lengths = Vec::with_capacity(hlit + hdist);
                    while lengths.len() < hlit + hdist {
                        match cl.decode(&mut bits) {
                            s @ 0..=15 => lengths.push(s as u8),
                            16 => {
                                let prev = *lengths.last().expect("repeat without a previous length");
                                for _ in 0..3 + bits.take(2) {
                                    lengths.push(prev);
                                }
                            }
                            17 => lengths.extend(std::iter::repeat_n(0, 3 + bits.take(3) as usize)),
                            _ => lengths.extend(std::iter::repeat_n(0, 11 + bits.take(7) as usize)),
                        }
                    }
                    let lit = Huffman::new(&lengths[..hlit]);
                    let dist = Huffman::new(&lengths[hlit..]);
                    inflate_block(&mut bits, &mut out, &lit, &dist);
                }
                _ => panic!("invalid deflate block type"),
            }
            if last == 1 {
                return out;
            }
        }
    }

    pub const SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];

    /// Width and height from the IHDR chunk.
    pub fn header_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(bytes[..8], SIGNATURE, "not a PNG");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |o: usize| u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        (be(16), be(20))
    }

    pub fn decode(bytes: &[u8]) -> Image {
        assert_eq!(bytes[..8], SIGNATURE, "not a PNG");
        let mut pos = 8;
        let (mut width, mut height, mut channels) = (0u32, 0u32, 0usize);
        let mut idat = Vec::new();
        while pos + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &bytes[pos + 4..pos + 8];
            let body = &bytes[pos + 8..pos + 8 + len];
            match kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(body[0..4].try_into().unwrap());
                    height = u32::from_be_bytes(body[4..8].try_into().unwrap());
                    assert_eq!(body[8], 8, "bit depth");
                    channels = match body[9] {
                        2 => 3,
                        6 => 4,
                        t => panic!("unsupported colour type {t}"),
                    };
                    assert_eq!(body[12], 0, "interlaced PNG");
                }
                b"IDAT" => idat.extend_from_slice(body),
                b"IEND" => break,
                _ => {}
            }
            pos += 12 + len;
        }
        assert_eq!(idat[0] & 0x0f, 8, "zlib stream is not deflate");
        let raw = inflate(&idat[2..]);
        let stride = width as usize * channels;
        assert_eq!(raw.len(), (stride + 1) * height as usize, "decompressed size");
        let mut prev = vec![0u8; stride];
        let mut pixels = Vec::with_capacity((width * height) as usize);
        for row in raw.chunks(stride + 1) {
            let filter = row[0];
            let mut cur = row[1..].to_vec();
            for i in 0..stride {
                let a = if i >= channels { cur[i - channels] as i32 } else { 0 };
                let b = prev[i] as i32;
                let c = if i >= channels { prev[i - channels] as i32 } else { 0 };
                let pred = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => {
                        let p = a + b - c;
                        let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                        if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        }
                    }
                    f => panic!("invalid filter {f}"),
                };
                cur[i] = cur[i].wrapping_add(pred as u8);
            }
            pixels.extend(cur.chunks(channels).map(|p| [p[0], p[1], p[2]]));
            prev = cur;
        }
        Image { width, height, pixels }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fab-plot-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Remove a test's directory once it passed (a failing test leaves its files for inspection).
fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// Decode the PNG at `path`, check its size, a white border pixel and non-trivial content.
fn check_png(path: &Path, size: (u32, u32)) -> png::Image {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(png::header_size(&bytes), size, "{}", path.display());
    let img = png::decode(&bytes);
    assert_eq!((img.width, img.height), size);
    assert_eq!(img.at(0, 0), [255, 255, 255], "white background");
    assert_eq!(img.at(size.0 - 1, size.1 - 1), [255, 255, 255], "white background");
    let mut colours: Vec<[u8; 3]> = img.pixels.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 20, "{}: only {} distinct colours", path.display(), colours.len());
    let ink = img.pixels.iter().filter(|p| **p != [255, 255, 255]).count();
    assert!(ink * 100 > img.pixels.len(), "{}: almost blank ({ink} non-white pixels)", path.display());
    img
}

/// Count pixels whose colour is close to `c`.
fn count_near(img: &png::Image, c: [u8; 3], tol: i32) -> usize {
    img.pixels.iter().filter(|p| (0..3).all(|k| (p[k] as i32 - c[k] as i32).abs() <= tol)).count()
}

fn gmm_means() -> Vec<[f64; 2]> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..40).map(|_| [rng.random_range(-40.0..40.0), rng.random_range(-40.0..40.0)]).collect()
}

fn gmm_log_density(means: &[[f64; 2]]) -> impl Fn(f64, f64) -> f64 + '_ {
    move |x, y| {
        let terms: Vec<f64> = means.iter().map(|m| -0.5 * ((x - m[0]).powi(2) + (y - m[1]).powi(2)) - (2.0 * PI).ln()).collect();
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln() - (means.len() as f64).ln()
    }
}

fn gmm_samples(means: &[[f64; 2]], n: usize, modes: usize, seed: u64) -> Vec<[f64; 2]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).unwrap();
    (0..n)
        .map(|_| {
            let m = means[rng.random_range(0..modes.min(means.len()))];
            [m[0] + normal.sample(&mut rng), m[1] + normal.sample(&mut rng)]
        })
        .collect()
}

/// Many Well: independent double wells on pairs (x_{2i}, x_{2i+1}) with
/// log p(a, b) = −a⁴ + 6a² + a/2 − b²/2 (unnormalised).
fn well_1d(d: usize, v: f64) -> f64 {
    if d.is_multiple_of(2) {
        -v.powi(4) + 6.0 * v * v + 0.5 * v
    } else {
        -0.5 * v * v
    }
}

fn many_well_marginal(i: usize, j: usize, a: f64, b: f64) -> f64 {
    well_1d(i, a) + well_1d(j, b)
}

/// Exact Many Well samples: the quartic coordinate by inverse CDF on a fine grid.
fn many_well_samples(n: usize, dim: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let grid: Vec<f64> = (0..4001).map(|i| -4.0 + 8.0 * i as f64 / 4000.0).collect();
    let dens: Vec<f64> = grid.iter().map(|&v| well_1d(0, v).exp()).collect();
    let mut cdf = vec![0.0; grid.len()];
    for i in 1..grid.len() {
        cdf[i] = cdf[i - 1] + 0.5 * (dens[i] + dens[i - 1]);
    }
    let total = cdf[cdf.len() - 1];
    (0..n)
        .map(|_| {
            (0..dim)
                .map(|d| {
                    if d % 2 == 0 {
                        let u = rng.random::<f64>() * total;
                        grid[cdf.partition_point(|&c| c < u).min(grid.len() - 1)]
                    } else {
                        normal.sample(&mut rng)
                    }
                })
                .collect()
        })
        .collect()
}

/// Synthetic alanine-dipeptide-like dihedrals: C7eq, αR and a small C7ax basin.
fn dihedrals(n: usize, seed: u64, c7ax_share: f64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let wrap = |a: f64| (a + PI).rem_euclid(2.0 * PI) - PI;
    let mut phi = Vec::with_capacity(n);
    let mut psi = Vec::with_capacity(n);
    for _ in 0..n {
        let u: f64 = rng.random();
        let (c, s) = if u < c7ax_share {
            ([1.2, -0.9], [0.25, 0.3])
        } else if u < 0.6 {
            ([-1.5, 2.6], [0.35, 0.4])
        } else {
            ([-1.3, -0.5], [0.3, 0.3])
        };
        phi.push(wrap(c[0] + s[0] * normal.sample(&mut rng)));
        psi.push(wrap(c[1] + s[1] * normal.sample(&mut rng)));
    }
    (phi, psi)
}

fn curve_panels() -> Vec<CurvePanel> {
    let it: Vec<f64> = (0..500).map(|i| (i * 10) as f64).collect();
    let loss: Vec<f64> = it
        .iter()
        .enumerate()
        .map(|(i, &t)| if (200..215).contains(&i) { f64::NAN } else { 50.0 * (-t / 1500.0).exp() + 2.0 + (t * 0.37).sin() })
        .collect();
    let ess_flow: Vec<f64> = it.iter().map(|&t| 0.9 * (1.0 - (-t / 1200.0).exp()) + 0.02 * (t * 0.11).cos()).collect();
    let ess_ais: Vec<f64> = it.iter().map(|&t| 0.98 * (1.0 - (-t / 600.0).exp()) + 0.01 * (t * 0.05).sin()).collect();
    let mut log_q: Vec<f64> = it.iter().map(|&t| -120.0 + 100.0 * (1.0 - (-t / 2000.0).exp())).collect();
    log_q[3] = f64::INFINITY;
    let grad: Vec<f64> = it.iter().map(|&t| 1e3 * (-t / 800.0).exp() + 0.05).collect();
    vec![
        CurvePanel::single("loss", it.clone(), loss, false).with_y_label("FAB loss"),
        CurvePanel::multi(
            "effective sample size",
            vec![Series::new("flow", it.clone(), ess_flow), Series::new("AIS", it.clone(), ess_ais)],
            false,
        )
        .with_y_label("ESS / n"),
        CurvePanel::single("log q (test set)", it.clone(), log_q, false).with_y_label("mean log q"),
        CurvePanel::single("gradient norm", it, grad, true).with_y_label("‖g‖"),
    ]
}

/// The hypergrid reward of the GFlowNet papers on an `h × h` grid, normalised to a
/// distribution, row-major (`[i * h + j]`).
fn hypergrid_distribution(h: usize) -> Vec<f64> {
    let band = |k: usize| (k as f64 / (h - 1) as f64 - 0.5).abs();
    let mut p: Vec<f64> = (0..h * h)
        .map(|idx| {
            let (a, b) = (band(idx / h), band(idx % h));
            let outer = (a > 0.25 && a <= 0.5 && b > 0.25 && b <= 0.5) as u8 as f64;
            let inner = (a > 0.3 && a < 0.4 && b > 0.3 && b < 0.4) as u8 as f64;
            1e-3 + 0.5 * outer + 2.0 * inner
        })
        .collect();
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= total);
    p
}

/// The three panels of a GFlowNet figure: target, a student that found three of the four modes
/// and a teacher that over-explores (flatter), all on an `h × h` grid.
fn gflownet_panels(h: usize) -> Vec<HeatPanel> {
    let target = hypergrid_distribution(h);
    let mut student = target.clone();
    for (idx, v) in student.iter_mut().enumerate() {
        let (i, j) = (idx / h, idx % h);
        if i > h / 2 && j > h / 2 {
            *v *= 1e-4;
        } else if (i + j) % 7 == 0 {
            *v *= 0.6;
        }
    }
    let teacher: Vec<f64> = target.iter().map(|v| v.sqrt()).collect();
    let normalise = |mut p: Vec<f64>| {
        let t: f64 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= t);
        p
    };
    vec![
        HeatPanel::new("target", h, h, target),
        HeatPanel::new("student", h, h, normalise(student)),
        HeatPanel::new("teacher", h, h, normalise(teacher)),
    ]
}

/// Bounding box `(x_min, x_max, y_min, y_max)` of the pixels of colour `c` left of column
/// `x_end`, and their number.
fn bbox_of(img: &png::Image, c: [u8; 3], x_end: u32) -> Option<((u32, u32, u32, u32), usize)> {
    let hits: Vec<(u32, u32)> =
        (0..img.height).flat_map(|y| (0..x_end.min(img.width)).map(move |x| (x, y))).filter(|&(x, y)| img.at(x, y) == c).collect();
    let x_min = hits.iter().map(|p| p.0).min()?;
    let x_max = hits.iter().map(|p| p.0).max()?;
    let y_min = hits.iter().map(|p| p.1).min()?;
    let y_max = hits.iter().map(|p| p.1).max()?;
    Some(((x_min, x_max, y_min, y_max), hits.len()))
}

// ---------------------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------------------

#[test]
fn viridis_endpoints_clamping_and_increasing_lightness() {
    assert_eq!(viridis(0.0), [68, 1, 84]);
    assert_eq!(viridis(1.0), [253, 231, 37]);
    assert_eq!(viridis(-3.0), viridis(0.0));
    assert_eq!(viridis(7.0), viridis(1.0));
    assert_eq!(viridis(f64::NAN), viridis(0.0));
    let luminance = |c: [u8; 3]| 0.2126 * c[0] as f64 + 0.7152 * c[1] as f64 + 0.0722 * c[2] as f64;
    let lum: Vec<f64> = (0..=100).map(|i| luminance(viridis(i as f64 / 100.0))).collect();
    assert!(lum.windows(2).all(|w| w[1] > w[0]), "viridis lightness must increase: {lum:?}");
}

#[test]
fn ramachandran_binning_hand_made() {
    // 4 bins per axis on [−π, π]: edges at −π, −π/2, 0, π/2, π.
    let q = PI / 4.0; // bin-centre offsets: −3q, −q, q, 3q are the centres
    let phi = [-PI, PI, 0.0, -q, 3.0 * q, 2.0 * PI + 0.1, -PI - 0.1, f64::NAN, 0.5, 0.5];
    let psi = [-PI, PI, 0.0, 3.0 * q, -3.0 * q, 0.1, 0.1, 0.0, f64::INFINITY, 0.5];
    // Unweighted.
    let h = ramachandran_histogram(&phi, &psi, None, 4).unwrap();
    assert_eq!(h.bins, [4, 4]);
    assert_eq!(h.count(0, 0), 1.0, "(−π, −π) falls in the first bin");
    assert_eq!(h.count(3, 3), 1.0, "(π, π) falls in the last bin");
    assert_eq!(h.count(2, 2), 3.0, "(0, 0), wrapped (2π + 0.1, 0.1) and (0.5, 0.5)");
    assert_eq!(h.count(1, 3), 1.0);
    assert_eq!(h.count(3, 0), 1.0);
    assert_eq!(h.count(3, 2), 1.0, "−π − 0.1 wraps to π − 0.1");
    assert_eq!(h.dropped, 2, "NaN φ and infinite ψ are dropped");
    assert_eq!(h.total, 8.0);
    assert_eq!(h.counts.iter().sum::<f64>(), 8.0);
    let integral: f64 = h.densities().iter().sum::<f64>() * h.bin_area();
    assert!((integral - 1.0).abs() < 1e-12);
    assert!((h.bin_area() - (PI / 2.0).powi(2)).abs() < 1e-12);

    // Weighted: negative and non-finite weights drop the point.
    let w = [1.0, 2.0, 0.5, 4.0, -1.0, 0.25, f64::NAN, 1.0, 1.0, 0.0];
    let h = ramachandran_histogram(&phi, &psi, Some(&w), 4).unwrap();
    assert_eq!(h.count(0, 0), 1.0);
    assert_eq!(h.count(3, 3), 2.0);
    assert_eq!(h.count(2, 2), 0.75);
    assert_eq!(h.count(1, 3), 4.0);
    assert_eq!(h.count(3, 0), 0.0);
    assert_eq!(h.count(3, 2), 0.0);
    assert_eq!(h.dropped, 4);
    assert_eq!(h.total, 7.75);
    let d = h.densities();
    assert!((d[4 + 3] - 4.0 / (7.75 * h.bin_area())).abs() < 1e-12, "density layout is ix * ny + iy");

    // Errors.
    assert!(matches!(ramachandran_histogram(&phi, &psi[..3], None, 4), Err(PlotError::InvalidInput(_))));
    assert!(matches!(ramachandran_histogram(&phi, &psi, Some(&w[..2]), 4), Err(PlotError::InvalidInput(_))));
    assert!(matches!(ramachandran_histogram(&phi, &psi, None, 0), Err(PlotError::InvalidInput(_))));
    assert!(matches!(ramachandran_histogram(&phi, &psi, None, 5000), Err(PlotError::InvalidInput(_))));
    // Empty input is fine.
    let empty = ramachandran_histogram(&[], &[], None, 8).unwrap();
    assert_eq!(empty.total, 0.0);
    assert!(empty.densities().iter().all(|&v| v == 0.0));
}

#[test]
fn histogram_2d_non_square_layout() {
    let h = histogram_2d(&[0.1, 2.9, 2.9], &[0.9, 0.1, 0.6], None, [0.0, 3.0], [0.0, 1.0], [3, 2]).unwrap();
    assert_eq!(h.counts, vec![0.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    assert_eq!(h.bin_of(3.0, 1.0), Some((2, 1)));
    assert_eq!(h.bin_of(3.0001, 0.5), None);
}

#[test]
fn histogram_1d_binning() {
    let v = [0.0, 0.25, 0.5, 1.0, 1.5, -0.1, f64::NAN, 0.2];
    let h = histogram_1d(&v, None, [0.0, 1.0], 4).unwrap();
    assert_eq!(h.counts, vec![2.0, 1.0, 1.0, 1.0]);
    assert_eq!(h.dropped, 3);
    assert_eq!(h.edges(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, -1.0];
    let h = histogram_1d(&v, Some(&w), [0.0, 1.0], 4).unwrap();
    assert_eq!(h.counts, vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(h.total, 10.0);
    assert_eq!(h.dropped, 4);
    assert_eq!(h.densities(), vec![0.4, 0.8, 1.2, 1.6]);
    assert!(histogram_1d(&v, None, [1.0, 1.0], 4).is_err());
    assert!(histogram_1d(&v, None, [0.0, f64::NAN], 4).is_err());
    assert!(histogram_1d(&v, Some(&w[..3]), [0.0, 1.0], 4).is_err());
}

#[test]
fn wrap_angle_maps_into_minus_pi_pi() {
    assert_eq!(wrap_angle(PI), PI);
    assert_eq!(wrap_angle(-PI), -PI);
    assert_eq!(wrap_angle(0.3), 0.3);
    assert!((wrap_angle(2.0 * PI + 0.3) - 0.3).abs() < 1e-12);
    assert!((wrap_angle(-PI - 0.3) - (PI - 0.3)).abs() < 1e-12);
    assert!(wrap_angle(f64::NAN).is_nan());
}

#[test]
fn marching_squares_traces_a_circle() {
    let f = |x: f64, y: f64| x * x + y * y;
    let grid = ScalarGrid::evaluate(&f, [-2.0, 2.0], [-2.0, 2.0], 81, 81);
    let segs = marching_squares(&grid, 1.0);
    assert!(segs.len() > 100, "{} segments", segs.len());
    for s in &segs {
        for p in s {
            let r = (p[0] * p[0] + p[1] * p[1]).sqrt();
            assert!((r - 1.0).abs() < 5e-3, "point {p:?} at radius {r}");
        }
    }
    let length: f64 = segs.iter().map(|s| ((s[1][0] - s[0][0]).powi(2) + (s[1][1] - s[0][1]).powi(2)).sqrt()).sum();
    assert!((length - 2.0 * PI).abs() < 0.01 * 2.0 * PI, "contour length {length}");
    assert!(marching_squares(&grid, 100.0).is_empty());
    assert!(marching_squares(&grid, f64::NAN).is_empty());
}

#[test]
fn marching_squares_saddle_and_non_finite_cells() {
    // One cell, diagonal corners above: two segments, resolved by the centre value.
    let grid = ScalarGrid { x: vec![0.0, 1.0], y: vec![0.0, 1.0], values: vec![1.0, 0.0, 0.0, 1.0] };
    let segs = marching_squares(&grid, 0.5);
    assert_eq!(segs.len(), 2);
    // Centre (0.5) is not above 0.6: the above corners (0,0) and (1,1) are cut off.
    let segs = marching_squares(&grid, 0.6);
    assert_eq!(segs.len(), 2);
    for s in &segs {
        let mid = [(s[0][0] + s[1][0]) / 2.0, (s[0][1] + s[1][1]) / 2.0];
        let near_ll = mid[0] + mid[1] < 1.0;
        let near_ur = mid[0] + mid[1] > 1.0;
        assert!(near_ll || near_ur);
    }
    let nan = ScalarGrid { x: vec![0.0, 1.0], y: vec![0.0, 1.0], values: vec![1.0, f64::NAN, 0.0, 1.0] };
    assert!(marching_squares(&nan, 0.5).is_empty());
}

#[test]
fn scalar_grid_interpolation_is_exact_for_linear_fields() {
    let f = |x: f64, y: f64| 2.0 * x - 3.0 * y + 1.0;
    let grid = ScalarGrid::evaluate(&f, [-1.0, 2.0], [0.0, 5.0], 7, 11);
    assert_eq!(grid.x.len(), 7);
    assert_eq!(grid.y.len(), 11);
    assert_eq!(grid.value(6, 10), f(2.0, 5.0));
    for &(x, y) in &[(0.3, 0.7), (-1.0, 0.0), (2.0, 5.0), (1.234, 4.321)] {
        assert!((grid.interpolate(x, y) - f(x, y)).abs() < 1e-12);
    }
    // Outside the grid the value is clamped to the border.
    assert!((grid.interpolate(10.0, 0.0) - f(2.0, 0.0)).abs() < 1e-12);
    assert_eq!(grid.finite_max(), Some(f(2.0, 0.0)));
    // Degenerate grids interpolate to NaN instead of panicking.
    let single = ScalarGrid { x: vec![0.0], y: vec![0.0], values: vec![1.0] };
    assert!(single.interpolate(0.0, 0.0).is_nan());
    let mismatched = ScalarGrid { x: vec![0.0, 1.0], y: vec![0.0, 1.0], values: vec![1.0] };
    assert!(mismatched.interpolate(0.5, 0.5).is_nan());
    assert!(grid.interpolate(f64::NAN, 0.0).is_nan());
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

#[test]
fn contour_samples_png() {
    let dir = test_dir("contour");
    let means = gmm_means();
    let logp = gmm_log_density(&means);
    let mut flow = gmm_samples(&means, 800, 25, 1);
    flow.push([f64::NAN, 1.0]);
    flow.push([f64::INFINITY, 0.0]);
    flow.push([1e9, 1e9]);
    let panels = vec![
        SamplePanel::new("flow", flow),
        SamplePanel::new("AIS", gmm_samples(&means, 800, 40, 2)),
        SamplePanel { title: "buffer".into(), points: gmm_samples(&means, 800, 40, 3), colour: Some([0, 0, 0]) },
    ];
    let path = dir.join("gmm.png");
    contour_samples_2d(&path, "40-mode GMM", &logp, Bounds2d::square(-50.0, 50.0), &panels, &ContourOptions::default()).unwrap();
    let img = check_png(&path, (1200, 450));
    // Red sample dots (blended over light backgrounds) are present.
    assert!(count_near(&img, [214, 39, 40], 60) > 200);

    // Custom size, lines only.
    let path = dir.join("gmm_lines.png");
    let opts = ContourOptions {
        size: Some((900, 400)),
        style: ContourStyle { filled: false, grid_points: 60, levels: 10, ..ContourStyle::default() },
        ..ContourOptions::default()
    };
    contour_samples_2d(&path, "", &logp, Bounds2d::square(-50.0, 50.0), &panels, &opts).unwrap();
    check_png(&path, (900, 400));
    cleanup(&dir);
}

#[test]
fn contour_samples_degenerate_inputs() {
    let dir = test_dir("contour-degenerate");
    let b = Bounds2d { x: [-1.0, 1.0], y: [0.0, 3.0] };
    // Empty panel, NaN-only points, and a log-density that is NaN/−∞ everywhere.
    let panels = vec![SamplePanel::new("empty", vec![]), SamplePanel::new("nan", vec![[f64::NAN, f64::NAN]])];
    let nan_density = |_: f64, _: f64| f64::NAN;
    contour_samples_2d(dir.join("nan.png"), "all NaN", &nan_density, b, &panels, &ContourOptions::default()).unwrap();
    let neg_inf = |x: f64, _: f64| {
        if x < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }
    };
    contour_samples_2d(dir.join("inf.png"), "infinite", &neg_inf, b, &panels, &ContourOptions::default()).unwrap();
    let flat = |_: f64, _: f64| 1.0;
    contour_samples_2d(dir.join("flat.png"), "flat", &flat, b, &panels, &ContourOptions::default()).unwrap();
    assert!(png::header_size(&std::fs::read(dir.join("flat.png")).unwrap()) == (800, 450));

    let err = |r: Result<()>| matches!(r, Err(PlotError::InvalidInput(_)));
    let opts = ContourOptions::default();
    assert!(err(contour_samples_2d(dir.join("x.png"), "", &flat, b, &[], &opts)));
    assert!(err(contour_samples_2d(dir.join("x.png"), "", &flat, Bounds2d::square(1.0, -1.0), &panels, &opts)));
    assert!(err(contour_samples_2d(dir.join("x.png"), "", &flat, Bounds2d::square(0.0, f64::NAN), &panels, &opts)));
    let tiny = ContourOptions { size: Some((0, 100)), ..ContourOptions::default() };
    assert!(err(contour_samples_2d(dir.join("x.png"), "", &flat, b, &panels, &tiny)));
    let cramped = ContourOptions { size: Some((100, 100)), ..ContourOptions::default() };
    assert!(err(contour_samples_2d(dir.join("x.png"), "", &flat, b, &panels, &cramped)));
    cleanup(&dir);
}

#[test]
fn pairwise_marginals_png() {
    let dir = test_dir("pairwise");
    let mut samples = many_well_samples(600, 32, 4);
    samples.push(vec![f64::NAN; 32]);
    let path = dir.join("many_well.png");
    pairwise_marginals(
        &path,
        "Many Well (32-d): first four coordinates",
        &many_well_marginal,
        [-3.0, 3.0],
        &samples,
        &[0, 1, 2, 3],
        &PairwiseOptions::default(),
    )
    .unwrap();
    check_png(&path, (900, 940));

    // Two dims (one panel), custom names and size, no samples.
    let path = dir.join("two.png");
    let opts = PairwiseOptions { size: Some((500, 520)), names: Some(vec!["a".into(), "b".into()]), ..PairwiseOptions::default() };
    pairwise_marginals(&path, "pair", &many_well_marginal, [-3.0, 3.0], &[] as &[Vec<f64>], &[0, 1], &opts).unwrap();
    check_png(&path, (500, 520));

    let err = |r: Result<()>| matches!(r, Err(PlotError::InvalidInput(_)));
    let d = PairwiseOptions::default();
    assert!(err(pairwise_marginals(dir.join("x.png"), "", &many_well_marginal, [-3.0, 3.0], &samples, &[0], &d)));
    assert!(err(pairwise_marginals(dir.join("x.png"), "", &many_well_marginal, [-3.0, 3.0], &samples, &[0, 40], &d)));
    assert!(err(pairwise_marginals(dir.join("x.png"), "", &many_well_marginal, [3.0, 3.0], &samples, &[0, 1], &d)));
    let bad_names = PairwiseOptions { names: Some(vec!["a".into()]), ..PairwiseOptions::default() };
    assert!(err(pairwise_marginals(dir.join("x.png"), "", &many_well_marginal, [-3.0, 3.0], &samples, &[0, 1], &bad_names)));
    cleanup(&dir);
}

#[test]
fn training_curves_png() {
    let dir = test_dir("curves");
    let path = dir.join("curves.png");
    let panels = curve_panels();
    let opts = CurveOptions { columns: Some(2), ..CurveOptions::default() };
    training_curves(&path, "FAB training", &panels, &opts).unwrap();
    check_png(&path, (800, 730));
    // Default layout: three columns.
    let path = dir.join("curves3.png");
    training_curves(&path, "FAB training", &panels[..3], &CurveOptions::default()).unwrap();
    let img = check_png(&path, (1200, 390));
    // The first two palette colours (flow and AIS ESS) are drawn.
    assert!(count_near(&img, QUALITATIVE[0], 10) > 100);
    assert!(count_near(&img, QUALITATIVE[1], 10) > 100);
    cleanup(&dir);
}

#[test]
fn a_set_vertical_range_keeps_the_bulk_of_a_curve_readable() {
    let dir = test_dir("curves-range");
    // One huge first value, then an oscillation between 0 and 1.
    let x: Vec<f64> = (0..60).map(f64::from).collect();
    let y: Vec<f64> = x.iter().map(|&i| if i == 0.0 { 1000.0 } else { 0.5 + 0.5 * (i * 1.3).sin() }).collect();
    let ink = |panel: CurvePanel, name: &str| {
        let path = dir.join(name);
        training_curves(&path, "range", &[panel], &CurveOptions::default()).unwrap();
        let img = check_png(&path, (400, 390));
        count_near(&img, QUALITATIVE[0], 10)
    };
    let whole = ink(CurvePanel::single("kl", x.clone(), y.clone(), false), "whole.png");
    let ranged = ink(CurvePanel::single("kl", x.clone(), y.clone(), false).with_y_range(-0.1, 1.1), "ranged.png");
    // Flattened, the oscillation is a near-horizontal line; with the range it swings over the
    // whole panel height (and the first point is a marker on the edge).
    assert!(ranged > 3 * whole, "ink with range {ranged}, without {whole}");
    // A range on a log axis, or an empty one, is ignored (no error).
    ink(CurvePanel::single("kl", x.clone(), y.clone(), true).with_y_range(-0.1, 1.1), "log.png");
    ink(CurvePanel::single("kl", x, y, false).with_y_range(1.0, 1.0), "empty.png");
    cleanup(&dir);
}

#[test]
fn training_curves_degenerate_inputs() {
    let dir = test_dir("curves-degenerate");
    let panels = vec![
        CurvePanel::single("empty", vec![], vec![], false),
        CurvePanel::single("all NaN", vec![0.0, 1.0], vec![f64::NAN, f64::NAN], false),
        CurvePanel::single("log of negatives", vec![0.0, 1.0, 2.0], vec![-1.0, 0.0, -3.0], true),
        CurvePanel::single("one point", vec![5.0], vec![2.0], true),
        CurvePanel::single("constant", vec![0.0, 1.0, 2.0], vec![3.0, 3.0, 3.0], false),
        CurvePanel::multi("no series", vec![], false),
    ];
    let path = dir.join("degenerate.png");
    training_curves(&path, "degenerate", &panels, &CurveOptions::default()).unwrap();
    check_png(&path, (1200, 730));
    let err = |r: Result<()>| matches!(r, Err(PlotError::InvalidInput(_)));
    assert!(err(training_curves(dir.join("x.png"), "", &[], &CurveOptions::default())));
    let mismatched = [CurvePanel::single("m", vec![0.0, 1.0], vec![1.0], false)];
    assert!(err(training_curves(dir.join("x.png"), "", &mismatched, &CurveOptions::default())));
    cleanup(&dir);
}

#[test]
fn ramachandran_png() {
    let dir = test_dir("rama");
    let (phi, psi) = dihedrals(20_000, 5, 0.02);
    let path = dir.join("single.png");
    ramachandran(&path, "Ramachandran plot", &phi, &psi, None, &RamachandranOptions::default()).unwrap();
    check_png(&path, (520, 430));

    let (fphi, fpsi) = dihedrals(20_000, 6, 0.0);
    let weights: Vec<f64> = fphi.iter().map(|&p| if p > 0.0 { 50.0 } else { 1.0 }).collect();
    let mut nan_w = weights.clone();
    nan_w[0] = f64::NAN;
    nan_w[1] = -2.0;
    let panels = [
        RamachandranPanel { title: "reference", phi: &phi, psi: &psi, weights: None },
        RamachandranPanel { title: "flow", phi: &fphi, psi: &fpsi, weights: None },
        RamachandranPanel { title: "flow (reweighted)", phi: &fphi, psi: &fpsi, weights: Some(&nan_w) },
        RamachandranPanel { title: "empty", phi: &[], psi: &[], weights: None },
    ];
    let path = dir.join("panels.png");
    ramachandran_panels(&path, "alanine dipeptide", &panels, &RamachandranOptions::default()).unwrap();
    let img = check_png(&path, (340 * 4 + 110, 400));
    // The colour scale's extremes both appear (the colour bar at least).
    assert!(count_near(&img, viridis(0.0), 6) > 50);
    assert!(count_near(&img, viridis(1.0), 6) > 50);

    // Everything empty or non-finite: no colour scale, but still a valid figure.
    let nan = [f64::NAN; 3];
    let empty = [RamachandranPanel { title: "nan", phi: &nan, psi: &nan, weights: None }];
    ramachandran_panels(dir.join("nan.png"), "nothing", &empty, &RamachandranOptions::default()).unwrap();

    let err = |r: Result<()>| matches!(r, Err(PlotError::InvalidInput(_)));
    assert!(err(ramachandran_panels(dir.join("x.png"), "", &[], &RamachandranOptions::default())));
    let zero_bins = RamachandranOptions { bins: 0, ..RamachandranOptions::default() };
    assert!(err(ramachandran(dir.join("x.png"), "", &phi, &psi, None, &zero_bins)));
    assert!(err(ramachandran(dir.join("x.png"), "", &phi, &psi[1..], None, &RamachandranOptions::default())));
    cleanup(&dir);
}

#[test]
fn ramachandran_pixels_follow_the_histogram() {
    // All mass in one bin in the (φ > 0, ψ > 0) quadrant: exactly one coloured square, at the top
    // colour, in the upper-right part of the plotting area; the other quadrants stay white.
    let dir = test_dir("rama-pixels");
    let phi = vec![1.0; 100];
    let psi = vec![1.0; 100];
    let path = dir.join("one_bin.png");
    let opts = RamachandranOptions { size: Some((600, 500)), bins: 8, ..RamachandranOptions::default() };
    ramachandran(&path, "", &phi, &psi, None, &opts).unwrap();
    let img = png::decode(&std::fs::read(&path).unwrap());
    let top = viridis(1.0);
    let hits: Vec<(u32, u32)> =
        (0..img.height).flat_map(|y| (0..img.width).map(move |x| (x, y))).filter(|&(x, y)| img.at(x, y) == top).collect();
    assert!(hits.len() > 100, "{} pixels of the top colour", hits.len());
    // The bin [π/4, π/2) × [π/4, π/2) is an 1/8 × 1/8 square; the colour bar also carries the
    // top colour, so look only at the squarest cluster left of the colour bar.
    let in_plot: Vec<&(u32, u32)> = hits.iter().filter(|(x, _)| *x < 600 - 110).collect();
    let (xmin, xmax) = (in_plot.iter().map(|p| p.0).min().unwrap(), in_plot.iter().map(|p| p.0).max().unwrap());
    let (ymin, ymax) = (in_plot.iter().map(|p| p.1).min().unwrap(), in_plot.iter().map(|p| p.1).max().unwrap());
    let (w, h) = (xmax - xmin + 1, ymax - ymin + 1);
    assert!(w.abs_diff(h) <= 2, "bin square is {w}x{h}");
    assert_eq!(in_plot.len() as u32, w * h, "one solid square");
    cleanup(&dir);
}

#[test]
fn histogram_1d_log_png() {
    let dir = test_dir("hist1d");
    let (phi, _) = dihedrals(20_000, 7, 0.02);
    let (fphi, _) = dihedrals(20_000, 8, 0.0);
    let w: Vec<f64> = fphi.iter().map(|&p| if p > 0.0 { 10.0 } else { 1.0 }).collect();
    let mut with_nan = fphi.clone();
    with_nan.push(f64::NAN);
    let mut w_nan = w.clone();
    w_nan.push(1.0);
    let series = [
        HistogramSeries { colour: Some([0, 0, 0]), ..HistogramSeries::new("reference (MD)", &phi) },
        HistogramSeries::new("flow", &with_nan),
        HistogramSeries::new("flow (reweighted)", &with_nan).weighted(&w_nan),
    ];
    let path = dir.join("phi.png");
    let opts = Histogram1dOptions { x_label: "φ (rad)".into(), ..Histogram1dOptions::default() };
    histogram_1d_log(&path, "φ marginal", &series, [-PI, PI], 60, &opts).unwrap();
    check_png(&path, (800, 520));

    // Non-angle range, empty series.
    let path = dir.join("empty.png");
    let empty = [HistogramSeries::new("nothing", &[])];
    histogram_1d_log(&path, "empty", &empty, [0.0, 10.0], 10, &Histogram1dOptions::default()).unwrap();
    assert_eq!(png::header_size(&std::fs::read(&path).unwrap()), (800, 520));

    let err = |r: Result<()>| matches!(r, Err(PlotError::InvalidInput(_)));
    let d = Histogram1dOptions::default();
    assert!(err(histogram_1d_log(dir.join("x.png"), "", &[], [0.0, 1.0], 10, &d)));
    assert!(err(histogram_1d_log(dir.join("x.png"), "", &series, [0.0, 1.0], 0, &d)));
    assert!(err(histogram_1d_log(dir.join("x.png"), "", &series, [1.0, 0.0], 10, &d)));
    let bad = [HistogramSeries::new("w", &phi).weighted(&w[..10])];
    assert!(err(histogram_1d_log(dir.join("x.png"), "", &bad, [-PI, PI], 10, &d)));
    cleanup(&dir);
}

#[test]
fn heatmaps_png() {
    let dir = test_dir("heat");
    let panels = gflownet_panels(64);
    let path = dir.join("grid64.png");
    heatmaps(&path, "64 x 64 grid: target, student and teacher", &panels, &HeatmapOptions::default()).unwrap();
    let img = check_png(&path, (380 * 3 + 110, 410));
    assert!(count_near(&img, viridis(1.0), 0) > 500, "top colour drawn");
    assert!(count_near(&img, viridis(0.0), 0) > 500, "lowest colour drawn (the student's missing mode)");

    // Per-panel linear scales: one colour bar per panel, default size accordingly.
    let path = dir.join("grid64_linear.png");
    let opts = HeatmapOptions { shared_scale: false, log_scale: false, ..HeatmapOptions::default() };
    heatmaps(&path, "linear", &panels, &opts).unwrap();
    check_png(&path, (490 * 3, 410));

    // A non-square grid and a 256 x 256 one, with an explicit size.
    let wide = HeatPanel::new("12 x 5", 12, 5, (0..60).map(|k| k as f64).collect());
    let big = gflownet_panels(256).swap_remove(0);
    let path = dir.join("mixed.png");
    let start = std::time::Instant::now();
    heatmaps(&path, "", &[wide, big], &HeatmapOptions { size: Some((1000, 500)), ..HeatmapOptions::default() }).unwrap();
    check_png(&path, (1000, 500));
    assert!(start.elapsed().as_secs_f64() < 10.0, "256 x 256 took {:?}", start.elapsed());
    cleanup(&dir);
}

#[test]
fn heatmap_hot_cell_is_drawn_where_its_coordinates_say() {
    // A 4 x 4 grid with one non-zero cell: on the (shared, log) scale it is the only cell in the
    // top colour, all others are zeros in the lowest colour. The first coordinate runs to the
    // right, the second upwards, so (3, 0) is the bottom-right cell and (0, 3) the top-left one.
    let dir = test_dir("heat-pixels");
    let size = (500, 440);
    let plot_end = size.0 - 110; // the colour bar column also carries both colours
    for (cell, right, bottom) in [((3, 0), true, true), ((0, 3), false, false), ((3, 3), true, false), ((0, 0), false, true)] {
        let mut values = vec![0.0; 16];
        values[cell.0 * 4 + cell.1] = 0.25;
        let path = dir.join(format!("hot_{}_{}.png", cell.0, cell.1));
        let opts = HeatmapOptions { size: Some(size), ..HeatmapOptions::default() };
        heatmaps(&path, "", &[HeatPanel::new("", 4, 4, values)], &opts).unwrap();
        let img = png::decode(&std::fs::read(&path).unwrap());
        let (hot, n_hot) = bbox_of(&img, viridis(1.0), plot_end).expect("hot cell drawn");
        let (all, _) = bbox_of(&img, viridis(0.0), plot_end).expect("cold cells drawn");
        // One solid square, a quarter of the plotting area per side.
        let (w, h) = (hot.1 - hot.0 + 1, hot.3 - hot.2 + 1);
        assert_eq!(n_hot as u32, w * h, "{cell:?}: one solid block");
        assert!(w.abs_diff(h) <= 1, "{cell:?}: hot cell is {w}x{h}");
        let side = all.1 - all.0 + 1;
        assert!(side.abs_diff(all.3 - all.2 + 1) <= 1, "square plotting area");
        assert!(w.abs_diff(side / 4) <= 2, "{cell:?}: cell {w} px in a {side} px panel");
        let at = |a: u32, b: u32| a.abs_diff(b) <= 1;
        assert!(if right { at(hot.1, all.1) } else { at(hot.0, all.0) }, "{cell:?}: hot {hot:?} in {all:?}");
        assert!(if bottom { at(hot.3, all.3) } else { at(hot.2, all.2) }, "{cell:?}: hot {hot:?} in {all:?}");
    }
    cleanup(&dir);
}

#[test]
fn heatmap_scales() {
    let dir = test_dir("heat-scales");
    let size = (2 * 490, 440);
    // Two constant panels a factor 100 apart: on a shared log scale the first is at the bottom
    // of the scale and the second at the top; with separate scales both are at their top.
    let panels = [HeatPanel::new("low", 8, 8, vec![1.0; 64]), HeatPanel::new("high", 8, 8, vec![100.0; 64])];
    let left_half = |img: &png::Image, c: [u8; 3]| {
        (0..img.height).flat_map(|y| (0..img.width / 2).map(move |x| (x, y))).filter(|&(x, y)| img.at(x, y) == c).count()
    };
    let shared = dir.join("shared.png");
    heatmaps(&shared, "", &panels, &HeatmapOptions { size: Some(size), ..HeatmapOptions::default() }).unwrap();
    let img = png::decode(&std::fs::read(&shared).unwrap());
    assert!(left_half(&img, viridis(0.0)) > 10_000);
    assert_eq!(left_half(&img, viridis(1.0)), 0);
    let separate = dir.join("separate.png");
    heatmaps(&separate, "", &panels, &HeatmapOptions { size: Some(size), shared_scale: false, ..HeatmapOptions::default() }).unwrap();
    let img = png::decode(&std::fs::read(&separate).unwrap());
    assert!(left_half(&img, viridis(1.0)) > 10_000);

    // Linear scale from 0 to the maximum: half the maximum gets the middle colour.
    let path = dir.join("linear.png");
    let half = [HeatPanel::new("", 2, 1, vec![0.5, 1.0])];
    heatmaps(&path, "", &half, &HeatmapOptions { log_scale: false, size: Some((500, 440)), ..HeatmapOptions::default() }).unwrap();
    let img = png::decode(&std::fs::read(&path).unwrap());
    let mid = (0..img.height).flat_map(|y| (0..390).map(move |x| (x, y))).filter(|&(x, y)| img.at(x, y) == viridis(0.5)).count();
    assert!(mid > 5_000, "{mid} pixels of the middle colour");

    // Log scale floor: a value 10⁻⁹ of the maximum is drawn like a zero, in the lowest colour.
    let path = dir.join("floor.png");
    let tiny = [HeatPanel::new("", 2, 1, vec![1e-9, 1.0])];
    heatmaps(&path, "", &tiny, &HeatmapOptions { size: Some((500, 440)), ..HeatmapOptions::default() }).unwrap();
    let img = png::decode(&std::fs::read(&path).unwrap());
    let ((x0, x1, _, _), n) = bbox_of(&img, viridis(0.0), 390).unwrap();
    assert!(n > 5_000 && x1 - x0 > 50, "the tiny value's cell is in the lowest colour");

    // All zeros: a figure without a colour scale.
    let path = dir.join("zeros.png");
    heatmaps(&path, "zeros", &[HeatPanel::new("nothing", 3, 3, vec![0.0; 9])], &HeatmapOptions::default()).unwrap();
    check_png(&path, (490, 410));
    cleanup(&dir);
}

#[test]
fn heatmap_invalid_inputs() {
    let dir = test_dir("heat-errors");
    let d = HeatmapOptions::default();
    let message = |panels: &[HeatPanel], opts: &HeatmapOptions| match heatmaps(dir.join("x.png"), "", panels, opts) {
        Err(PlotError::InvalidInput(m)) => m,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    assert!(message(&[], &d).contains("at least one panel"));
    let ok = HeatPanel::new("ok", 2, 2, vec![0.1; 4]);
    let m = message(&[ok.clone(), HeatPanel::new("flat", 0, 3, vec![])], &d);
    assert!(m.contains("panel 1 ('flat')") && m.contains("0 rows"), "{m}");
    assert!(message(&[HeatPanel::new("thin", 3, 0, vec![])], &d).contains("0 cols"));
    let m = message(&[HeatPanel::new("short", 3, 3, vec![0.0; 8])], &d);
    assert!(m.contains("8 values") && m.contains("9 cells"), "{m}");
    let mut bad = vec![0.1; 9];
    bad[5] = -0.5;
    let m = message(&[ok.clone(), ok.clone(), HeatPanel::new("student", 3, 3, bad.clone())], &d);
    assert!(m.contains("panel 2 ('student')") && m.contains("-0.5") && m.contains("index 5") && m.contains("(1, 2)"), "{m}");
    for v in [f64::NAN, f64::INFINITY] {
        bad[5] = v;
        let m = message(&[HeatPanel::new("teacher", 3, 3, bad.clone())], &d);
        assert!(m.contains("index 5") && m.contains("non-negative"), "{m}");
    }
    assert!(message(&[HeatPanel::new("huge", usize::MAX, 2, vec![])], &d).contains("cells"));
    let one = std::slice::from_ref(&ok);
    for decades in [0.0, -1.0, f64::NAN, 1e300] {
        assert!(message(one, &HeatmapOptions { decades, ..HeatmapOptions::default() }).contains("decades"));
    }
    assert!(message(one, &HeatmapOptions { size: Some((10, 10)), ..HeatmapOptions::default() }).contains("image size"));
    // A bad decades value does not matter on a linear scale.
    let linear = HeatmapOptions { decades: f64::NAN, log_scale: false, ..HeatmapOptions::default() };
    heatmaps(dir.join("linear.png"), "", &[ok], &linear).unwrap();
    cleanup(&dir);
}

#[test]
fn output_directory_is_created() {
    let root = test_dir("nested");
    let path = root.join("a").join("b").join("curves.png");
    training_curves(&path, "t", &curve_panels()[..1], &CurveOptions::default()).unwrap();
    assert!(path.exists());
    cleanup(&root);
}

/// Renders one example of each figure for a person to look at.
#[test]
#[ignore]
fn render_examples() {
    let dir = std::env::var_os("FAB_PLOT_EXAMPLES").map(PathBuf::from).unwrap_or_else(|| "/tmp/plot_examples".into());
    std::fs::create_dir_all(&dir).unwrap();

    let means = gmm_means();
    let logp = gmm_log_density(&means);
    let panels = vec![
        SamplePanel::new("flow", gmm_samples(&means, 1000, 28, 1)),
        SamplePanel::new("AIS", gmm_samples(&means, 1000, 40, 2)),
        SamplePanel::new("buffer", gmm_samples(&means, 1000, 40, 3)),
    ];
    contour_samples_2d(
        dir.join("gmm_contours.png"),
        "FAB on the 40-mode GMM",
        &logp,
        Bounds2d::square(-50.0, 50.0),
        &panels,
        &ContourOptions::default(),
    )
    .unwrap();
    let lines = ContourOptions { style: ContourStyle { filled: false, ..ContourStyle::default() }, ..ContourOptions::default() };
    let rkl =
        vec![SamplePanel::new("reverse KL", gmm_samples(&means, 1000, 3, 4)), SamplePanel::new("FAB", gmm_samples(&means, 1000, 40, 5))];
    contour_samples_2d(dir.join("gmm_rkl_vs_fab_lines.png"), "reverse KL vs FAB", &logp, Bounds2d::square(-50.0, 50.0), &rkl, &lines)
        .unwrap();

    let samples = many_well_samples(1000, 32, 4);
    pairwise_marginals(
        dir.join("many_well_pairs.png"),
        "Many Well (d = 32): flow samples, first four coordinates",
        &many_well_marginal,
        [-3.0, 3.0],
        &samples,
        &[0, 1, 2, 3],
        &PairwiseOptions::default(),
    )
    .unwrap();

    training_curves(
        dir.join("training_curves.png"),
        "FAB training (GMM)",
        &curve_panels(),
        &CurveOptions { columns: Some(4), ..CurveOptions::default() },
    )
    .unwrap();

    let (phi, psi) = dihedrals(50_000, 5, 0.02);
    ramachandran(dir.join("ramachandran.png"), "Ramachandran plot (reference)", &phi, &psi, None, &RamachandranOptions::default()).unwrap();
    let (fphi, fpsi) = dihedrals(50_000, 6, 0.003);
    let fw: Vec<f64> = fphi.iter().map(|&p| if p > 0.0 { 6.0 } else { 1.0 }).collect();
    let (aphi, apsi) = dihedrals(50_000, 7, 0.01);
    let aw: Vec<f64> = aphi.iter().map(|&p| if p > 0.0 { 2.0 } else { 1.0 }).collect();
    let panels = [
        RamachandranPanel { title: "reference (MD)", phi: &phi, psi: &psi, weights: None },
        RamachandranPanel { title: "flow", phi: &fphi, psi: &fpsi, weights: None },
        RamachandranPanel { title: "flow (reweighted)", phi: &fphi, psi: &fpsi, weights: Some(&fw) },
        RamachandranPanel { title: "AIS", phi: &aphi, psi: &apsi, weights: None },
        RamachandranPanel { title: "AIS (reweighted)", phi: &aphi, psi: &apsi, weights: Some(&aw) },
    ];
    ramachandran_panels(dir.join("ramachandran_panels.png"), "Alanine dipeptide", &panels, &RamachandranOptions::default()).unwrap();

    let series = [
        HistogramSeries { colour: Some([0, 0, 0]), ..HistogramSeries::new("reference (MD)", &phi) },
        HistogramSeries::new("flow", &fphi),
        HistogramSeries::new("flow (reweighted)", &fphi).weighted(&fw),
        HistogramSeries::new("AIS (reweighted)", &aphi).weighted(&aw),
    ];
    histogram_1d_log(
        dir.join("phi_marginal.png"),
        "Marginal of φ",
        &series,
        [-PI, PI],
        80,
        &Histogram1dOptions { x_label: "φ (rad)".into(), ..Histogram1dOptions::default() },
    )
    .unwrap();
    heatmaps(
        dir.join("heatmaps.png"),
        "Hypergrid 64 x 64: target, student and teacher",
        &gflownet_panels(64),
        &HeatmapOptions { axis_labels: ["s₀".into(), "s₁".into()], ..HeatmapOptions::default() },
    )
    .unwrap();
    let mut panels = gflownet_panels(16);
    panels.push(HeatPanel::new("12 x 5, values 0..59", 12, 5, (0..60).map(f64::from).collect()));
    heatmaps(
        dir.join("heatmaps_linear_separate.png"),
        "Linear colour scales, one per panel",
        &panels,
        &HeatmapOptions { shared_scale: false, log_scale: false, ..HeatmapOptions::default() },
    )
    .unwrap();
}
