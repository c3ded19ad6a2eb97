//! Spot checks: catching a server that answers the consensus challenge
//! honestly but serves users something else.
//!
//! A client draws, for each sequence, whether to check it (with
//! probability [`ClientConfig::check_rate`], from a seedable stream), and
//! which hop. Nothing about the draw reaches the servers: the sequence is
//! served as any other. When it ends, out of the user's path, the checker
//! replays that hop's inputs, step by step in the sizes they were sent, to
//! another server holding exactly the same blocks, in a session like any
//! other, and compares the outputs row by row within
//! [`MAX_ROW_DEVIATION`](hypertensor_consensus::evidence::MAX_ROW_DEVIATION).
//!
//! Every answer carries its server's receipt signature over the session's
//! transcript and the output ([`hypertensor_consensus::evidence`]), so a
//! disagreement is provable: a third server with the same blocks is asked
//! up to the step in question and decides it two to one. The outvoted
//! server is convicted: banned by this client for good, and the
//! [`Evidence`] (its receipt and the two witnesses') is handed to the
//! witnesses, staked hosters, which check it and file it in the subnet's
//! DHT under `evidence/<e>`, where validators score the convicted hoster 0
//! for the epoch. With no third server, the disagreement stays unresolved
//! and is logged as such.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hypertensor_consensus::evidence::{
    Evidence, Receipt, first_disagreement, output_digest, rows_disagree,
};
use hypertensor_p2p::{Client, PeerId};
use hypertensor_primitives::Signature;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::client::{
    BadAnswer, ClientConfig, HopLoad, Shared, announced_servers, open_hop, replay,
};
use crate::error::Result;
use crate::wire::{Answer, SessionPrompts, session_transcript};

/// The unary method a client hands evidence to a witness with.
pub const EVIDENCE_METHOD: &str = "inference.evidence";

/// One ended sequence's hop, to be checked.
pub(crate) struct CheckJob {
    /// The server checked.
    pub(crate) peer: PeerId,
    /// Its blocks.
    pub(crate) start: usize,
    /// One past its last block.
    pub(crate) end: usize,
    /// Positions its session reserved (the replay reserves as much).
    pub(crate) reserve: usize,
    /// The nonce of the request that opened its session.
    pub(crate) session: [u8; 16],
    /// The deep prompt rows its session's blocks added (the replay's add
    /// the same).
    pub(crate) prompts: Option<SessionPrompts>,
    /// Every step it was sent.
    pub(crate) steps: Vec<Vec<f32>>,
    /// Its signed answers (outputs as bytes).
    pub(crate) answers: Vec<Answer>,
}

/// What a check found.
#[derive(Debug)]
enum Verdict {
    /// The outputs agreed.
    Passed,
    /// Nothing was compared (no other server, or the replay failed).
    Skipped(String),
    /// A disagreement no third server settled.
    Unresolved(String),
    /// A server outvoted two to one, with the evidence.
    Convicted(Box<Conviction>),
}

/// A server convicted by evidence, and the witnesses to hand it to.
#[derive(Debug)]
struct Conviction {
    evidence: Evidence,
    accused: PeerId,
    witnesses: [PeerId; 2],
}

/// A ChaCha20 stream from `seed`, or from the OS.
fn seeded(seed: Option<u64>) -> ChaCha20Rng {
    match seed {
        Some(seed) => ChaCha20Rng::seed_from_u64(seed),
        None => ChaCha20Rng::from_os_rng(),
    }
}

/// Draws which sequences are checked and runs the checks.
pub(crate) struct Checker {
    p2p: Client,
    config: ClientConfig,
    width: usize,
    n_blocks: usize,
    shared: Arc<Mutex<Shared>>,
    open_hops: Arc<Mutex<HashMap<PeerId, u32>>>,
    /// Which sequences and hops are checked, drawn in sequence order.
    draws: Mutex<Draws>,
    /// Which servers check (drawn as checks run, concurrently).
    picks: Mutex<ChaCha20Rng>,
}

/// The stream that decides which sequences are spot-checked: the `i`-th
/// sequence a client starts is checked iff the `i`-th draw of a ChaCha20
/// stream seeded with the seed is below the rate; a checked sequence's hop
/// is drawn from the same stream when it ends.
#[derive(Debug)]
pub struct Draws {
    rng: ChaCha20Rng,
    rate: f64,
}

impl Draws {
    /// The draws of a client with `rate` and `seed` (`None`: from the OS).
    pub fn new(rate: f64, seed: Option<u64>) -> Self {
        Draws {
            rng: seeded(seed),
            rate,
        }
    }

    /// Whether the next sequence is checked.
    pub fn next_is_checked(&mut self) -> bool {
        let draw = self.rng.random::<f64>();
        self.rate > 0.0 && draw < self.rate
    }

    /// Which of `n` hops a checked sequence has checked.
    pub fn hop(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }
}

impl Checker {
    /// A checker for a client of a model of `n_blocks` blocks of `width`.
    pub(crate) fn new(
        p2p: Client,
        config: ClientConfig,
        width: usize,
        n_blocks: usize,
        shared: Arc<Mutex<Shared>>,
        open_hops: Arc<Mutex<HashMap<PeerId, u32>>>,
    ) -> Self {
        let picks = seeded(config.check_seed.map(|seed| seed.wrapping_add(1)));
        Checker {
            draws: Mutex::new(Draws::new(config.check_rate, config.check_seed)),
            p2p,
            config,
            width,
            n_blocks,
            shared,
            open_hops,
            picks: Mutex::new(picks),
        }
    }

    fn draws(&self) -> std::sync::MutexGuard<'_, Draws> {
        self.draws.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the next sequence is checked.
    pub(crate) fn draw(&self) -> bool {
        self.draws().next_is_checked()
    }

    /// Which of `n` hops is checked.
    pub(crate) fn draw_index(&self, n: usize) -> usize {
        self.draws().hop(n)
    }

    /// Checks `job` and acts on the verdict: counts it, and on a
    /// conviction bans the server for good and hands the evidence to the
    /// witnesses.
    pub(crate) async fn check(self: Arc<Self>, job: CheckJob) {
        let verdict = self.judge(&job).await;
        if let Some(conviction) = self.record(&job, verdict) {
            self.hand_over(&conviction.evidence, &conviction.witnesses)
                .await;
        }
    }

    /// Counts and logs a verdict; a conviction bans the server for good
    /// and returns the evidence to hand to the witnesses.
    fn record(&self, job: &CheckJob, verdict: Verdict) -> Option<Box<Conviction>> {
        let mut shared = self.shared();
        match verdict {
            Verdict::Passed => {
                shared.stats.checks += 1;
                shared.stats.checks_passed += 1;
                tracing::debug!(peer = %job.peer, steps = job.steps.len(), "spot check passed");
            }
            Verdict::Skipped(why) => {
                shared.stats.checks_skipped += 1;
                tracing::debug!(peer = %job.peer, %why, "spot check skipped");
            }
            Verdict::Unresolved(why) => {
                shared.stats.checks += 1;
                shared.stats.checks_unresolved += 1;
                tracing::warn!(peer = %job.peer, %why, "spot check disagreement unresolved");
            }
            Verdict::Convicted(conviction) => {
                shared.stats.checks += 1;
                if shared.convicted.insert(conviction.accused) {
                    shared.stats.convictions += 1;
                }
                tracing::warn!(
                    accused = %conviction.accused,
                    witnesses = ?conviction.witnesses,
                    "server convicted of serving wrong outputs"
                );
                return Some(conviction);
            }
        }
        None
    }

    /// Convicts `peer` by its own signed answer `bad` to a step of its
    /// session on `blocks` (opened with nonce `session`), which is not
    /// the step's rows of finite values: evidence with no witnesses,
    /// handed to two other servers to file.
    pub(crate) async fn convict_alone(
        self: Arc<Self>,
        peer: PeerId,
        blocks: std::ops::Range<usize>,
        session: [u8; 16],
        bad: BadAnswer,
    ) {
        let dtype = self.config.dtype;
        let row_len = self.width * dtype.size();
        // Show the first row that is short or holds a non-finite value.
        let row = bad
            .answer
            .bytes
            .chunks(row_len.max(1))
            .position(|r| {
                r.len() != row_len
                    || dtype
                        .decode(r)
                        .map_or(true, |v| v.iter().any(|x| !x.is_finite()))
            })
            .unwrap_or(0);
        let signed = Signed {
            peer,
            session,
            answer: bad.answer,
        };
        let step = Step {
            blocks,
            position: bad.position,
            n_tokens: bad.n_tokens,
            inputs: bad.inputs,
        };
        let evidence = Evidence {
            accused: self.shown(&signed, &step, row),
            witnesses: Vec::new(),
        };
        let holds = evidence
            .verify(&self.p2p.genesis(), &self.config.model, self.width)
            .map(|_| ())
            .and_then(|()| Evidence::decode(&evidence.encode()).map(|_| ()));
        if let Err(e) = holds {
            tracing::info!(%peer, error = %e, "a bad answer that proves nothing (its signature?)");
            return;
        }
        {
            let mut shared = self.shared();
            if !shared.convicted.insert(peer) {
                return;
            }
            shared.stats.convictions += 1;
        }
        tracing::warn!(%peer, "server convicted by its own malformed or non-finite answer");
        // Any two other servers file it.
        let others: Vec<PeerId> =
            announced_servers(&self.p2p, &self.config.model, self.n_blocks, 0)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| *p != peer)
                .take(2)
                .collect();
        if others.is_empty() {
            tracing::info!("no server to file the evidence with");
        }
        self.hand_over(&evidence, &others).await;
    }

    /// Gives `evidence` to each witness to file in the DHT.
    async fn hand_over(&self, evidence: &Evidence, witnesses: &[PeerId]) {
        let bytes = evidence.encode();
        for witness in witnesses {
            match self
                .p2p
                .request(*witness, EVIDENCE_METHOD, bytes.clone())
                .await
            {
                Ok(_) => tracing::info!(%witness, "evidence handed to a witness"),
                Err(e) => tracing::info!(%witness, error = %e, "witness did not take the evidence"),
            }
        }
    }

    /// Servers other than `not` announcing exactly `start..end`, not
    /// banned or convicted.
    async fn others(&self, job: &CheckJob, not: &[PeerId]) -> Vec<PeerId> {
        let Ok(servers) =
            announced_servers(&self.p2p, &self.config.model, self.n_blocks, job.start).await
        else {
            return Vec::new();
        };
        let shared = self.shared();
        let now = std::time::Instant::now();
        let mut peers: Vec<PeerId> = servers
            .into_iter()
            .filter(|(peer, info)| {
                info.start as usize == job.start
                    && info.end as usize == job.end
                    && !not.contains(peer)
                    && !shared.convicted.contains(peer)
                    && !shared.bans.is_banned(peer, now)
            })
            .map(|(peer, _)| peer)
            .collect();
        peers.sort();
        peers
    }

    fn pick(&self, peers: &[PeerId]) -> Option<PeerId> {
        let mut picks = self.picks.lock().unwrap_or_else(|p| p.into_inner());
        (!peers.is_empty()).then(|| peers[picks.random_range(0..peers.len())])
    }

    /// Replays the first `count` steps of `job` on `peer`: the session's
    /// nonce and the answers.
    async fn replay_on(
        &self,
        peer: PeerId,
        job: &CheckJob,
        count: usize,
    ) -> Result<([u8; 16], Vec<Answer>)> {
        let load = HopLoad::new(&self.open_hops, peer);
        let mut hop = open_hop(
            &self.p2p,
            &self.config,
            peer,
            job.start..job.end,
            job.reserve,
            job.prompts.clone(),
            load,
        )
        .await?;
        let answers = replay(&mut hop, &job.steps[..count], self.width, &self.config).await?;
        Ok((hop.nonce(), answers))
    }

    /// Replays, compares, and when the outputs differ asks a third server.
    async fn judge(&self, job: &CheckJob) -> Verdict {
        let width = self.width;
        let dtype = self.config.dtype;
        let mine: Vec<Vec<f32>> = match job
            .answers
            .iter()
            .map(|a| dtype.decode(&a.bytes))
            .collect::<Result<_>>()
        {
            Ok(values) => values,
            Err(e) => return Verdict::Skipped(format!("answers do not decode: {e}")),
        };
        let others = self.others(job, &[job.peer]).await;
        let Some(checker) = self.pick(&others) else {
            return Verdict::Skipped("no other server holds these blocks".into());
        };
        let (checker_session, theirs) = match self.replay_on(checker, job, job.steps.len()).await {
            Ok(replayed) => replayed,
            Err(e) => return Verdict::Skipped(format!("replay on {checker} failed: {e}")),
        };
        let Some((step, row)) = mine
            .iter()
            .zip(&theirs)
            .enumerate()
            .find_map(|(k, (a, b))| first_disagreement(a, &b.values, width).map(|r| (k, r)))
        else {
            return Verdict::Passed;
        };
        tracing::info!(
            peer = %job.peer, %checker, step, row,
            "spot check: outputs disagree; asking a third server"
        );
        let thirds: Vec<PeerId> = others.into_iter().filter(|p| *p != checker).collect();
        let Some(third) = self.pick(&thirds) else {
            return Verdict::Unresolved(format!(
                "{} and {checker} disagree at step {step}, row {row}, and no third server holds the blocks",
                job.peer
            ));
        };
        let (third_session, decider) = match self.replay_on(third, job, step + 1).await {
            Ok(replayed) => replayed,
            Err(e) => {
                return Verdict::Unresolved(format!(
                    "replay on the third server {third} failed: {e}"
                ));
            }
        };
        let row_of = |values: &[f32]| -> Vec<f32> {
            values
                .get(row * width..(row + 1) * width)
                .unwrap_or_default()
                .to_vec()
        };
        let (s, t, u) = (
            row_of(&mine[step]),
            row_of(&theirs[step].values),
            row_of(&decider[step].values),
        );
        let signed = |peer, session, answer: &Answer| Signed {
            peer,
            session,
            answer: answer.clone(),
        };
        let checked = signed(job.peer, job.session, &job.answers[step]);
        let replayed = signed(checker, checker_session, &theirs[step]);
        let decided = signed(third, third_session, &decider[step]);
        let (accused, witnesses) = if !rows_disagree(&u, &t) {
            (checked, [replayed, decided])
        } else if !rows_disagree(&u, &s) {
            (replayed, [checked, decided])
        } else {
            return Verdict::Unresolved(format!(
                "three servers give three answers at step {step}, row {row}"
            ));
        };
        let evidence = Evidence {
            accused: self.receipt(job, &accused, step, row),
            witnesses: witnesses
                .iter()
                .map(|w| self.receipt(job, w, step, row))
                .collect(),
        };
        let holds = evidence
            .verify(&self.p2p.genesis(), &self.config.model, width)
            .map(|_| ())
            .and_then(|()| Evidence::decode(&evidence.encode()).map(|_| ()));
        if let Err(e) = holds {
            // Our own evidence must hold before anyone is accused.
            return Verdict::Unresolved(format!("the evidence does not verify: {e}"));
        }
        Verdict::Convicted(Box::new(Conviction {
            evidence,
            accused: accused.peer,
            witnesses: [witnesses[0].peer, witnesses[1].peer],
        }))
    }

    /// The receipt `signed` gave for step `step` of `job`, showing `row`.
    fn receipt(&self, job: &CheckJob, signed: &Signed, step: usize, row: usize) -> Receipt {
        let dtype = self.config.dtype;
        let mut transcript = session_transcript(
            &self.config.model,
            job.start as u32,
            job.end as u32,
            dtype,
            job.prompts.as_ref(),
        );
        let mut position = 0;
        let mut bytes = Vec::new();
        for input in &job.steps[..=step] {
            let n = input.len() / self.width.max(1);
            bytes.clear();
            dtype.encode_into(input, &mut bytes);
            transcript.step(position as u32, n as u32, &bytes);
            position += n;
        }
        let n_tokens = job.steps[step].len() / self.width.max(1);
        let step = Step {
            blocks: job.start..job.end,
            position: (position - n_tokens) as u32,
            n_tokens: n_tokens as u32,
            inputs: transcript.digest(),
        };
        self.shown(signed, &step, row)
    }

    /// `signed`'s receipt for `step`, showing `row` of its output.
    fn shown(&self, signed: &Signed, step: &Step, row: usize) -> Receipt {
        let dtype = self.config.dtype;
        let row_len = self.width * dtype.size();
        let (rows, _) = output_digest(&signed.answer.bytes, row_len);
        let row_bytes = signed
            .answer
            .bytes
            .chunks(row_len.max(1))
            .nth(row)
            .unwrap_or_default()
            .to_vec();
        Receipt {
            server: crate::peer_id(&signed.peer),
            client: crate::peer_id(&self.p2p.peer_id()),
            session: signed.session,
            model: self.config.model.clone(),
            start: step.blocks.start as u32,
            end: step.blocks.end as u32,
            encoding: dtype.encoding(),
            position: step.position,
            n_tokens: step.n_tokens,
            inputs: step.inputs,
            rows,
            row: row as u32,
            row_bytes,
            signature: Signature(signed.answer.signature),
        }
    }
}

/// A step of a session, as its receipts name it.
struct Step {
    blocks: std::ops::Range<usize>,
    position: u32,
    n_tokens: u32,
    /// The transcript digest after it.
    inputs: hypertensor_primitives::H256,
}

/// One server's signed answer in its session.
struct Signed {
    peer: PeerId,
    session: [u8; 16],
    answer: Answer,
}
