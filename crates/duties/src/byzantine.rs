//! Faulty nodes for tests: wrappers over an honest [`Duties`]' inputs and
//! actions that do what the scores must catch. Nothing here is compiled
//! into a production build (feature `test-utils`).

use std::collections::{BTreeMap, BTreeSet};

use hypertensor_consensus::phase::RecordKind;
use hypertensor_consensus::records::{HosterReveal, ValidatorReveal};
use hypertensor_primitives::PeerId;
use hypertensor_primitives::codec::Encode;
use hypertensor_runtime::Call;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::io::{Action, Answer, DutyMachine, Input, Query};
use crate::state::Duties;

/// How a node behaves in consensus. Everything but [`Behaviour::Honest`]
/// is a fault, for adversary tests and for showing what the scores catch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Behaviour {
    /// Follows the protocol.
    #[default]
    Honest,
    /// A hoster whose sketches carry Gaussian noise of this standard
    /// deviation relative to each sketch's RMS (the sketch is linear in the
    /// block output, so this is noise on the output).
    NoisyHoster {
        /// Noise RMS / sketch RMS.
        relative_noise: f32,
    },
    /// A hoster that publishes another hoster's commit (and later its
    /// reveal) instead of its own.
    CopyCommit,
    /// A validator whose reveal does not match its commit.
    LyingReveal,
    /// A hoster whose reveal does not match its commit (it reveals other
    /// sketches than it committed to).
    LyingHosterReveal,
    /// A validator that writes no challenge and proposes nothing when it is
    /// the elected one.
    SilentWhenElected,
}

/// An honest machine with a [`Behaviour`] applied to what goes in and out.
pub struct Byzantine {
    inner: Duties,
    behaviour: Behaviour,
    rng: ChaCha20Rng,
    height: u64,
    /// Epochs this node is the elected validator of.
    elected: BTreeSet<u64>,
    /// Writes held back until another hoster's record can be copied.
    held: BTreeSet<String>,
    /// Whose records were copied, by epoch.
    victims: BTreeMap<u64, PeerId>,
    /// Held keys whose read is in flight.
    reading: BTreeSet<String>,
}

impl Byzantine {
    /// `inner` behaving as `behaviour`; its faults draw from `seed`.
    pub fn new(inner: Duties, behaviour: Behaviour, seed: [u8; 32]) -> Self {
        Byzantine {
            inner,
            behaviour,
            rng: ChaCha20Rng::from_seed(seed),
            height: 0,
            elected: BTreeSet::new(),
            held: BTreeSet::new(),
            victims: BTreeMap::new(),
            reading: BTreeSet::new(),
        }
    }

    /// The honest machine inside.
    pub fn inner(&self) -> &Duties {
        &self.inner
    }

    /// A standard normal draw (Box-Muller).
    fn normal(&mut self) -> f32 {
        let unit = |rng: &mut ChaCha20Rng| (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
        let u1 = unit(&mut self.rng).max(f32::EPSILON);
        let u2 = unit(&mut self.rng);
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// Changes an input before the honest machine sees it.
    fn tamper_input(&mut self, mut input: Input) -> Input {
        match (&self.behaviour, &mut input) {
            (Behaviour::NoisyHoster { relative_noise }, Input::Sketched { result: Ok(s), .. }) => {
                let relative = *relative_noise;
                for sketch in &mut s.sketches {
                    let rms =
                        (sketch.iter().map(|v| v * v).sum::<f32>() / sketch.len() as f32).sqrt();
                    for v in sketch.iter_mut() {
                        *v += self.normal() * relative * rms;
                    }
                }
            }
            (
                Behaviour::SilentWhenElected,
                Input::Read {
                    query: Query::Epoch(e),
                    result: Ok(Answer::Epoch(chain)),
                    ..
                },
            ) => {
                let me = chain.nodes.iter().find(|n| &n.peer_id == self.inner.me());
                if let (Some(me), Some(c)) = (me, chain.consensus.as_ref())
                    && c.validator == me.id
                {
                    self.elected.insert(*e);
                }
            }
            _ => {}
        }
        input
    }

    /// Changes (or holds back) an action of the honest machine.
    fn tamper_action(&mut self, action: Action, out: &mut Vec<Action>) {
        match (self.behaviour, action) {
            (Behaviour::SilentWhenElected, Action::Write { key, .. }) if matches!(RecordKind::parse_key(&key), Ok((RecordKind::Challenge, e)) if self.elected.contains(&e)) =>
                {}
            (
                Behaviour::SilentWhenElected,
                Action::Submit {
                    epoch,
                    call: Call::ProposeAttestation { .. },
                },
            ) if self.elected.contains(&epoch) => {}
            (Behaviour::LyingReveal, Action::Write { key, bytes })
                if matches!(
                    RecordKind::parse_key(&key),
                    Ok((RecordKind::ValidatorReveal, _))
                ) =>
            {
                let bytes = match ValidatorReveal::decode(&bytes) {
                    Ok(mut reveal) => {
                        // Reveal other scores than committed: every hoster the same.
                        let n = reveal.scores.len().max(1) as f64;
                        for (_, s) in &mut reveal.scores {
                            *s = 0.4 / n;
                        }
                        reveal.salt[0] ^= 1;
                        reveal.encode()
                    }
                    Err(_) => bytes,
                };
                out.push(Action::Write { key, bytes });
            }
            (Behaviour::LyingHosterReveal, Action::Write { key, bytes })
                if matches!(
                    RecordKind::parse_key(&key),
                    Ok((RecordKind::HosterReveal, _))
                ) =>
            {
                let bytes = match HosterReveal::decode(&bytes) {
                    Ok(mut reveal) => {
                        // Other sketches than committed: the first one moved.
                        if let Some(first) = reveal.body.sketches.first_mut() {
                            first[0] += 1.0;
                        }
                        reveal.encode()
                    }
                    Err(_) => bytes,
                };
                out.push(Action::Write { key, bytes });
            }
            (Behaviour::CopyCommit, Action::Write { key, bytes })
                if matches!(
                    RecordKind::parse_key(&key),
                    Ok((RecordKind::HosterCommit | RecordKind::HosterReveal, _))
                ) =>
            {
                drop(bytes);
                self.held.insert(key.clone());
                self.read_held(&key, out);
            }
            (_, action) => out.push(action),
        }
    }

    fn read_held(&mut self, key: &str, out: &mut Vec<Action>) {
        if self.reading.insert(key.to_string()) {
            out.push(Action::Read {
                query: Query::Key(key.to_string()),
                asked_at: self.height,
            });
        }
    }

    /// A copier's held write, once another hoster's record is there.
    fn release_held(&mut self, key: &str, answer: &Answer, out: &mut Vec<Action>) {
        let (Answer::Key(entries), Ok((kind, e))) = (answer, RecordKind::parse_key(key)) else {
            return;
        };
        let me = self.inner.me().clone();
        // One victim per epoch: a retried write copies the same record.
        let victim = match (kind, self.victims.get(&e)) {
            (_, Some(victim)) => Some(victim.clone()),
            (RecordKind::HosterCommit, None) => entries.keys().find(|w| **w != me).cloned(),
            _ => None,
        };
        let Some(victim) = victim else { return };
        let Some(bytes) = entries.get(&victim).cloned() else {
            return;
        };
        self.victims.insert(e, victim);
        self.held.remove(key);
        out.push(Action::Write {
            key: key.to_string(),
            bytes,
        });
    }
}

impl DutyMachine for Byzantine {
    fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        if let Input::Head(h) = &input {
            self.height = self.height.max(*h);
            // Nothing to copy yet: look again.
            for key in self.held.clone() {
                self.read_held(&key, &mut out);
            }
        }
        if let Input::Read {
            query: Query::Key(key),
            result,
            ..
        } = &input
            && self.reading.remove(key)
            && self.held.contains(key)
            && let Ok(answer) = result
        {
            self.release_held(&key.clone(), &answer.clone(), &mut out);
        }
        let input = self.tamper_input(input);
        for action in self.inner.handle(input) {
            self.tamper_action(action, &mut out);
        }
        out
    }
}
