//! The DHT's phase clock, driven by the chain's new heads.

use std::sync::atomic::{AtomicU64, Ordering};

use hypertensor_consensus::phase::{PhaseParams, Position, RecordKind};
use hypertensor_p2p::PhaseClock;

/// Blocks of grace the DHT's phase validator allows around each window
/// (and readers wait past each window's start).
pub const PHASE_GRACE_BLOCKS: u64 = 1;

/// A chain that sends no new head for this long is taken as lost: its
/// followers reconnect.
pub const HEAD_SILENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The chain's epoch as the DHT's record validators see it: the height of
/// the latest head this node has seen, set by whoever follows the chain.
///
/// Consensus keys (`challenge/<e>`, `hoster-commit/<e>`, …) may only be
/// written in their windows of SPEC §6; every other key is always
/// writable. Heads reach peers a little apart, so a window is accepted
/// `grace_blocks` early or late: a write made on time is never refused
/// by a peer one block behind or ahead.
#[derive(Debug)]
pub struct ChainClock {
    height: AtomicU64,
    epoch_length: u64,
    phases: PhaseParams,
    grace_blocks: u64,
}

impl ChainClock {
    /// A clock at `height` for epochs of `epoch_length` blocks (at least 1).
    pub fn new(height: u64, epoch_length: u64, phases: PhaseParams, grace_blocks: u64) -> Self {
        ChainClock {
            height: AtomicU64::new(height),
            epoch_length: epoch_length.max(1),
            phases,
            grace_blocks,
        }
    }

    /// Moves the clock to a new head (never backwards).
    pub fn set_height(&self, height: u64) {
        self.height.fetch_max(height, Ordering::Relaxed);
    }

    /// The latest height seen.
    pub fn height(&self) -> u64 {
        self.height.load(Ordering::Relaxed)
    }

    /// The epoch length in blocks.
    pub fn epoch_length(&self) -> u64 {
        self.epoch_length
    }

    /// The latest head's place in its epoch.
    pub fn position(&self) -> Position {
        self.position_at(self.height())
    }

    /// The place of block `height` in its epoch.
    pub fn position_at(&self, height: u64) -> Position {
        Position {
            epoch: height / self.epoch_length,
            offset: height % self.epoch_length,
            length: self.epoch_length,
        }
    }

    /// Whether `key` is open at the latest head, within the grace.
    pub fn key_open(&self, key: &str) -> bool {
        if RecordKind::parse_key(key).is_err() {
            return true;
        }
        let height = self.height();
        let lo = height.saturating_sub(self.grace_blocks);
        let hi = height.saturating_add(self.grace_blocks);
        (lo..=hi).any(|h| {
            self.phases
                .key_open(key, self.position_at(h))
                .unwrap_or(false)
        })
    }
}

impl PhaseClock for ChainClock {
    fn epoch(&self) -> u64 {
        self.position().epoch
    }

    fn may_write(&self, key: &str) -> bool {
        self.key_open(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consensus_keys_open_only_in_their_window_with_grace() {
        // 20-block epochs: hoster commits in [3, 10), reveals in [10, 12).
        let clock = ChainClock::new(20 * 5 + 5, 20, PhaseParams::default(), 1);
        assert_eq!(clock.epoch(), 5);
        assert!(clock.may_write("hoster-commit/5"));
        assert!(!clock.may_write("hoster-reveal/5"));
        assert!(!clock.may_write("hoster-commit/4"));
        assert!(clock.may_write("smollm2.3"), "other keys are always open");
        clock.set_height(109);
        assert!(
            clock.may_write("hoster-reveal/5"),
            "one block early is allowed"
        );
        clock.set_height(113);
        assert!(!clock.may_write("hoster-reveal/5"));
        clock.set_height(112);
        assert_eq!(clock.height(), 113, "the clock never goes back");
        // The validator reveal of epoch 5 belongs to epoch 6's [10, 12).
        clock.set_height(6 * 20 + 11);
        assert!(clock.may_write("validator-reveal/5"));
        assert!(!clock.may_write("validator-reveal/6"));
    }

    #[test]
    fn without_grace_windows_are_exact() {
        let clock = ChainClock::new(109, 20, PhaseParams::default(), 0);
        assert!(!clock.may_write("hoster-reveal/5"));
        assert!(clock.may_write("hoster-commit/5"));
    }
}
