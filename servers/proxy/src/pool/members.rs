//! Helpers of the pool: a membership with its hash ring, poison-tolerant locks, and the gathering of the backends a strategy may pick.

use super::*;

pub(super) fn members(backends: Vec<Arc<Backend>>) -> Members {
    let ids: Vec<(String, u32)> = backends
        .iter()
        .map(|b| (b.addr.to_string(), b.weight))
        .collect();
    let ring = Ring::new(ids.iter().map(|(a, w)| (a.as_str(), *w)));
    Members { backends, ring }
}

pub(super) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The indices of the backends `ok` accepts, in `few` (64 or fewer backends, no allocation)
/// or `many`; returns how many.
pub(super) fn gather(
    backends: &[Arc<Backend>],
    ok: impl Fn(&Backend) -> bool,
    few: &mut [usize; 64],
    many: &mut Vec<usize>,
) -> usize {
    let chosen = (0..backends.len()).filter(|&i| ok(&backends[i]));
    if backends.len() <= few.len() {
        let mut n = 0;
        for i in chosen {
            few[n] = i;
            n += 1;
        }
        n
    } else {
        many.clear();
        many.extend(chosen);
        many.len()
    }
}
