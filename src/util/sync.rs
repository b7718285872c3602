//! The one lock helper of the binary.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, also after a panic elsewhere poisoned it. Every value the binary keeps behind a
/// mutex (idle connection lists, probe tables, rate-limit buckets, certificate sources)
/// stays valid whatever point a panicking holder stopped at, so a poisoned lock is used as
/// it is rather than spreading the panic to every later caller.
#[inline]
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
