//! The client's record of faulty servers: a ban per fault, doubling with
//! each strike, strikes forgiven one per quiet `decay` and all at once
//! when the server serves a step. Capacity refusals never reach it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hypertensor_p2p::PeerId;

/// How long bans last and how fast strikes are forgiven.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BanPolicy {
    /// The first ban's length.
    pub(crate) base: Duration,
    /// The longest ban.
    pub(crate) max: Duration,
    /// One strike is forgiven for each such quiet spell.
    pub(crate) decay: Duration,
}

/// A server's record of faults.
#[derive(Debug, Clone, Copy)]
struct Ban {
    until: Instant,
    strikes: u32,
    last_fault: Instant,
}

/// Every server with strikes against it.
#[derive(Debug, Default)]
pub(crate) struct Bans {
    entries: HashMap<PeerId, Ban>,
}

impl Bans {
    /// Records a fault of `peer` at `now`; returns its strikes and the
    /// length of the ban it earned.
    pub(crate) fn fault(
        &mut self,
        peer: PeerId,
        now: Instant,
        policy: &BanPolicy,
    ) -> (u32, Duration) {
        let strikes = strikes_after_fault(self.entries.get(&peer), now, policy.decay);
        let length = ban_length(strikes, policy.base, policy.max);
        self.entries.insert(
            peer,
            Ban {
                until: now + length,
                strikes,
                last_fault: now,
            },
        );
        (strikes, length)
    }

    /// Forgets `peer`'s strikes: it just served a step.
    pub(crate) fn served(&mut self, peer: &PeerId) {
        self.entries.remove(peer);
    }

    /// Whether `peer` is banned at `now`.
    pub(crate) fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.entries.get(peer).is_some_and(|ban| ban.until > now)
    }

    /// The strikes `peer` has (0 when it has none).
    pub(crate) fn strikes(&self, peer: &PeerId) -> u32 {
        self.entries.get(peer).map_or(0, |ban| ban.strikes)
    }
}

/// A server's strikes after a new fault at `now`: its earlier strikes, less
/// one for each `decay` since its last fault, plus this one.
fn strikes_after_fault(previous: Option<&Ban>, now: Instant, decay: Duration) -> u32 {
    let decay = decay.max(Duration::from_millis(1));
    let kept = previous.map_or(0, |ban| {
        let quiet = now.saturating_duration_since(ban.last_fault);
        let forgiven = (quiet.as_nanos() / decay.as_nanos()).min(u32::MAX as u128) as u32;
        ban.strikes.saturating_sub(forgiven)
    });
    kept.saturating_add(1)
}

/// The ban for a server with `strikes`: `base` doubled for each strike past
/// the first, at most `max`.
fn ban_length(strikes: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32 << strikes.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BanPolicy = BanPolicy {
        base: Duration::from_secs(5),
        max: Duration::from_secs(600),
        decay: Duration::from_secs(60),
    };

    #[test]
    fn bans_double_with_strikes_and_strikes_decay_while_quiet() {
        let (base, max) = (POLICY.base, POLICY.max);
        assert_eq!(ban_length(1, base, max), Duration::from_secs(5));
        assert_eq!(ban_length(2, base, max), Duration::from_secs(10));
        assert_eq!(ban_length(4, base, max), Duration::from_secs(40));
        assert_eq!(ban_length(30, base, max), max);

        let decay = POLICY.decay;
        let t0 = Instant::now();
        assert_eq!(strikes_after_fault(None, t0, decay), 1);
        let ban = Ban {
            until: t0 + base,
            strikes: 5,
            last_fault: t0,
        };
        // A fault soon after: one more strike.
        assert_eq!(
            strikes_after_fault(Some(&ban), t0 + Duration::from_secs(1), decay),
            6
        );
        // Two quiet minutes forgive two strikes.
        assert_eq!(
            strikes_after_fault(Some(&ban), t0 + Duration::from_secs(121), decay),
            4
        );
        // A long quiet spell forgives them all: the next ban is the first.
        assert_eq!(
            strikes_after_fault(Some(&ban), t0 + Duration::from_secs(3600), decay),
            1
        );
    }

    #[test]
    fn a_step_served_forgives_every_strike() {
        let peer = PeerId::random();
        let other = PeerId::random();
        let mut bans = Bans::default();
        let t0 = Instant::now();
        assert_eq!(bans.fault(peer, t0, &POLICY), (1, Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(6);
        assert!(!bans.is_banned(&peer, t1), "the first ban is over");
        assert_eq!(bans.fault(peer, t1, &POLICY), (2, Duration::from_secs(10)));
        assert_eq!(bans.fault(other, t1, &POLICY).0, 1);
        assert!(bans.is_banned(&peer, t1 + Duration::from_secs(9)));
        assert_eq!(bans.strikes(&peer), 2);

        // Back after its ban, it serves a step: no strike is left, and its
        // next fault is banned as a first one, not a third.
        bans.served(&peer);
        assert_eq!(bans.strikes(&peer), 0);
        assert!(!bans.is_banned(&peer, t1));
        let t2 = t1 + Duration::from_secs(11);
        assert_eq!(bans.fault(peer, t2, &POLICY), (1, Duration::from_secs(5)));
        // Another server's record is its own.
        assert_eq!(bans.strikes(&other), 1);
    }
}
