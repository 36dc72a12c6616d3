//! 3-vectors of lanes (one 3-vector per configuration) for the force-field and NeRF kernels.

use fab_simd::Lane;

/// A 3-vector of lanes.
pub(crate) type V3<T> = [T; 3];

/// a − b.
#[inline(always)]
pub(crate) fn sub3<T: Lane>(a: V3<T>, b: V3<T>) -> V3<T> {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
/// a + b.
#[inline(always)]
pub(crate) fn add3<T: Lane>(a: V3<T>, b: V3<T>) -> V3<T> {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
/// a·c for a scalar lane c.
#[inline(always)]
pub(crate) fn scale3<T: Lane>(a: V3<T>, c: T) -> V3<T> {
    [a[0] * c, a[1] * c, a[2] * c]
}
/// The dot product a·b.
#[inline(always)]
pub(crate) fn dot3<T: Lane>(a: V3<T>, b: V3<T>) -> T {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
/// The cross product a × b.
#[inline(always)]
pub(crate) fn cross3<T: Lane>(a: V3<T>, b: V3<T>) -> V3<T> {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}
