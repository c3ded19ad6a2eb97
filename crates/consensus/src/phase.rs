//! Epoch phases: which consensus record may be written at which block
//! (SPEC §6's table).
//!
//! Epoch `e` spans blocks `[e*L, (e+1)*L)`; a block's offset `o` in its epoch
//! gives the progress `p = o / L`. A window `[a, b)` is given in basis points
//! (1/10 000 of an epoch) and a block is inside it iff
//! `o * 10_000 >= a * L` and `o * 10_000 < b * L`, computed in `u128`: the
//! decision uses no floating point, so every node agrees on it bit for bit.

use crate::{Error, Result};

/// Basis points per epoch: progress 1.0 = 10 000.
pub const BASIS_POINTS: u32 = 10_000;

/// A window of the epoch, `[start, end)` in basis points, opened
/// `epoch_shift` epochs after the epoch the record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First basis point inside the window.
    pub start: u32,
    /// First basis point after the window (at most [`BASIS_POINTS`]).
    pub end: u32,
    /// The window opens in epoch `record_epoch + epoch_shift`.
    pub epoch_shift: u64,
}

impl Window {
    /// A window `[start, end)` of the record's own epoch.
    pub const fn new(start: u32, end: u32) -> Window {
        Window {
            start,
            end,
            epoch_shift: 0,
        }
    }

    /// Whether the block at `offset` of an epoch of `length` blocks is inside
    /// the window (ignoring which epoch that is).
    pub fn contains_offset(&self, offset: u64, length: u64) -> bool {
        let o = u128::from(offset) * u128::from(BASIS_POINTS);
        let l = u128::from(length);
        o >= u128::from(self.start) * l && o < u128::from(self.end) * l
    }

    /// The absolute blocks `[first, end)` of the window for a record of
    /// `record_epoch` (empty when the epoch is too short to hold it).
    pub fn blocks(&self, record_epoch: u64, length: u64) -> std::ops::Range<u64> {
        let base = (record_epoch + self.epoch_shift).saturating_mul(length);
        let first_offset = |bp: u32| -> u64 {
            // ceil(bp * L / 10_000): the first offset o with o * 10_000 >= bp * L.
            let n = u128::from(bp) * u128::from(length);
            let d = u128::from(BASIS_POINTS);
            u64::try_from(n.div_ceil(d)).unwrap_or(u64::MAX)
        };
        base.saturating_add(first_offset(self.start))..base.saturating_add(first_offset(self.end))
    }
}

/// The kinds of consensus record in the DHT, each under `<kind>/<epoch>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKind {
    /// `challenge/<e>`: the epoch's seed and token count.
    Challenge,
    /// `hoster-commit/<e>`.
    HosterCommit,
    /// `hoster-reveal/<e>`.
    HosterReveal,
    /// `validator-commit/<e>`.
    ValidatorCommit,
    /// `validator-reveal/<e>`, written during epoch `e + 1`.
    ValidatorReveal,
    /// `evidence/<e>`: evidence that a hoster served wrong outputs
    /// ([`crate::evidence`]); the hoster scores 0 for `e`.
    Evidence,
}

impl RecordKind {
    /// Every record kind, in table order.
    pub const ALL: [RecordKind; 6] = [
        RecordKind::Challenge,
        RecordKind::HosterCommit,
        RecordKind::HosterReveal,
        RecordKind::ValidatorCommit,
        RecordKind::ValidatorReveal,
        RecordKind::Evidence,
    ];

    /// The key prefix, e.g. `"hoster-commit"`.
    pub fn prefix(self) -> &'static str {
        match self {
            RecordKind::Challenge => "challenge",
            RecordKind::HosterCommit => "hoster-commit",
            RecordKind::HosterReveal => "hoster-reveal",
            RecordKind::ValidatorCommit => "validator-commit",
            RecordKind::ValidatorReveal => "validator-reveal",
            RecordKind::Evidence => "evidence",
        }
    }

    /// The DHT key of this kind for `epoch`, e.g. `"challenge/7"`.
    pub fn key(self, epoch: u64) -> String {
        format!("{}/{epoch}", self.prefix())
    }

    /// Parses a key `<kind>/<epoch>` (decimal epoch, no sign, no leading
    /// zeros except `0` itself).
    pub fn parse_key(key: &str) -> Result<(RecordKind, u64)> {
        let invalid = |reason: &str| Error::Invalid {
            field: "record key",
            reason: format!("{key:?}: {reason}"),
        };
        let (prefix, epoch) = key.split_once('/').ok_or_else(|| invalid("no '/'"))?;
        let kind = RecordKind::ALL
            .into_iter()
            .find(|k| k.prefix() == prefix)
            .ok_or_else(|| invalid("unknown record kind"))?;
        let canonical = !epoch.is_empty()
            && epoch.bytes().all(|b| b.is_ascii_digit())
            && (epoch == "0" || !epoch.starts_with('0'));
        if !canonical {
            return Err(invalid("epoch is not a canonical decimal number"));
        }
        let epoch = epoch
            .parse::<u64>()
            .map_err(|_| invalid("epoch out of range"))?;
        Ok((kind, epoch))
    }
}

/// Who is writing a record, as far as the windows care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// The validator the chain elected for the record's epoch.
    ElectedValidator,
    /// Any other Validator-class node.
    Validator,
    /// A node that is not Validator class (a hoster).
    Other,
}

/// The windows of SPEC §6 (*param*); [`Default`] gives the spec's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseParams {
    /// `challenge/<e>` by the elected validator: [0, 0.15).
    pub challenge: Window,
    /// `challenge/<e>` by any Validator-class node: [0.10, 0.15).
    pub challenge_fallback: Window,
    /// `hoster-commit/<e>`: [0.15, 0.50).
    pub hoster_commit: Window,
    /// `hoster-reveal/<e>`: [0.50, 0.60).
    pub hoster_reveal: Window,
    /// `validator-commit/<e>`: [0.60, 1.00).
    pub validator_commit: Window,
    /// `validator-reveal/<e>`: epoch e+1, [0.50, 0.60).
    pub validator_reveal: Window,
    /// The elected validator's `propose_attestation`: [0.60, 0.90).
    pub proposal: Window,
    /// `evidence/<e>`: [0, 0.60), closed when hosters are scored, so every
    /// scorer reads the same evidence.
    pub evidence: Window,
}

impl Default for PhaseParams {
    fn default() -> Self {
        PhaseParams {
            challenge: Window::new(0, 1_500),
            challenge_fallback: Window::new(1_000, 1_500),
            hoster_commit: Window::new(1_500, 5_000),
            hoster_reveal: Window::new(5_000, 6_000),
            validator_commit: Window::new(6_000, 10_000),
            validator_reveal: Window {
                start: 5_000,
                end: 6_000,
                epoch_shift: 1,
            },
            proposal: Window::new(6_000, 9_000),
            evidence: Window::new(0, 6_000),
        }
    }
}

/// A block's place in the chain's epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The epoch the block belongs to.
    pub epoch: u64,
    /// The block's offset in that epoch, `0..length`.
    pub offset: u64,
    /// The epoch length `L` in blocks.
    pub length: u64,
}

impl Position {
    /// The position of block `height` with epochs of `length` blocks.
    pub fn at(height: u64, length: u64) -> Result<Position> {
        if length == 0 {
            return Err(Error::Invalid {
                field: "epoch length",
                reason: "must be at least 1 block".into(),
            });
        }
        Ok(Position {
            epoch: height / length,
            offset: height % length,
            length,
        })
    }

    /// Progress through the epoch in basis points, rounded down (for display
    /// and logs; window decisions use [`Window::contains_offset`]).
    pub fn progress_bp(&self) -> u32 {
        let bp = u128::from(self.offset) * u128::from(BASIS_POINTS) / u128::from(self.length);
        u32::try_from(bp).unwrap_or(BASIS_POINTS)
    }
}

impl PhaseParams {
    /// The window of `kind` (for the challenge, the elected validator's).
    pub fn window(&self, kind: RecordKind) -> Window {
        match kind {
            RecordKind::Challenge => self.challenge,
            RecordKind::HosterCommit => self.hoster_commit,
            RecordKind::HosterReveal => self.hoster_reveal,
            RecordKind::ValidatorCommit => self.validator_commit,
            RecordKind::ValidatorReveal => self.validator_reveal,
            RecordKind::Evidence => self.evidence,
        }
    }

    fn in_window(window: Window, record_epoch: u64, now: Position) -> bool {
        record_epoch.checked_add(window.epoch_shift) == Some(now.epoch)
            && window.contains_offset(now.offset, now.length)
    }

    /// Whether `writer` may write the `kind` record of `record_epoch` at
    /// `now`. The challenge is open to the elected validator in its window
    /// and to any Validator-class node in the fallback window; every other
    /// kind depends only on time (who may write it is the stake oracle's
    /// and the record validator's business).
    pub fn may_write(
        &self,
        kind: RecordKind,
        record_epoch: u64,
        now: Position,
        writer: Writer,
    ) -> bool {
        match kind {
            RecordKind::Challenge => match writer {
                Writer::ElectedValidator => Self::in_window(self.challenge, record_epoch, now),
                Writer::Validator => Self::in_window(self.challenge_fallback, record_epoch, now),
                Writer::Other => false,
            },
            _ => Self::in_window(self.window(kind), record_epoch, now),
        }
    }

    /// Whether the record under DHT `key` may be written at `now` by someone
    /// (the writer-agnostic check a DHT phase validator makes; for the
    /// challenge this is the elected validator's wider window).
    pub fn key_open(&self, key: &str, now: Position) -> Result<bool> {
        let (kind, epoch) = RecordKind::parse_key(key)?;
        Ok(Self::in_window(self.window(kind), epoch, now))
    }

    /// The records writable at `now` by `writer`, with the epoch each
    /// belongs to, in table order.
    pub fn open_records(&self, now: Position, writer: Writer) -> Vec<(RecordKind, u64)> {
        RecordKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let shift = self.window(kind).epoch_shift;
                let epoch = now.epoch.checked_sub(shift)?;
                self.may_write(kind, epoch, now, writer)
                    .then_some((kind, epoch))
            })
            .collect()
    }

    /// Whether the elected validator of `now.epoch` may propose now.
    pub fn proposal_open(&self, now: Position) -> bool {
        self.proposal.contains_offset(now.offset, now.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(height: u64, length: u64) -> Position {
        Position::at(height, length).unwrap()
    }

    #[test]
    fn position_and_progress() {
        let p = pos(257, 100);
        assert_eq!((p.epoch, p.offset), (2, 57));
        assert_eq!(p.progress_bp(), 5_700);
        assert_eq!(pos(7, 3).progress_bp(), 3_333);
        assert!(Position::at(1, 0).is_err());
    }

    #[test]
    fn windows_at_each_offset_of_a_100_block_epoch() {
        let params = PhaseParams::default();
        let open = |offset: u64, w: Writer| params.open_records(pos(500 + offset, 100), w);
        use RecordKind::*;
        // Epoch 5, L = 100: offsets 0..=9 challenge for the elected only.
        // Evidence is open from the start to the hoster scoring.
        assert_eq!(
            open(0, Writer::ElectedValidator),
            vec![(Challenge, 5), (Evidence, 5)]
        );
        assert_eq!(open(9, Writer::Validator), vec![(Evidence, 5)]);
        assert_eq!(
            open(10, Writer::Validator),
            vec![(Challenge, 5), (Evidence, 5)]
        );
        assert_eq!(
            open(14, Writer::Validator),
            vec![(Challenge, 5), (Evidence, 5)]
        );
        assert_eq!(open(14, Writer::Other), vec![(Evidence, 5)]);
        assert_eq!(
            open(15, Writer::ElectedValidator),
            vec![(HosterCommit, 5), (Evidence, 5)]
        );
        assert_eq!(
            open(49, Writer::Other),
            vec![(HosterCommit, 5), (Evidence, 5)]
        );
        assert_eq!(
            open(50, Writer::Other),
            vec![(HosterReveal, 5), (ValidatorReveal, 4), (Evidence, 5)]
        );
        assert_eq!(
            open(59, Writer::Other),
            vec![(HosterReveal, 5), (ValidatorReveal, 4), (Evidence, 5)]
        );
        assert_eq!(open(60, Writer::Other), vec![(ValidatorCommit, 5)]);
        assert_eq!(open(99, Writer::Other), vec![(ValidatorCommit, 5)]);
        // A validator reveal for epoch 5 is not writable during epoch 5.
        assert!(!params.may_write(ValidatorReveal, 5, pos(555, 100), Writer::Validator));
        assert!(params.may_write(ValidatorReveal, 5, pos(655, 100), Writer::Validator));
        // Nor is any record of another epoch.
        assert!(!params.may_write(HosterCommit, 4, pos(520, 100), Writer::Other));
        assert!(params.proposal_open(pos(560, 100)));
        assert!(params.proposal_open(pos(589, 100)));
        assert!(!params.proposal_open(pos(590, 100)));
        assert!(!params.proposal_open(pos(559, 100)));
    }

    #[test]
    fn boundaries_round_up_when_the_epoch_length_does_not_divide() {
        // L = 7: 0.15 * 7 = 1.05, so offset 1 is still challenge and 2 is commit.
        let w = PhaseParams::default();
        assert!(w.challenge.contains_offset(1, 7));
        assert!(!w.challenge.contains_offset(2, 7));
        assert!(w.hoster_commit.contains_offset(2, 7));
        assert_eq!(w.hoster_commit.blocks(3, 7), 23..25); // ceil(1.05)=2, ceil(3.5)=4
        assert_eq!(w.validator_reveal.blocks(3, 7), 32..33); // epoch 4: ceil(3.5)=4, ceil(4.2)=5
        assert_eq!(w.validator_commit.blocks(0, 7), 5..7);
        // Every block lies in exactly one of the hoster/validator phases or the challenge.
        for offset in 0..7 {
            let n = [
                w.challenge,
                w.hoster_commit,
                w.hoster_reveal,
                w.validator_commit,
            ]
            .iter()
            .filter(|win| win.contains_offset(offset, 7))
            .count();
            assert_eq!(n, 1, "offset {offset}");
        }
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_named() {
        for kind in RecordKind::ALL {
            assert_eq!(RecordKind::parse_key(&kind.key(42)).unwrap(), (kind, 42));
        }
        for bad in [
            "challenge",
            "challenge/",
            "challenge/07",
            "challenge/-1",
            "votes/1",
            "challenge/1x",
        ] {
            let err = RecordKind::parse_key(bad).unwrap_err().to_string();
            assert!(err.contains("record key"), "{bad}: {err}");
        }
        let p = PhaseParams::default();
        assert!(p.key_open("challenge/3", pos(305, 100)).unwrap());
        assert!(!p.key_open("challenge/3", pos(315, 100)).unwrap());
        assert!(p.key_open("validator-reveal/2", pos(355, 100)).unwrap());
    }

    proptest::proptest! {
        /// For any epoch length, every block is in exactly one of the four
        /// phases of its own epoch, and `blocks` agrees with `contains_offset`.
        #[test]
        fn phases_partition_every_epoch(length in 1u64..5_000, epoch in 0u64..1_000_000) {
            let w = PhaseParams::default();
            let main = [w.challenge, w.hoster_commit, w.hoster_reveal, w.validator_commit];
            for offset in (0..length).step_by((length / 50).max(1) as usize) {
                let n = main.iter().filter(|win| win.contains_offset(offset, length)).count();
                proptest::prop_assert_eq!(n, 1);
                for win in main {
                    let blocks = win.blocks(epoch, length);
                    proptest::prop_assert_eq!(
                        blocks.contains(&(epoch * length + offset)),
                        win.contains_offset(offset, length)
                    );
                }
            }
        }
    }
}
