//! Tests of the rank-prioritised keyed buffer: FIFO and key-replacement semantics (also against a
//! naive model), sampling frequencies against the exact probabilities, determinism, serde round
//! trips and errors.
//!
//! The statistical tests use fixed seeds, so they are deterministic; each tolerance is stated with
//! the probability that a *correct* sampler would exceed it for a random seed.

use fab_buffer::{BufferError, Prioritisation, RankedBuffer};
use fab_core::seeded_rng;
use rand::Rng;

fn keys<V: Clone>(b: &RankedBuffer<&'static str, V>) -> Vec<&'static str> {
    b.iter().map(|(k, _, _)| *k).collect()
}

#[test]
fn fifo_eviction_order() {
    let mut b = RankedBuffer::new(3).unwrap();
    assert!(b.is_empty());
    for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
        b.insert(k, i, i as f64).unwrap();
    }
    assert_eq!((b.len(), b.capacity(), b.is_full()), (3, 3, true));
    b.insert("d", 3, 3.0).unwrap();
    assert_eq!(keys(&b), ["b", "c", "d"]);
    b.insert("e", 4, 4.0).unwrap();
    b.insert("f", 5, 5.0).unwrap();
    assert_eq!(keys(&b), ["d", "e", "f"]);
    assert!(!b.contains("a") && !b.contains("c") && b.contains("d"));
    assert_eq!(b.get(0), Some((&"d", &3, 3.0)));
    assert_eq!(b.get(2), Some((&"f", &5, 5.0)));
    assert_eq!(b.get(3), None);
    assert_eq!(b.priorities(), [3.0, 4.0, 5.0]);
    // Capacity 1: every new key replaces the only entry.
    let mut one = RankedBuffer::new(1).unwrap();
    one.insert("x", 0, 0.0).unwrap();
    one.insert("y", 1, 1.0).unwrap();
    assert_eq!(keys(&one), ["y"]);
}

#[test]
fn re_added_key_becomes_newest_and_frees_its_old_slot() {
    // Full buffer: re-adding "a" (the oldest) moves it to the end with its new value and priority;
    // nothing is evicted.
    let mut b = RankedBuffer::new(3).unwrap();
    b.insert("a", 0, 0.0).unwrap();
    b.insert("b", 1, 1.0).unwrap();
    b.insert("c", 2, 2.0).unwrap();
    b.insert("a", 10, -1.0).unwrap();
    assert_eq!(keys(&b), ["b", "c", "a"]);
    assert_eq!(b.len(), 3);
    assert_eq!(b.get_by_key("a"), Some((&10, -1.0)));
    assert_eq!(b.position("a"), Some(2));
    // The next new key evicts "b", now the oldest (not "a", whose old slot is gone).
    b.insert("d", 3, 3.0).unwrap();
    assert_eq!(keys(&b), ["c", "a", "d"]);

    // Not full: re-adding a middle key does not count twice toward the capacity.
    let mut b = RankedBuffer::new(3).unwrap();
    b.insert("a", 0, 0.0).unwrap();
    b.insert("b", 1, 1.0).unwrap();
    b.insert("a", 2, 2.0).unwrap();
    assert_eq!(keys(&b), ["b", "a"]);
    assert_eq!(b.len(), 2);
    b.insert("c", 3, 3.0).unwrap(); // fills the buffer, evicts nothing
    assert_eq!(keys(&b), ["b", "a", "c"]);
    b.insert("b", 4, 4.0).unwrap(); // the oldest re-added: no eviction
    assert_eq!(keys(&b), ["a", "c", "b"]);
    b.insert("d", 5, 5.0).unwrap(); // evicts "a"
    assert_eq!(keys(&b), ["c", "b", "d"]);
    assert_eq!(b.position("c"), Some(0));
    assert_eq!(b.position("a"), None);
    assert_eq!(b.get(1), Some((&"b", &4, 4.0)));
    // Re-adding the newest key keeps the order.
    b.insert("d", 6, 6.0).unwrap();
    assert_eq!(keys(&b), ["c", "b", "d"]);
    assert_eq!(b.iter().rev().map(|(k, _, _)| *k).collect::<Vec<_>>(), ["d", "b", "c"]);
    assert_eq!(b.iter().len(), 3);
}

/// The obvious O(N) implementation of the semantics.
struct Model {
    capacity: usize,
    entries: Vec<(u32, u64, f64)>,
}

impl Model {
    fn insert(&mut self, key: u32, value: u64, p: f64) {
        if let Some(i) = self.entries.iter().position(|e| e.0 == key) {
            self.entries.remove(i);
        } else if self.entries.len() == self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, value, p));
    }
}

fn assert_matches_model(b: &RankedBuffer<u32, u64>, m: &Model, n_keys: u32, ctx: &str) {
    let got: Vec<(u32, u64, u64)> = b.iter().map(|(k, v, p)| (*k, *v, p.to_bits())).collect();
    let want: Vec<(u32, u64, u64)> = m.entries.iter().map(|&(k, v, p)| (k, v, p.to_bits())).collect();
    assert_eq!(got, want, "{ctx}");
    assert_eq!(b.len(), m.entries.len(), "{ctx}");
    assert_eq!(b.is_full(), m.entries.len() == m.capacity, "{ctx}");
    for (i, &(k, v, p)) in m.entries.iter().enumerate() {
        assert_eq!(b.get(i), Some((&k, &v, p)), "{ctx}: get({i})");
    }
    assert_eq!(b.get(m.entries.len()), None, "{ctx}");
    for key in 0..n_keys {
        let pos = m.entries.iter().position(|e| e.0 == key);
        assert_eq!(b.position(&key), pos, "{ctx}: position({key})");
        assert_eq!(b.contains(&key), pos.is_some(), "{ctx}");
        assert_eq!(b.get_by_key(&key), pos.map(|i| (&m.entries[i].1, m.entries[i].2)), "{ctx}");
    }
}

#[test]
fn random_operations_match_a_naive_model() {
    // Small key spaces force many replacements (tombstones in the middle, at the front and at the
    // back), small capacities many evictions; the whole state is compared after every insertion.
    for (seed, capacity, n_keys, steps) in [(0, 1, 3, 300), (1, 2, 4, 600), (2, 7, 10, 3000), (3, 25, 40, 6000), (4, 60, 64, 6000)] {
        let mut rng = seeded_rng(seed, 0);
        let mut b = RankedBuffer::new(capacity).unwrap();
        let mut m = Model { capacity, entries: Vec::new() };
        for step in 0..steps {
            let key = rng.random_range(0..n_keys);
            let p = rng.random::<f64>() - 0.5;
            b.insert(key, step, p).unwrap();
            m.insert(key, step, p);
            assert_matches_model(&b, &m, n_keys, &format!("capacity {capacity}, step {step}"));
        }
    }
    // A larger buffer (id-window rebases with tombstones present), checked every 500 insertions.
    let mut rng = seeded_rng(5, 0);
    let (capacity, n_keys) = (700, 1000);
    let mut b = RankedBuffer::new(capacity).unwrap();
    let mut m = Model { capacity, entries: Vec::new() };
    for step in 0..20_000u64 {
        // Bursts of fresh keys alternate with bursts of re-added ones.
        let key = if (step / 300) % 2 == 0 { rng.random_range(0..n_keys) } else { rng.random_range(0..50) };
        b.insert(key, step, step as f64).unwrap();
        m.insert(key, step, step as f64);
        if step % 500 == 499 {
            assert_matches_model(&b, &m, n_keys, &format!("large, step {step}"));
        }
    }
}

#[test]
fn many_replacements_in_a_large_buffer_stay_cheap() {
    // 400 000 insertions into a 100 000-entry buffer, a third of them re-adding stored keys: an
    // O(N) removal per replacement would take minutes; this runs in a fraction of a second.
    let mut b = RankedBuffer::new(100_000).unwrap();
    let mut rng = seeded_rng(6, 0);
    for step in 0..400_000u64 {
        let key = rng.random_range(0..150_000u32);
        b.insert(key, step, rng.random::<f64>()).unwrap();
    }
    assert_eq!(b.len(), 100_000);
    let all: Vec<u32> = b.iter().map(|(k, _, _)| *k).collect();
    for i in (0..all.len()).step_by(997) {
        assert_eq!(b.get(i).map(|e| *e.0), Some(all[i]));
        assert_eq!(b.position(&all[i]), Some(i));
    }
    let idx = b.sample(1000, Prioritisation::rank_default(), &mut rng).unwrap();
    assert!(idx.iter().all(|&i| i < 100_000));
}

/// Counts of `n_draws` draws per position.
fn counts(b: &RankedBuffer<&'static str, u32>, how: Prioritisation, n_draws: usize, seed: u64) -> Vec<u64> {
    let mut rng = seeded_rng(seed, 0);
    let mut c = vec![0u64; b.len()];
    for i in b.sample(n_draws, how, &mut rng).unwrap() {
        c[i] += 1;
    }
    c
}

/// Every cell within 5 binomial standard errors, sqrt(n p (1 − p)), of n·p. For a correct
/// sampler a cell exceeds this with probability ≈ 5.7e-7 (normal approximation; every expected
/// count here is > 1 000), so 5 cells fail together with probability < 3e-6.
fn assert_frequencies(c: &[u64], p: &[f64], n: usize, ctx: &str) {
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    for (i, (&ci, &pi)) in c.iter().zip(p).enumerate() {
        let expected = n as f64 * pi;
        let se = (n as f64 * pi * (1.0 - pi)).sqrt();
        assert!((ci as f64 - expected).abs() <= 5.0 * se, "{ctx}: position {i}: {ci} draws, expected {expected:.1} ± {se:.1} (p = {pi})");
    }
}

/// Five entries built with one replacement, priorities with a tie and −∞:
/// positions 0..5 = c (0.3), d (2.0), e (−1.0), b (2.0, re-added), f (−∞).
fn five() -> RankedBuffer<&'static str, u32> {
    let mut b = RankedBuffer::new(5).unwrap();
    b.insert("a", 0, 9.0).unwrap();
    b.insert("b", 1, 0.0).unwrap();
    b.insert("c", 2, 0.3).unwrap();
    b.insert("d", 3, 2.0).unwrap();
    b.insert("e", 4, -1.0).unwrap();
    b.insert("b", 5, 2.0).unwrap(); // re-added: newest
    b.insert("f", 6, f64::NEG_INFINITY).unwrap(); // evicts "a"
    assert_eq!(keys(&b), ["c", "d", "e", "b", "f"]);
    b
}

#[test]
fn rank_sampling_frequencies_match_exact_probabilities() {
    let b = five();
    // By hand: priority descending, the tie 2.0/2.0 won by the newer entry (b, position 3).
    let rank_of_position = [2, 1, 3, 0, 4];
    assert_eq!(b.ranks(), rank_of_position);
    let n_draws = 200_000;
    for (seed, k) in [(10, 0.01), (11, 1.0)] {
        let n = 5.0;
        let w: Vec<f64> = (0..5).map(|r| 1.0 / (k * n + r as f64)).collect();
        let total: f64 = w.iter().sum();
        let p: Vec<f64> = rank_of_position.iter().map(|&r| w[r] / total).collect();
        let how = Prioritisation::Rank { k };
        let exact = b.probabilities(how).unwrap();
        for (a, e) in exact.iter().zip(&p) {
            assert!((a - e).abs() <= 1e-14 * e, "probabilities(): {exact:?} vs {p:?}");
        }
        assert_frequencies(&counts(&b, how, n_draws, seed), &p, n_draws, &format!("rank k = {k}"));
    }
    assert_eq!(Prioritisation::rank_default(), Prioritisation::Rank { k: 0.01 });
}

#[test]
fn uniform_sampling_frequencies() {
    let b = five();
    let n_draws = 200_000;
    let p = vec![0.2; 5];
    assert_eq!(b.probabilities(Prioritisation::Uniform).unwrap(), p);
    assert_frequencies(&counts(&b, Prioritisation::Uniform, n_draws, 12), &p, n_draws, "uniform");
}

#[test]
fn ties_and_signed_zero_rank_newer_first() {
    let mut b = RankedBuffer::new(6).unwrap();
    for (k, p) in [("a", 0.0), ("b", 1.0), ("c", -0.0), ("d", 1.0), ("e", f64::INFINITY), ("f", 0.0)] {
        b.insert(k, 0u8, p).unwrap();
    }
    // +∞ first; 1.0: d (newer) then b; 0.0 / −0.0 / 0.0: f, c, a.
    assert_eq!(b.ranks(), [5, 2, 4, 1, 0, 3]);
}

/// A buffer whose history has evictions and replacements, with awkward priorities.
fn history(capacity: usize) -> RankedBuffer<String, Vec<u32>> {
    let mut b = RankedBuffer::new(capacity).unwrap();
    let special = [f64::INFINITY, f64::NEG_INFINITY, -0.0, 5e-324, f64::MAX, 0.1 + 0.2];
    for i in 0..100u32 {
        let p = if i % 7 == 0 { special[(i / 7) as usize % special.len()] } else { (i as f64 * 0.37).sin() };
        b.insert(format!("s{}", i % 30), vec![i, i * i], p).unwrap();
    }
    b
}

fn snapshot(b: &RankedBuffer<String, Vec<u32>>) -> Vec<(String, Vec<u32>, u64)> {
    b.iter().map(|(k, v, p)| (k.clone(), v.clone(), p.to_bits())).collect()
}

#[test]
fn same_seed_same_indices() {
    let b = history(20);
    for how in [Prioritisation::Uniform, Prioritisation::rank_default(), Prioritisation::Rank { k: 3.0 }] {
        let a = b.sample(1000, how, &mut seeded_rng(7, 1)).unwrap();
        assert_eq!(a, b.sample(1000, how, &mut seeded_rng(7, 1)).unwrap(), "{how:?}");
        assert_ne!(a, b.sample(1000, how, &mut seeded_rng(8, 1)).unwrap(), "{how:?}");
        assert!(a.iter().all(|&i| i < b.len()));
        // Also through a `dyn RngCore`, the project's generator convention.
        let mut rng = seeded_rng(7, 1);
        let dyn_rng: &mut dyn rand::RngCore = &mut rng;
        assert_eq!(a, b.sample(1000, how, dyn_rng).unwrap());
    }
    // n == 0 draws nothing.
    assert!(b.sample(0, Prioritisation::Uniform, &mut seeded_rng(0, 0)).unwrap().is_empty());
}

#[test]
fn serde_round_trip_preserves_entries_and_sampling() {
    let b = history(40);
    assert_eq!(b.len(), 30);
    let json = serde_json::to_string(&b).unwrap();
    assert!(json.contains("\"-inf\"") && json.contains("\"inf\""), "{json}");
    let back: RankedBuffer<String, Vec<u32>> = serde_json::from_str(&json).unwrap();
    assert_eq!(back.capacity(), 40);
    assert_eq!(snapshot(&back), snapshot(&b));
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    for how in [Prioritisation::Uniform, Prioritisation::rank_default(), Prioritisation::Rank { k: 0.5 }] {
        let a = b.sample(5000, how, &mut seeded_rng(9, 2)).unwrap();
        assert_eq!(a, back.sample(5000, how, &mut seeded_rng(9, 2)).unwrap(), "{how:?}");
    }
    // Both continue identically (same eviction order, same replacements).
    let (mut b, mut back) = (b, back);
    for i in 0..50u32 {
        let key = format!("t{}", i % 45);
        b.insert(key.clone(), vec![i], -(i as f64)).unwrap();
        back.insert(key, vec![i], -(i as f64)).unwrap();
    }
    assert_eq!(snapshot(&back), snapshot(&b));

    // A full buffer, and one that is empty.
    let full = history(12);
    let back: RankedBuffer<String, Vec<u32>> = serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
    assert_eq!((snapshot(&back), back.is_full()), (snapshot(&full), true));
    let empty: RankedBuffer<u8, u8> = RankedBuffer::new(4).unwrap();
    let json = serde_json::to_string(&empty).unwrap();
    assert_eq!(json, r#"{"capacity":4,"entries":[]}"#);
    let back: RankedBuffer<u8, u8> = serde_json::from_str(&json).unwrap();
    assert_eq!((back.len(), back.capacity()), (0, 4));
}

#[test]
fn deserialisation_refuses_inconsistent_checkpoints() {
    type B = RankedBuffer<u32, u32>;
    assert!(serde_json::from_str::<B>(r#"{"capacity":2,"entries":[[1,10,0.5],[2,20,"-inf"]]}"#).is_ok());
    for bad in [
        r#"{"capacity":0,"entries":[]}"#,
        r#"{"capacity":1,"entries":[[1,10,0.5],[2,20,1.0]]}"#,
        r#"{"capacity":3,"entries":[[1,10,0.5],[1,20,1.0]]}"#,
        r#"{"capacity":3,"entries":[[1,10,"nan"]]}"#,
        r#"{"capacity":3,"entries":[[1,10,null]]}"#,
        r#"{"capacity":3,"entries":[],"extra":1}"#,
        r#"{"entries":[]}"#,
    ] {
        assert!(serde_json::from_str::<B>(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn prioritisation_serde() {
    let rank: Prioritisation = serde_json::from_str(r#"{"type":"rank","k":0.01}"#).unwrap();
    assert_eq!(rank, Prioritisation::rank_default());
    assert_eq!(serde_json::to_string(&Prioritisation::Uniform).unwrap(), r#"{"type":"uniform"}"#);
    assert!(serde_json::from_str::<Prioritisation>(r#"{"type":"rank"}"#).is_err());
}

#[test]
fn errors() {
    assert!(matches!(RankedBuffer::<u8, u8>::new(0), Err(BufferError::InvalidConfig(_))));

    let mut rng = seeded_rng(0, 0);
    let mut b = RankedBuffer::<u8, u8>::new(3).unwrap();
    for how in [Prioritisation::Uniform, Prioritisation::rank_default()] {
        assert!(matches!(b.sample(1, how, &mut rng), Err(BufferError::Empty)));
        assert!(matches!(b.sample(0, how, &mut rng), Err(BufferError::Empty)));
        assert_eq!(b.probabilities(how).unwrap(), Vec::<f64>::new());
    }

    // NaN priority: refused, nothing modified (also when the key is stored).
    let e = b.insert(1, 1, f64::NAN).unwrap_err();
    assert!(matches!(e, BufferError::InvalidArgument(_)) && e.to_string().contains("NaN"), "{e}");
    assert!(b.is_empty());
    b.insert(1, 1, 1.0).unwrap();
    b.insert(2, 2, 2.0).unwrap();
    assert!(b.insert(1, 9, f64::NAN).is_err());
    assert_eq!(b.iter().map(|(k, v, p)| (*k, *v, p)).collect::<Vec<_>>(), [(1, 1, 1.0), (2, 2, 2.0)]);
    // ±∞ are allowed.
    b.insert(3, 3, f64::NEG_INFINITY).unwrap();
    b.insert(4, 4, f64::INFINITY).unwrap();
    assert_eq!(b.ranks(), [1, 2, 0]); // [2 (2.0), 3 (−∞), 4 (+∞)]

    // Bad rank parameter.
    for k in [0.0, -0.01, f64::NAN, f64::INFINITY, 1e-320] {
        let how = Prioritisation::Rank { k };
        assert!(matches!(b.sample(1, how, &mut rng), Err(BufferError::InvalidArgument(_))), "k = {k}");
        assert!(b.probabilities(how).is_err());
        assert!(how.validate().is_err());
    }
    assert!(Prioritisation::Rank { k: f64::MIN_POSITIVE }.validate().is_ok());
    assert!(b.sample(10, Prioritisation::Rank { k: f64::MIN_POSITIVE }, &mut rng).unwrap().iter().all(|&i| i == 2));

    // A sample that cannot be allocated is an error, not an abort.
    assert!(matches!(b.sample(usize::MAX, Prioritisation::Uniform, &mut rng), Err(BufferError::InvalidArgument(_))));
}
