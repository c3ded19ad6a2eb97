//! How often a failed read, write or sketch is tried again.

use std::collections::BTreeMap;

/// Attempts of one thing per head: a failure is retried at once (losses
/// are often transient), a second failure waits for the next head (so an
/// instant refusal cannot spin).
const ATTEMPTS_PER_HEAD: u32 = 2;

/// The failed attempts of each thing, counted for the head each was asked
/// at.
pub(crate) struct Failures<K: Ord> {
    by: BTreeMap<K, (u64, u32)>,
}

impl<K: Ord> Default for Failures<K> {
    fn default() -> Self {
        Failures {
            by: BTreeMap::new(),
        }
    }
}

impl<K: Ord> Failures<K> {
    /// Whether `what` may not be tried again at head `height`.
    pub(crate) fn blocked(&self, what: &K, height: u64) -> bool {
        self.by
            .get(what)
            .is_some_and(|(h, n)| *h == height && *n >= ATTEMPTS_PER_HEAD)
    }

    /// Notes that an attempt of `what` asked at head `asked_at` failed.
    pub(crate) fn record(&mut self, what: K, asked_at: u64) {
        let entry = self.by.entry(what).or_insert((asked_at, 0));
        if entry.0 != asked_at {
            *entry = (asked_at, 0);
        }
        entry.1 += 1;
    }

    /// Keeps only what `keep` says.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.by.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_retried_once_at_the_same_head_then_at_the_next() {
        let mut f = Failures::default();
        assert!(!f.blocked(&"k", 5));
        f.record("k", 5);
        assert!(!f.blocked(&"k", 5), "one immediate retry");
        f.record("k", 5);
        assert!(f.blocked(&"k", 5));
        assert!(!f.blocked(&"k", 6), "the next head tries again");
        f.record("k", 6);
        assert!(!f.blocked(&"k", 6), "counted afresh per head");
    }
}
