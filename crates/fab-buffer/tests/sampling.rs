//! Statistical, persistence and value-stability tests of the prioritised buffer.
//!
//! Statistical tests use fixed seeds, so they are deterministic; each threshold is chosen so that
//! a *correct* sampler would fail it for at most a fraction 1e-4 of seeds (stated per test).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use fab_buffer::{BufferError, PrioritisedBuffer};
use fab_core::seeded_rng;
use fab_core::test_utils::ScratchDir;

/// Survival function of the χ² distribution with an even number of degrees of freedom 2m:
/// P(X > x) = exp(−x/2) Σ_{j<m} (x/2)^j / j!  (closed form, no special functions needed).
fn chi2_sf_even_df(x: f64, df: usize) -> f64 {
    assert!(df.is_multiple_of(2) && df > 0);
    let h = x / 2.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for j in 1..df / 2 {
        term *= h / j as f64;
        sum += term;
    }
    (-h).exp() * sum
}

/// Pearson χ² statistic of `counts` against probabilities `probs` over `n` draws.
fn chi2_stat(counts: &[u64], probs: &[f64], n: u64) -> f64 {
    counts
        .iter()
        .zip(probs)
        .map(|(&c, &p)| {
            let e = p * n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

/// Exact probability of every k-subset (as a bitmask) under successive sampling without
/// replacement with probabilities ∝ w (the law of Gumbel-top-k), by brute-force enumeration of
/// all ordered draws: P(i₁, …, i_k) = Π_j w_{i_j} / (W − Σ_{l<j} w_{i_l}).
fn exact_subset_probs(w: &[f64], k: usize) -> HashMap<u32, f64> {
    fn rec(w: &[f64], k: usize, mask: u32, remaining: f64, p: f64, out: &mut HashMap<u32, f64>) {
        if mask.count_ones() as usize == k {
            *out.entry(mask).or_insert(0.0) += p;
            return;
        }
        for i in 0..w.len() {
            if mask & (1 << i) == 0 && w[i] > 0.0 {
                rec(w, k, mask | (1 << i), remaining - w[i], p * w[i] / remaining, out);
            }
        }
    }
    let mut out = HashMap::new();
    rec(w, k, 0, w.iter().sum(), 1.0, &mut out);
    out
}

fn buffer_with_log_w(log_w: &[f64]) -> PrioritisedBuffer {
    let n = log_w.len();
    let mut b = PrioritisedBuffer::new(1, n, 1).unwrap();
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    // Entries are added with finite weights, then the −∞ ones are killed through `adjust`
    // (`add` refuses non-finite weights).
    let finite: Vec<f64> = log_w.iter().map(|l| if l.is_finite() { *l } else { 0.0 }).collect();
    b.add_host(&x, &finite, &vec![0.0; n]).unwrap();
    let dead: Vec<usize> = (0..n).filter(|&i| !log_w[i].is_finite()).collect();
    b.adjust(&dead, &vec![f64::NAN; dead.len()], 2.0, None).unwrap();
    b
}

#[test]
fn k1_selection_frequencies_equal_normalised_weights() {
    // w = (1, 2, 3, 4, 10)/20, N = 100 000 single draws: counts ~ Multinomial(N, w) under the
    // Gumbel-max law. Pearson χ² with 4 df; reject if p < 1e-4 (χ² > 23.5), so a correct sampler
    // fails for 1e-4 of seeds. A sampler off by 1 % absolute in one cell would give χ² ≈ 100.
    let w = [1.0, 2.0, 3.0, 4.0, 10.0];
    let total: f64 = w.iter().sum();
    let probs: Vec<f64> = w.iter().map(|v| v / total).collect();
    let b = buffer_with_log_w(&w.map(f64::ln));
    let mut rng = seeded_rng(11, 0);
    let n = 100_000u64;
    let mut counts = [0u64; 5];
    for _ in 0..n {
        counts[b.sample_indices(1, &mut rng).unwrap()[0]] += 1;
    }
    let x2 = chi2_stat(&counts, &probs, n);
    let p = chi2_sf_even_df(x2, 4);
    assert!(p > 1e-4, "χ² = {x2}, p = {p}, counts {counts:?}");
}

#[test]
fn k2_subset_law_matches_exact_enumeration_and_dead_entry_never_drawn() {
    // 7 entries, the last one dead (log w = −∞). Draw k = 2 distinct of the 6 live ones
    // N = 200 000 times and compare the frequencies of the 15 unordered pairs with the exact
    // successive-sampling probabilities (χ² with 14 df, reject at p < 1e-4).
    let w = [1.0, 2.0, 3.0, 4.0, 10.0, 0.5];
    let mut log_w: Vec<f64> = w.iter().map(|v: &f64| v.ln()).collect();
    log_w.push(f64::NEG_INFINITY);
    let b = buffer_with_log_w(&log_w);
    let exact = exact_subset_probs(&w, 2);
    assert_eq!(exact.len(), 15);
    assert!((exact.values().sum::<f64>() - 1.0).abs() < 1e-12);
    let mut rng = seeded_rng(12, 0);
    let n = 200_000u64;
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for _ in 0..n {
        let idx = b.sample_indices(2, &mut rng).unwrap();
        assert_ne!(idx[0], idx[1], "without replacement");
        assert!(idx.iter().all(|&i| i < 6), "the dead entry 6 must never be drawn");
        *counts.entry((1 << idx[0]) | (1 << idx[1])).or_insert(0) += 1;
    }
    let keys: Vec<u32> = exact.keys().copied().collect();
    let c: Vec<u64> = keys.iter().map(|k| counts.get(k).copied().unwrap_or(0)).collect();
    let pr: Vec<f64> = keys.iter().map(|k| exact[k]).collect();
    let x2 = chi2_stat(&c, &pr, n);
    let p = chi2_sf_even_df(x2, 14);
    assert!(p > 1e-4, "χ² = {x2}, p = {p}");

    // Power check (negative control): the same counts are decisively inconsistent with a
    // plausible wrong law, pair probability ∝ wᵢ·wⱼ (conditional Poisson sampling), which
    // differs from successive sampling by a few percent per pair.
    let wrong: Vec<f64> = keys.iter().map(|&k| (0..6).filter(|i| k & (1 << i) != 0).map(|i| w[i]).product::<f64>()).collect();
    let z: f64 = wrong.iter().sum();
    let wrong: Vec<f64> = wrong.iter().map(|v| v / z).collect();
    let x2_wrong = chi2_stat(&c, &wrong, n);
    assert!(chi2_sf_even_df(x2_wrong, 14) < 1e-10, "χ² vs wrong law = {x2_wrong}");
}

#[test]
fn k4_of_5_subset_law_matches_exact_enumeration() {
    // k = 4 of 5: the 5 possible subsets are identified by the excluded entry; χ² with 4 df,
    // reject at p < 1e-4. N = 100 000.
    let w = [0.2, 1.0, 3.0, 0.7, 5.0];
    let b = buffer_with_log_w(&w.map(f64::ln));
    let exact = exact_subset_probs(&w, 4);
    let mut rng = seeded_rng(13, 0);
    let n = 100_000u64;
    let mut counts = [0u64; 5]; // by excluded entry
    for _ in 0..n {
        let idx = b.sample_indices(4, &mut rng).unwrap();
        let mask: u32 = idx.iter().map(|i| 1u32 << i).sum();
        assert_eq!(mask.count_ones(), 4);
        counts[(!mask & 0b11111).trailing_zeros() as usize] += 1;
    }
    let probs: Vec<f64> = (0..5).map(|e| exact[&(0b11111 & !(1u32 << e))]).collect();
    let x2 = chi2_stat(&counts, &probs, n);
    let p = chi2_sf_even_df(x2, 4);
    assert!(p > 1e-4, "χ² = {x2}, p = {p}, counts {counts:?}, probs {probs:?}");
}

#[test]
fn selected_indices_are_randomly_permuted() {
    // Entry 4 has weight e^20 against 1 for the others, so it is in every draw of k = 3; after
    // the shuffle its position must be uniform on {0, 1, 2} (it would always be first if the
    // output were sorted by key, and always last if sorted by slot). χ² with 2 df:
    // P(X > x) = exp(−x/2); reject at p < 1e-4. N = 30 000.
    let b = buffer_with_log_w(&[0.0, 0.0, 0.0, 0.0, 20.0]);
    let mut rng = seeded_rng(14, 0);
    let n = 30_000u64;
    let mut pos = [0u64; 3];
    for _ in 0..n {
        let idx = b.sample_indices(3, &mut rng).unwrap();
        pos[idx.iter().position(|&i| i == 4).unwrap()] += 1;
    }
    let x2 = chi2_stat(&pos, &[1.0 / 3.0; 3], n);
    let p = chi2_sf_even_df(x2, 2);
    assert!(p > 1e-4, "positions {pos:?}, p = {p}");
}

#[test]
fn no_duplicates_in_large_draws() {
    let n = 5000;
    let mut b = PrioritisedBuffer::new(2, n, 100).unwrap();
    let mut rng = seeded_rng(15, 0);
    let x = fab_core::rng::normal_vec(&mut rng, 2 * n);
    let lw: Vec<f64> = fab_core::rng::normal_vec(&mut rng, n).iter().map(|v| 3.0 * v).collect();
    b.add_host(&x, &lw, &vec![0.0; n]).unwrap();
    for k in [1, 17, 1024, 4999, 5000] {
        let mut idx = b.sample_indices(k, &mut rng).unwrap();
        assert_eq!(idx.len(), k);
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), k);
    }
}

fn assert_same(a: &PrioritisedBuffer, b: &PrioritisedBuffer) {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a.x()), bits(b.x()));
    assert_eq!(bits(a.log_w()), bits(b.log_w()));
    assert_eq!(bits(a.log_q_old()), bits(b.log_q_old()));
    assert_eq!(
        (a.dim(), a.capacity(), a.min_len(), a.len(), a.next_slot(), a.total_added()),
        (b.dim(), b.capacity(), b.min_len(), b.len(), b.next_slot(), b.total_added())
    );
}

/// One FAB-like iteration: add a batch, draw 2 chunks of 4, adjust each with made-up log q.
fn iteration(buf: &mut PrioritisedBuffer, rng: &mut fab_core::FabRng) -> Vec<usize> {
    let x = fab_core::rng::normal_vec(rng, 6 * 3);
    let lw = fab_core::rng::normal_vec(rng, 6);
    let lq = fab_core::rng::normal_vec(rng, 6);
    buf.add_host(&x, &lw, &lq).unwrap();
    let chunks = buf.sample_batches(4, 2, DType::F64, &Device::Cpu, rng).unwrap();
    let mut drawn = Vec::new();
    for c in chunks {
        let new_lq: Vec<f64> = c.log_q_old.iter().map(|v| v + 0.1).collect();
        buf.adjust(&c.indices, &new_lq, 2.0, Some(10.0)).unwrap();
        drawn.extend(c.indices);
    }
    drawn
}

#[test]
fn save_load_round_trip_continues_identically() {
    let mut rng = seeded_rng(16, 0);
    let mut a = PrioritisedBuffer::new(3, 20, 10).unwrap();
    // Initial fill up to min_len, as FAB does before its first iteration.
    let x0 = fab_core::rng::normal_vec(&mut rng, 30);
    a.add_host(&x0, &fab_core::rng::normal_vec(&mut rng, 10), &fab_core::rng::normal_vec(&mut rng, 10)).unwrap();
    for _ in 0..6 {
        iteration(&mut a, &mut rng); // 46 entries added: the buffer has wrapped twice
    }
    // Kill one entry so that −∞ goes through the file too.
    a.adjust(&[5], &[f64::NAN], 2.0, None).unwrap();
    let dir = ScratchDir::create("buffer_roundtrip");
    let path = dir.join("roundtrip.safetensors");
    a.save(&path).unwrap();
    let mut b = PrioritisedBuffer::load(&path).unwrap();
    assert_same(&a, &b);
    assert_eq!(b.log_w()[5], f64::NEG_INFINITY);
    let mut rng_b = rng.clone();
    for _ in 0..5 {
        assert_eq!(iteration(&mut a, &mut rng), iteration(&mut b, &mut rng_b));
    }
    assert_same(&a, &b);

    // A partially filled buffer (not ready yet) and an empty one round-trip too.
    for n_add in [0usize, 3] {
        let mut c = PrioritisedBuffer::new(2, 10, 5).unwrap();
        c.add_host(&vec![1.5; 2 * n_add], &vec![0.25; n_add], &vec![-1.0; n_add]).unwrap();
        c.save(&path).unwrap();
        let d = PrioritisedBuffer::load(&path).unwrap();
        assert_same(&c, &d);
        assert!(!d.can_sample());
    }
}

#[test]
fn load_rejects_bad_files() {
    let dir = ScratchDir::create("buffer_bad_files");
    let path = dir.join("bad.safetensors");
    let cpu = Device::Cpu;
    let mut map = HashMap::new();
    map.insert("x".to_string(), Tensor::zeros((1, 2), DType::F64, &cpu).unwrap());
    map.insert("log_w".to_string(), Tensor::zeros(1, DType::F64, &cpu).unwrap());
    map.insert("log_q_old".to_string(), Tensor::zeros(1, DType::F64, &cpu).unwrap());
    // Wrong version.
    map.insert("state".to_string(), Tensor::new(&[99i64, 2, 10, 1, 1, 1, 1], &cpu).unwrap());
    candle_core::safetensors::save(&map, &path).unwrap();
    assert!(matches!(PrioritisedBuffer::load(&path), Err(BufferError::Format(_))));
    // Inconsistent counters (next slot should be 1).
    map.insert("state".to_string(), Tensor::new(&[1i64, 2, 10, 1, 1, 3, 1], &cpu).unwrap());
    candle_core::safetensors::save(&map, &path).unwrap();
    assert!(matches!(PrioritisedBuffer::load(&path), Err(BufferError::Format(_))));
    // Shape mismatch (dim 3 declared, x has 2 columns).
    map.insert("state".to_string(), Tensor::new(&[1i64, 3, 10, 1, 1, 1, 1], &cpu).unwrap());
    candle_core::safetensors::save(&map, &path).unwrap();
    assert!(matches!(PrioritisedBuffer::load(&path), Err(BufferError::Format(_))));
    // Missing tensor.
    map.remove("log_w");
    candle_core::safetensors::save(&map, &path).unwrap();
    assert!(matches!(PrioritisedBuffer::load(&path), Err(BufferError::Format(_))));
    // Missing file.
    assert!(PrioritisedBuffer::load(&dir.join("does_not_exist.safetensors")).is_err());
}

#[test]
fn add_from_tensors_any_dtype() {
    let cpu = Device::Cpu;
    let mut b = PrioritisedBuffer::new(2, 5, 1).unwrap();
    let x = Tensor::new(&[[0.5f32, 1.5], [2.5, 3.5]], &cpu).unwrap();
    let lw = Tensor::new(&[0.25f32, -0.75], &cpu).unwrap();
    let lq = Tensor::new(&[-1.0f32, -2.0], &cpu).unwrap();
    let r = b.add(&x, &lw, &lq).unwrap();
    assert_eq!((r.added, r.dropped), (2, 0));
    assert_eq!(b.x(), &[0.5, 1.5, 2.5, 3.5]);
    assert_eq!(b.log_w(), &[0.25, -0.75]);
    assert_eq!(b.log_q_old(), &[-1.0, -2.0]);
}

#[test]
fn config_serde_round_trip_and_unknown_fields() {
    let c: fab_buffer::BufferConfig = serde_json::from_str(r#"{"min_len": 65536, "max_len": 512000}"#).unwrap();
    assert_eq!((c.min_len, c.max_len), (65_536, 512_000));
    let d: fab_buffer::BufferConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(d, fab_buffer::BufferConfig::default());
    assert!(serde_json::from_str::<fab_buffer::BufferConfig>(r#"{"capacity": 3}"#).is_err());
}

#[test]
fn value_stability() {
    // Any change to how the buffer consumes randomness (Gumbel construction, selection, shuffle)
    // changes these indices; update them only deliberately.
    let log_w: Vec<f64> = (0..12).map(|i| (i as f64).sin()).collect();
    let b = buffer_with_log_w(&log_w);
    let mut rng = seeded_rng(42, 7);
    let draws: Vec<Vec<usize>> = (0..3).map(|_| b.sample_indices(5, &mut rng).unwrap()).collect();
    assert_eq!(draws, vec![vec![8, 9, 3, 1, 2], vec![9, 7, 1, 6, 10], vec![6, 2, 8, 11, 9]]);
}
