//! The keyed, rank-prioritised replay buffer shared by the GFlowNet and diffusion-sampler
//! families.
//!
//! Storage: a `VecDeque` of slots, oldest first, in which a removed entry (a key that was added
//! again) leaves a tombstone, a `HashMap` from every stored key to the absolute id of its slot, and
//! a Fenwick tree over the tombstones, so that the i-th entry and the position of a key are found in
//! O(log N) while tombstones exist (O(1) when there are none). Leading tombstones are dropped at
//! once; the others are compacted away when the slot ids run past the current id window, which
//! happens only after at least as many insertions as there are entries, so every insertion is
//! O(1) amortised (plus O(log N) for the tombstone of a replaced key).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{vec_deque, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::iter::FusedIterator;
use std::sync::{Mutex, PoisonError};

use rand::Rng;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::{BufferError, Result};

/// How [`RankedBuffer::sample`] weights the stored entries (sampling is always with replacement).
///
/// Serialised as `{"type": "uniform"}` or `{"type": "rank", "k": 0.01}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Prioritisation {
    /// Every entry with probability 1/N.
    Uniform,
    /// Rank-based prioritisation (Tripp et al. 2020, as used by the GFlowNet replay buffers of
    /// the Adaptive Teacher line of work): the entries are ranked by priority, highest first
    /// (rank 0), ties broken in favour of the **newer** entry, and the entry of rank r is drawn
    /// with probability w_r / Σ_s w_s, where w_r = 1 / (k·N + r) and N is the current length.
    ///
    /// Small k concentrates the draws on the top entries (k → 0: almost always rank 0); large k
    /// tends to uniform.
    Rank {
        /// The k above: a positive number whose reciprocal is finite (a normal, not subnormal,
        /// f64). [`DEFAULT_RANK_K`](Prioritisation::DEFAULT_RANK_K) = 0.01 is the usual value.
        k: f64,
    },
}

impl Prioritisation {
    /// The usual k of [`Prioritisation::Rank`], 0.01.
    pub const DEFAULT_RANK_K: f64 = 0.01;

    /// `Rank { k: 0.01 }`.
    pub fn rank_default() -> Self {
        Self::Rank { k: Self::DEFAULT_RANK_K }
    }

    /// Checks the parameters: for [`Rank`](Self::Rank), k > 0 with 1/k finite.
    ///
    /// # Errors
    /// [`BufferError::InvalidArgument`] naming the bad k.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Uniform => Ok(()),
            Self::Rank { k } => {
                if k > 0.0 && k.is_finite() && (1.0 / k).is_finite() {
                    Ok(())
                } else {
                    Err(BufferError::InvalidArgument(format!(
                        "rank prioritisation needs k > 0 with 1/k finite (e.g. {}), got k = {k}",
                        Self::DEFAULT_RANK_K
                    )))
                }
            }
        }
    }
}

/// One stored entry.
#[derive(Clone)]
struct Entry<K, V> {
    key: K,
    value: V,
    priority: f64,
}

/// The tombstones inside the slot deque, as a Fenwick tree over absolute slot ids
/// `base .. base + span` (tree position r = id − base + 1).
///
/// Marks of tombstones that were dropped from the front of the deque stay in the tree until the
/// next rebase; queries only ever take differences of prefixes at or after the deque's head, so
/// they do not count.
#[derive(Clone, Debug)]
struct Tombstones {
    /// Absolute id of tree position 1.
    base: u64,
    /// Ids `base .. base + span` can be marked; a slot id at or past `base + span` needs a rebase.
    span: usize,
    /// Tombstones currently inside the deque.
    count: usize,
    /// Fenwick tree (1-based, length `span + 1`); empty until the first mark after a rebase.
    tree: Vec<usize>,
}

/// Slack of the id window: after a rebase the window holds `2·len + WINDOW_SLACK` ids.
const WINDOW_SLACK: usize = 32;

impl Tombstones {
    fn new(base: u64, live: usize) -> Self {
        Self { base, span: live.saturating_mul(2).saturating_add(WINDOW_SLACK), count: 0, tree: Vec::new() }
    }

    /// Marks the slot with absolute id `id` (within the window) as a tombstone.
    fn mark(&mut self, id: u64) {
        if self.tree.is_empty() {
            self.tree = vec![0; self.span + 1];
        }
        let mut r = (id - self.base) as usize + 1;
        while r <= self.span {
            self.tree[r] += 1;
            r += r & r.wrapping_neg();
        }
        self.count += 1;
    }

    /// Marks among the first `x` tree positions.
    fn prefix(&self, x: usize) -> usize {
        if self.tree.is_empty() {
            return 0;
        }
        let mut r = x.min(self.span);
        let mut s = 0;
        while r > 0 {
            s += self.tree[r];
            r &= r - 1;
        }
        s
    }

    /// The smallest tree position r with `r − prefix(r) ≥ target` (unmarked positions among the
    /// first r), for `1 ≤ target ≤ span − marks`; Fenwick descent.
    fn lower_bound_unmarked(&self, target: usize) -> usize {
        let n = self.span;
        let mut pos = 0;
        let mut rem = target;
        let mut step = if n == 0 { 0 } else { 1usize << (usize::BITS - 1 - n.leading_zeros()) };
        while step > 0 {
            let next = pos + step;
            if next <= n {
                let unmarked = step - self.tree[next];
                if unmarked < rem {
                    pos = next;
                    rem -= unmarked;
                }
            }
            step >>= 1;
        }
        pos + 1
    }
}

/// A fixed-capacity, insertion-ordered replay buffer of (key, value, priority) entries with
/// unique keys, sampled uniformly or by priority rank ([`Prioritisation`]); the replay buffer of
/// the GFlowNet and diffusion-sampler families.
///
/// * Entries are kept oldest → newest; positions (`get`, `sample`, `iter`, `priorities`,
///   `ranks`, `probabilities`) count live entries in that order, from 0.
/// * [`insert`](Self::insert) of a key that is already stored removes the old entry and appends
///   the new one as the newest (the old entry no longer counts toward the capacity); inserting
///   into a full buffer evicts the oldest entry (FIFO).
/// * Priorities are any f64 except NaN (±∞ allowed: they rank first / last).
/// * Insertion is O(1) amortised (O(log N) more when it replaces a key); `get` and `position` are
///   O(1) until some key has been replaced, O(log N) after; sampling n indices is
///   O(N + m log m + n log N) for [`Prioritisation::Rank`], where m entries were inserted since
///   the previous rank draw (the rank order is kept between draws and merged; the first draw,
///   and the first after a renumbering of the slots, sorts: O(N log N)), and O(n) for
///   [`Prioritisation::Uniform`].
/// * Serde: serialised as `{"capacity": C, "entries": [[key, value, priority], …]}` (oldest
///   first); in human-readable formats ±∞ priorities are written as the strings `"inf"` and
///   `"-inf"` (JSON has no infinities). A round trip preserves order, priorities (bit for bit)
///   and therefore every sampling result.
pub struct RankedBuffer<K, V> {
    capacity: usize,
    /// Oldest first; `None` is a tombstone. The front is never a tombstone.
    slots: VecDeque<Option<Entry<K, V>>>,
    /// Absolute id of `slots[0]` (the next id to be assigned is `head + slots.len()`).
    head: u64,
    /// Every stored key → the absolute id of its slot.
    index: HashMap<K, u64>,
    tombs: Tombstones,
    /// The rank order kept between draws (derived state: never serialised).
    ranks: Mutex<RankCache>,
}

impl<K: Clone, V: Clone> Clone for RankedBuffer<K, V> {
    fn clone(&self) -> Self {
        Self {
            capacity: self.capacity,
            slots: self.slots.clone(),
            head: self.head,
            index: self.index.clone(),
            tombs: self.tombs.clone(),
            ranks: Mutex::new(self.ranks.lock().unwrap_or_else(PoisonError::into_inner).clone()),
        }
    }
}

/// The rank order of the live entries as (priority, slot id), kept between draws so that a draw
/// costs O(N) (one merge) instead of a sort: entries inserted since the last draw wait in
/// `pending`; removed ones are dropped while merging (their ids are no longer live). Slot ids
/// are monotone in position between rebases, so ordering by (priority descending, id
/// descending) is exactly the rank order (newer first among ties); a rebase renumbers the ids
/// and empties the cache.
#[derive(Clone, Debug, Default)]
struct RankCache {
    /// Every live entry as of the last draw, in rank order; `None`: rebuild by sorting.
    sorted: Option<Vec<(f64, u64)>>,
    /// Entries inserted since (some may have been removed again).
    pending: Vec<(f64, u64)>,
    /// Ids of the entries replaced since (turned into tombstones). Evicted entries need no
    /// record: their ids are below the head.
    replaced: Vec<u64>,
    /// Cumulative rank weights for (bits of k, N).
    weights: Option<(u64, usize, Vec<f64>)>,
}

/// Rank order: priority descending (−0.0 and 0.0 tie: priorities are never NaN), then id
/// descending (newer first).
fn rank_cmp(a: &(f64, u64), b: &(f64, u64)) -> Ordering {
    b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal).then(b.1.cmp(&a.1))
}

impl<K, V> fmt::Debug for RankedBuffer<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RankedBuffer")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("tombstones", &self.tombs.count)
            .finish()
    }
}

impl<K, V> RankedBuffer<K, V> {
    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `len() == capacity()` (a new key would evict the oldest entry).
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity
    }

    /// The entries, oldest → newest, as (key, value, priority).
    pub fn iter(&self) -> RankedIter<'_, K, V> {
        RankedIter { inner: self.slots.iter(), remaining: self.len() }
    }

    /// The entry at position `i` (0 = oldest), or `None` if `i >= len()`.
    pub fn get(&self, i: usize) -> Option<(&K, &V, f64)> {
        if i >= self.len() {
            return None;
        }
        let e = self.slots.get(self.slot_of_position(i))?.as_ref()?;
        Some((&e.key, &e.value, e.priority))
    }

    /// The priorities, oldest → newest.
    pub fn priorities(&self) -> Vec<f64> {
        self.iter().map(|(_, _, p)| p).collect()
    }

    /// The rank of every entry, by position (oldest → newest): 0 for the highest priority, ties
    /// broken in favour of the newer entry (the rank order of [`Prioritisation::Rank`]).
    pub fn ranks(&self) -> Vec<usize> {
        self.with_rank_order(|order| {
            let mut ranks = vec![0; order.len()];
            for (r, &(_, id)) in order.iter().enumerate() {
                ranks[self.position_of_id(id)] = r;
            }
            ranks
        })
    }

    /// The probability with which one draw of [`sample`](Self::sample) returns each position
    /// (oldest → newest); empty for an empty buffer.
    ///
    /// # Errors
    /// [`BufferError::InvalidArgument`] if `how` is invalid ([`Prioritisation::validate`]).
    pub fn probabilities(&self, how: Prioritisation) -> Result<Vec<f64>> {
        how.validate()?;
        let n = self.len();
        match how {
            Prioritisation::Uniform => Ok(vec![1.0 / n as f64; n]),
            Prioritisation::Rank { k } => Ok(self.with_rank_order(|order| {
                let total = rank_cumulative_weights(k, n).last().copied().unwrap_or(1.0);
                let mut p = vec![0.0; n];
                for (r, &(_, id)) in order.iter().enumerate() {
                    p[self.position_of_id(id)] = rank_weight(k, n, r) / total;
                }
                p
            })),
        }
    }

    /// Draws `n` positions with replacement, each independently with the probabilities of
    /// [`probabilities`](Self::probabilities).
    ///
    /// Randomness: exactly `n` draws, whatever the contents: `rng.random_range(0..len())` each
    /// for [`Prioritisation::Uniform`]; `rng.random::<f64>()` each for [`Prioritisation::Rank`]
    /// (inverted through the cumulative rank weights by binary search). So the same generator
    /// state and the same entries (order and priorities) give the same positions.
    ///
    /// # Errors
    /// [`BufferError::InvalidArgument`] if `how` is invalid or `n` indices cannot be allocated;
    /// [`BufferError::Empty`] if the buffer is empty (even for `n == 0`).
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, how: Prioritisation, rng: &mut R) -> Result<Vec<usize>> {
        how.validate()?;
        let len = self.len();
        if len == 0 {
            return Err(BufferError::Empty);
        }
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|e| BufferError::InvalidArgument(format!("cannot allocate {n} sample indices: {e}")))?;
        match how {
            Prioritisation::Uniform => out.extend((0..n).map(|_| rng.random_range(0..len))),
            Prioritisation::Rank { k } => {
                let mut cache = self.ranks.lock().unwrap_or_else(PoisonError::into_inner);
                let order = self.update_rank_order(&mut cache);
                let cum = match cache.weights.take() {
                    Some((kb, m, w)) if kb == k.to_bits() && m == len => w,
                    _ => rank_cumulative_weights(k, len),
                };
                let total = cum[len - 1];
                out.extend((0..n).map(|_| {
                    let u = rng.random::<f64>() * total;
                    // First rank whose cumulative weight exceeds u; the clamp only matters if
                    // rounding made u reach the total.
                    let r = cum.partition_point(|&c| c <= u).min(len - 1);
                    self.position_of_id(order[r].1)
                }));
                cache.sorted = Some(order);
                cache.weights = Some((k.to_bits(), len, cum));
            }
        }
        Ok(out)
    }

    /// Runs `f` on the live entries in rank order (as (priority, slot id)).
    fn with_rank_order<R>(&self, f: impl FnOnce(&[(f64, u64)]) -> R) -> R {
        let mut cache = self.ranks.lock().unwrap_or_else(PoisonError::into_inner);
        let order = self.update_rank_order(&mut cache);
        let r = f(&order);
        cache.sorted = Some(order);
        r
    }

    /// The live entries in rank order, from the cache (taken out of it; the caller puts it
    /// back): the last order with the removed entries dropped and the pending ones merged in,
    /// or, with no last order, all entries sorted.
    fn update_rank_order(&self, cache: &mut RankCache) -> Vec<(f64, u64)> {
        // Liveness from the head and the replaced ids only: looking each id up in the slots
        // would be a cache miss per entry (the rank order is random in slot order).
        let mut replaced = std::mem::take(&mut cache.replaced);
        replaced.sort_unstable();
        let live = |id: u64| id >= self.head && replaced.binary_search(&id).is_err();
        let mut pending = std::mem::take(&mut cache.pending);
        match cache.sorted.take() {
            None => {
                let mut all: Vec<(f64, u64)> =
                    self.slots.iter().enumerate().filter_map(|(j, e)| e.as_ref().map(|e| (e.priority, self.head + j as u64))).collect();
                all.sort_unstable_by(rank_cmp);
                all
            }
            Some(old) => {
                pending.retain(|&(_, id)| live(id));
                pending.sort_unstable_by(rank_cmp);
                let mut merged = Vec::with_capacity(self.len());
                let mut new = pending.into_iter().peekable();
                for e in old.into_iter().filter(|&(_, id)| live(id)) {
                    while let Some(p) = new.next_if(|p| rank_cmp(p, &e) == Ordering::Less) {
                        merged.push(p);
                    }
                    merged.push(e);
                }
                merged.extend(new);
                merged
            }
        }
    }

    /// Position (0 = oldest) of the live entry in the slot with absolute id `id`.
    fn position_of_id(&self, id: u64) -> usize {
        let j = (id - self.head) as usize;
        if self.tombs.count == 0 {
            return j;
        }
        let h0 = (self.head - self.tombs.base) as usize;
        j - (self.tombs.prefix(h0 + j) - self.tombs.prefix(h0))
    }

    /// Index into `slots` of the live entry at position `i < len()`.
    fn slot_of_position(&self, i: usize) -> usize {
        if self.tombs.count == 0 {
            return i;
        }
        let h0 = (self.head - self.tombs.base) as usize;
        let target = h0 - self.tombs.prefix(h0) + i + 1;
        self.tombs.lower_bound_unmarked(target) - 1 - h0
    }
}

/// w_r = 1 / (k·N + r).
fn rank_weight(k: f64, n: usize, r: usize) -> f64 {
    1.0 / (k * n as f64 + r as f64)
}

/// Running sums of w_0, …, w_{n−1}, added in rank order.
fn rank_cumulative_weights(k: f64, n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    (0..n)
        .map(|r| {
            acc += rank_weight(k, n, r);
            acc
        })
        .collect()
}

impl<K: Eq + Hash + Clone, V: Clone> RankedBuffer<K, V> {
    /// An empty buffer holding at most `capacity` entries (memory grows with use, not with the
    /// capacity).
    ///
    /// # Errors
    /// [`BufferError::InvalidConfig`] if `capacity == 0`.
    pub fn new(capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(BufferError::InvalidConfig("capacity of a ranked buffer must be > 0".into()));
        }
        Ok(Self { capacity, slots: VecDeque::new(), head: 0, index: HashMap::new(), tombs: Tombstones::new(0, 0), ranks: Mutex::default() })
    }

    /// Stores `(key, value, priority)` as the newest entry. If `key` is already stored, its old
    /// entry is removed first (so it does not count toward the capacity and nothing is evicted);
    /// otherwise, if the buffer is full, the oldest entry is evicted.
    ///
    /// # Errors
    /// [`BufferError::InvalidArgument`] (nothing is modified) if `priority` is NaN; ±∞ are
    /// accepted.
    pub fn insert(&mut self, key: K, value: V, priority: f64) -> Result<()> {
        if priority.is_nan() {
            return Err(BufferError::InvalidArgument("priority is NaN: ranked-buffer priorities must be numbers (±∞ are allowed)".into()));
        }
        if let Some(id) = self.index.remove(&key) {
            self.remove_slot(id);
        } else if self.len() >= self.capacity {
            self.evict_oldest();
        }
        if self.head + self.slots.len() as u64 - self.tombs.base >= self.tombs.span as u64 {
            self.rebase();
        }
        let id = self.head + self.slots.len() as u64;
        self.index.insert(key.clone(), id);
        self.slots.push_back(Some(Entry { key, value, priority }));
        let len = self.len();
        let cache = self.ranks.get_mut().unwrap_or_else(PoisonError::into_inner);
        if cache.sorted.is_some() {
            cache.pending.push((priority, id));
            if cache.pending.len() > len / 2 + WINDOW_SLACK {
                // Cheaper to sort everything at the next draw than to keep this many.
                *cache = RankCache { weights: cache.weights.take(), ..RankCache::default() };
            }
        }
        Ok(())
    }

    /// Whether `key` is stored.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.contains_key(key)
    }

    /// The value and priority stored under `key`.
    pub fn get_by_key<Q>(&self, key: &Q) -> Option<(&V, f64)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let &id = self.index.get(key)?;
        let e = self.slots.get((id - self.head) as usize)?.as_ref()?;
        Some((&e.value, e.priority))
    }

    /// The position (0 = oldest) of the entry stored under `key`.
    pub fn position<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let &id = self.index.get(key)?;
        Some(self.position_of_id(id))
    }

    /// Turns the slot with absolute id `id` (whose key was already taken out of the index) into a
    /// tombstone.
    fn remove_slot(&mut self, id: u64) {
        let j = (id - self.head) as usize;
        if let Some(slot) = self.slots.get_mut(j) {
            *slot = None;
            let cache = self.ranks.get_mut().unwrap_or_else(PoisonError::into_inner);
            if cache.sorted.is_some() {
                cache.replaced.push(id);
            }
            self.tombs.mark(id);
            self.drop_leading_tombstones();
        }
    }

    /// Drops the oldest entry (the front slot, never a tombstone).
    fn evict_oldest(&mut self) {
        if let Some(Some(e)) = self.slots.pop_front() {
            self.index.remove(&e.key);
        }
        self.head += 1;
        self.drop_leading_tombstones();
    }

    fn drop_leading_tombstones(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.head += 1;
            self.tombs.count -= 1;
        }
    }

    /// Compacts the tombstones away (renumbering the slots from `head`) and opens a fresh id
    /// window of `2·len + WINDOW_SLACK` ids at `head`. Called when the next id would leave the
    /// window, i.e. at least `len + WINDOW_SLACK` insertions after the previous rebase, and costs
    /// O(len + tombstones), so O(1) amortised per insertion.
    fn rebase(&mut self) {
        if self.tombs.count > 0 {
            let slots = std::mem::take(&mut self.slots);
            self.slots = slots.into_iter().filter(Option::is_some).collect();
            for (j, e) in self.slots.iter().enumerate() {
                if let Some(e) = e {
                    if let Some(id) = self.index.get_mut(&e.key) {
                        *id = self.head + j as u64;
                    }
                }
            }
        }
        self.tombs = Tombstones::new(self.head, self.slots.len());
        // The ids were renumbered: the cached order refers to the old ones.
        let cache = self.ranks.get_mut().unwrap_or_else(PoisonError::into_inner);
        *cache = RankCache { weights: cache.weights.take(), ..RankCache::default() };
    }
}

/// Iterator over the entries of a [`RankedBuffer`], oldest → newest, as (key, value, priority);
/// from [`RankedBuffer::iter`].
pub struct RankedIter<'a, K, V> {
    inner: vec_deque::Iter<'a, Option<Entry<K, V>>>,
    remaining: usize,
}

impl<K, V> fmt::Debug for RankedIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RankedIter").field("remaining", &self.remaining).finish()
    }
}

impl<K, V> Clone for RankedIter<'_, K, V> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), remaining: self.remaining }
    }
}

impl<'a, K, V> Iterator for RankedIter<'a, K, V> {
    type Item = (&'a K, &'a V, f64);

    fn next(&mut self) -> Option<Self::Item> {
        let e = self.inner.by_ref().flatten().next()?;
        self.remaining -= 1;
        Some((&e.key, &e.value, e.priority))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<K, V> DoubleEndedIterator for RankedIter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let e = self.inner.by_ref().rev().flatten().next()?;
        self.remaining -= 1;
        Some((&e.key, &e.value, e.priority))
    }
}

impl<K, V> ExactSizeIterator for RankedIter<'_, K, V> {}

impl<K, V> FusedIterator for RankedIter<'_, K, V> {}

impl<'a, K, V> IntoIterator for &'a RankedBuffer<K, V> {
    type Item = (&'a K, &'a V, f64);
    type IntoIter = RankedIter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A priority on the wire: a plain f64, except that human-readable formats write ±∞ as the
/// strings `"inf"` / `"-inf"` (JSON cannot hold infinities).
struct WirePriority(f64);

impl Serialize for WirePriority {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let p = self.0;
        if s.is_human_readable() && p.is_infinite() {
            s.serialize_str(if p > 0.0 { "inf" } else { "-inf" })
        } else {
            s.serialize_f64(p)
        }
    }
}

impl<'de> Deserialize<'de> for WirePriority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct PriorityVisitor;
        impl Visitor<'_> for PriorityVisitor {
            type Value = WirePriority;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a priority: a number, \"inf\" or \"-inf\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<WirePriority, E> {
                Ok(WirePriority(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<WirePriority, E> {
                Ok(WirePriority(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<WirePriority, E> {
                Ok(WirePriority(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<WirePriority, E> {
                match v {
                    "inf" | "+inf" => Ok(WirePriority(f64::INFINITY)),
                    "-inf" => Ok(WirePriority(f64::NEG_INFINITY)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(PriorityVisitor)
        } else {
            d.deserialize_f64(PriorityVisitor)
        }
    }
}

/// The entries of a buffer as one sequence of (key, value, priority) triples, oldest first.
struct EntriesRef<'a, K, V>(&'a RankedBuffer<K, V>);

impl<K: Serialize, V: Serialize> Serialize for EntriesRef<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, v, p)| (k, v, WirePriority(p))))
    }
}

impl<K: Serialize, V: Serialize> Serialize for RankedBuffer<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("RankedBuffer", 2)?;
        st.serialize_field("capacity", &self.capacity)?;
        st.serialize_field("entries", &EntriesRef(self))?;
        st.end()
    }
}

/// The serialised form of a [`RankedBuffer`].
#[derive(Deserialize)]
#[serde(rename = "RankedBuffer", deny_unknown_fields)]
struct Wire<K, V> {
    capacity: usize,
    entries: Vec<(K, V, WirePriority)>,
}

impl<'de, K, V> Deserialize<'de> for RankedBuffer<K, V>
where
    K: Deserialize<'de> + Eq + Hash + Clone,
    V: Deserialize<'de> + Clone,
{
    /// Rebuilds the buffer by inserting the entries in order.
    ///
    /// # Errors
    /// A capacity of 0, more entries than the capacity, a key that appears twice or a NaN
    /// priority are refused (as the deserializer's error).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let wire = Wire::<K, V>::deserialize(d)?;
        let mut buf = Self::new(wire.capacity).map_err(de::Error::custom)?;
        if wire.entries.len() > wire.capacity {
            return Err(de::Error::custom(format!(
                "ranked buffer holds {} entries but its capacity is {}",
                wire.entries.len(),
                wire.capacity
            )));
        }
        buf.index.reserve(wire.entries.len());
        buf.slots.reserve(wire.entries.len());
        for (i, (key, value, WirePriority(p))) in wire.entries.into_iter().enumerate() {
            if buf.contains(&key) {
                return Err(de::Error::custom(format!("ranked buffer entry {i} repeats the key of an earlier entry")));
            }
            buf.insert(key, value, p).map_err(|e| de::Error::custom(format!("ranked buffer entry {i}: {e}")))?;
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Positions in rank order computed from scratch (the definition: priority descending, newer
    /// first among ties).
    fn rank_order_by_sorting<K, V>(b: &RankedBuffer<K, V>) -> Vec<usize> {
        let mut keyed: Vec<(f64, usize)> = b.iter().enumerate().map(|(i, (_, _, p))| (p, i)).collect();
        keyed.sort_by(|a, c| c.0.partial_cmp(&a.0).unwrap().then(c.1.cmp(&a.1)));
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// The rank order kept between draws (merging insertions, dropping evicted and replaced
    /// entries, reset by rebases) equals a fresh sort after every kind of change, and draws
    /// equal those inverted through the fresh order with the same generator. Priorities come
    /// from a small set so that ties (newer first) matter; keys repeat so that replacements
    /// leave tombstones; the capacity is exceeded so that evictions and rebases happen.
    #[test]
    fn kept_rank_order_equals_a_fresh_sort() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (capacity, n_keys) in [(50usize, 80u32), (200, 1000), (7, 9)] {
            let mut b = RankedBuffer::new(capacity).unwrap();
            let k = 0.05;
            for step in 0..3000 {
                let n_ins = rng.random_range(0..12);
                for _ in 0..n_ins {
                    let key = rng.random_range(0..n_keys);
                    let p =
                        [0.0, -0.0, 1.5, -2.0, f64::INFINITY, f64::NEG_INFINITY][rng.random_range(0..6)] + (rng.random_range(0..3) as f64);
                    b.insert(key, step, p).unwrap();
                }
                if b.is_empty() {
                    continue;
                }
                let order = rank_order_by_sorting(&b);
                let mut expect_ranks = vec![0; order.len()];
                for (r, &i) in order.iter().enumerate() {
                    expect_ranks[i] = r;
                }
                match step % 3 {
                    0 => assert_eq!(b.ranks(), expect_ranks, "capacity {capacity} step {step}"),
                    1 => {
                        let seed: u64 = rng.random();
                        let drawn = b.sample(40, Prioritisation::Rank { k }, &mut rand::rngs::StdRng::seed_from_u64(seed)).unwrap();
                        let cum = rank_cumulative_weights(k, order.len());
                        let total = cum[order.len() - 1];
                        let mut r2 = rand::rngs::StdRng::seed_from_u64(seed);
                        let expect: Vec<usize> = (0..40)
                            .map(|_| {
                                let u = r2.random::<f64>() * total;
                                order[cum.partition_point(|&c| c <= u).min(order.len() - 1)]
                            })
                            .collect();
                        assert_eq!(drawn, expect, "capacity {capacity} step {step}");
                    }
                    _ => {
                        let p = b.probabilities(Prioritisation::Rank { k }).unwrap();
                        let total = rank_cumulative_weights(k, order.len()).last().copied().unwrap();
                        for (r, &i) in order.iter().enumerate() {
                            assert_eq!(p[i], rank_weight(k, order.len(), r) / total);
                        }
                    }
                }
                // A clone carries the kept order and stays consistent on its own.
                if step % 97 == 0 {
                    let mut c = b.clone();
                    c.insert(n_keys + 1, step, 0.5).unwrap();
                    let order_c = rank_order_by_sorting(&c);
                    let ranks_c = c.ranks();
                    for (r, &i) in order_c.iter().enumerate() {
                        assert_eq!(ranks_c[i], r);
                    }
                }
            }
        }
    }

    /// The internal invariants: the front slot is live, the tombstone count matches, every key's
    /// id points at its own slot inside the id window, and the window bound holds.
    fn check_invariants<K: Eq + Hash + Clone + fmt::Debug, V: Clone>(b: &RankedBuffer<K, V>) {
        assert!(b.slots.front().is_none_or(Option::is_some), "front slot is a tombstone");
        assert_eq!(b.tombs.count, b.slots.iter().filter(|s| s.is_none()).count());
        assert_eq!(b.index.len(), b.slots.len() - b.tombs.count);
        assert!(b.len() <= b.capacity);
        assert!(b.head >= b.tombs.base);
        assert!(b.head + b.slots.len() as u64 - b.tombs.base <= b.tombs.span as u64);
        for (key, &id) in &b.index {
            let e = b.slots[(id - b.head) as usize].as_ref().expect("index points at a tombstone");
            assert_eq!(&e.key, key);
        }
    }

    #[test]
    fn tombstones_stay_bounded_and_indexing_matches_a_scan() {
        // Capacity 50, keys from 0..80: about a third of the insertions replace a stored key.
        let mut b = RankedBuffer::new(50).unwrap();
        let mut state = 12345u64;
        let mut max_slots = 0;
        let mut saw_tombstones = false;
        for step in 0..20_000u64 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let key = (state >> 33) % 80;
            b.insert(key, step, (state >> 11) as f64).unwrap();
            max_slots = max_slots.max(b.slots.len());
            if step % 97 == 0 {
                check_invariants(&b);
                saw_tombstones |= b.tombs.count > 0;
                let scan: Vec<u64> = b.iter().map(|(k, _, _)| *k).collect();
                for (i, k) in scan.iter().enumerate() {
                    assert_eq!(b.get(i).map(|e| *e.0), Some(*k));
                    assert_eq!(b.position(k), Some(i));
                }
            }
        }
        // The slot deque never holds more than the id window: 2·len + slack.
        assert!(max_slots <= 2 * 50 + WINDOW_SLACK, "{max_slots} slots for 50 entries");
        // Tombstones inside the deque occurred at some checks (the Fenwick paths were exercised).
        assert!(saw_tombstones);
    }

    #[test]
    fn replacing_the_newest_key_repeatedly_keeps_one_entry() {
        let mut b = RankedBuffer::new(3).unwrap();
        for i in 0..1000 {
            b.insert("a", i, 0.0).unwrap();
            check_invariants(&b);
        }
        assert_eq!(b.len(), 1);
        assert!(b.slots.len() <= 2 + WINDOW_SLACK);
        assert_eq!(b.get(0), Some((&"a", &999, 0.0)));
    }

    #[test]
    fn fenwick_lower_bound_matches_linear_scan() {
        let mut t = Tombstones::new(0, 20); // span 72
        let marked = [0u64, 1, 5, 6, 7, 30, 63, 70];
        for &m in &marked {
            t.mark(m);
        }
        let unmarked_prefix = |r: usize| (0..r as u64).filter(|id| !marked.contains(id)).count();
        for x in 0..=t.span {
            assert_eq!(t.prefix(x), x - unmarked_prefix(x));
        }
        for target in 1..=t.span - marked.len() {
            let expect = (1..=t.span).find(|&r| unmarked_prefix(r) >= target).unwrap();
            assert_eq!(t.lower_bound_unmarked(target), expect, "target {target}");
        }
    }
}
