//! A server refuses to run this epoch's consensus challenge for a client
//! (SPEC §6), over real loopback sessions, and serves everything else.

use std::sync::Arc;
use std::time::Duration;

use hypertensor_inference::wire::{
    Dtype, OpenRequest, SESSION_METHOD, SessionPrompts, Step, decode_open_reply, decode_step_reply,
};
use hypertensor_inference::{AdmitAll, BlockServer, ServerConfig, p2p_config};
use hypertensor_model::{BlockSpan, DeepPrompts, HiddenStates};
use hypertensor_p2p::{Client, Config, Multiaddr, PeerId, RpcSession};
use hypertensor_primitives::{H256, Keypair};

use crate::harness::{MODEL, span};

const GENESIS: H256 = H256([7; 32]);
const TOKENS: usize = 4;

fn node_config(name: &str, bootstrap: Option<Multiaddr>) -> Config {
    let mut cfg = p2p_config(Keypair::dev(name), 1, GENESIS, MODEL, Arc::new(AdmitAll));
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.bootstrap = bootstrap.into_iter().collect();
    cfg.query_timeout = Duration::from_secs(5);
    cfg
}

/// `[TOKENS, width]` deterministic states, different for each `seed`.
fn states(width: usize, seed: usize) -> Vec<f32> {
    (0..TOKENS * width)
        .map(|i| ((i * 37 + seed * 11) % 101) as f32 * 0.02 - 1.0)
        .collect()
}

/// What the span gives for `steps` run in order on one fresh cache.
fn local(span: &BlockSpan, steps: &[&[f32]]) -> Vec<f32> {
    let width = span.config().hidden_size;
    let mut cache = span.new_cache();
    let mut out = Vec::new();
    for values in steps {
        let mut hidden = HiddenStates::new(width, values.to_vec()).unwrap();
        span.forward(&mut hidden, &mut cache).unwrap();
        out = hidden.into_vec();
    }
    out
}

async fn open(p2p: &Client, server: PeerId, dtype: Dtype) -> RpcSession {
    open_with(p2p, server, dtype, None).await.unwrap()
}

/// Opens a session whose blocks add `prompts`; the refusal's reason if
/// the server refuses it.
async fn open_with(
    p2p: &Client,
    server: PeerId,
    dtype: Dtype,
    prompts: Option<SessionPrompts>,
) -> Result<RpcSession, String> {
    let request = OpenRequest {
        model: MODEL.to_string(),
        start: 0,
        end: 2,
        dtype,
        max_tokens: 4 * TOKENS as u32,
        // Each session its own push token (a server refuses one in use).
        token: {
            static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
            [NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed); 16]
        },
        prompts,
    };
    let opened = async {
        let mut session = p2p
            .open_session(server, SESSION_METHOD, request.encode())
            .await
            .unwrap();
        let reply = session.recv().await.unwrap().unwrap();
        (session, reply)
    };
    let (session, reply) = tokio::time::timeout(Duration::from_secs(30), opened)
        .await
        .expect("the server answers the opening within 30 s");
    decode_open_reply(&reply)
        .unwrap()
        .map(|()| session)
        .map_err(|r| r.to_string())
}

async fn step(
    session: &mut RpcSession,
    dtype: Dtype,
    position: usize,
    values: &[f32],
    width: usize,
) -> Result<Vec<f32>, String> {
    let frame = Step {
        position: position as u32,
        n_tokens: (values.len() / width) as u32,
        forward: Vec::new(),
        values: values.to_vec(),
    }
    .encode(dtype);
    session.send(&frame).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), session.recv())
        .await
        .expect("the server answers the step")
        .unwrap()
        .expect("the session stays open");
    decode_step_reply(&reply, dtype)
        .unwrap()
        .map(|answer| answer.values)
        .map_err(|r| r.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refuses_the_consensus_challenge_and_serves_other_inputs() {
    // A server of blocks 0..2 and a raw client dialling it directly.
    let (server_p2p, events, event_loop) =
        hypertensor_p2p::new(node_config("challenge-server", None)).unwrap();
    let server_net = tokio::spawn(event_loop.run());
    let server_addr = server_p2p.listen_addrs().await.unwrap()[0]
        .clone()
        .with_p2p(server_p2p.peer_id())
        .unwrap();
    let server_peer = server_p2p.peer_id();
    let mut config = ServerConfig::new(MODEL);
    config.throughput = Some(1.0);
    let server = Arc::new(BlockServer::new(span(0..2), config).unwrap());
    let server_run = tokio::spawn(server.clone().run(server_p2p, events));

    let (client, _client_events, event_loop) =
        hypertensor_p2p::new(node_config("challenge-client", Some(server_addr))).unwrap();
    let client_net = tokio::spawn(event_loop.run());
    let start = tokio::time::Instant::now();
    while client.routing_table_size().await.unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let local_span = server.shared_span();
    assert_eq!(local_span.range(), 0..2);
    let width = local_span.config().hidden_size;
    let challenge = states(width, 1);
    let other = states(width, 2);
    let next = states(width, 3);
    assert_ne!(challenge, other);
    server.set_challenge_input(Some(challenge.clone()));

    let mut session = open(&client, server_peer, Dtype::F32).await;
    // Exactly the challenge, at position 0: refused with the reason.
    let refused = step(&mut session, Dtype::F32, 0, &challenge, width)
        .await
        .unwrap_err();
    assert!(refused.contains("consensus challenge"), "{refused}");
    // Its first row alone (to get the outputs token by token) is refused too.
    let refused = step(&mut session, Dtype::F32, 0, &challenge[..width], width)
        .await
        .unwrap_err();
    assert!(refused.contains("consensus challenge"), "{refused}");
    // Another input of the same shape is served, on the same session.
    let got = step(&mut session, Dtype::F32, 0, &other, width)
        .await
        .unwrap();
    assert_eq!(got, local(&local_span, &[&other]));
    // The challenge is refused again, and the refusal leaves the session's
    // cache as it was: the sequence continues at position TOKENS.
    let refused = step(&mut session, Dtype::F32, 0, &challenge, width)
        .await
        .unwrap_err();
    assert!(refused.contains("consensus challenge"), "{refused}");
    let got = step(&mut session, Dtype::F32, TOKENS, &next, width)
        .await
        .unwrap();
    assert_eq!(got, local(&local_span, &[&other, &next]));
    // The challenge after other tokens (not position 0) is not the challenge.
    let got = step(&mut session, Dtype::F32, 2 * TOKENS, &challenge, width).await;
    assert!(got.is_ok(), "{got:?}");

    // A session whose blocks add deep prompt rows: the first block sees
    // the first row plus the prompt's, so a first row that makes the
    // challenge with it is refused, and other inputs are served with the
    // prompt added, as a local cache with the same prompt gives.
    let rows: Vec<Vec<f32>> = (0..2)
        .map(|b| states(width, 5 + b)[..width].to_vec())
        .collect();
    let prompts = SessionPrompts {
        rows: 1,
        values: rows.concat(),
    };
    let mut tuned = open_with(&client, server_peer, Dtype::F32, Some(prompts.clone()))
        .await
        .unwrap();
    let mut disguised = challenge.clone();
    disguised[..width]
        .iter_mut()
        .zip(&rows[0])
        .for_each(|(v, p)| *v -= p);
    let refused = step(&mut tuned, Dtype::F32, 0, &disguised, width)
        .await
        .unwrap_err();
    assert!(refused.contains("consensus challenge"), "{refused}");
    let got = step(&mut tuned, Dtype::F32, 0, &other, width)
        .await
        .unwrap();
    let mut cache = local_span
        .new_cache_with(DeepPrompts::new(1, width, rows.clone()).unwrap())
        .unwrap();
    let mut expected = HiddenStates::new(width, other.clone()).unwrap();
    local_span.forward(&mut expected, &mut cache).unwrap();
    assert_eq!(got, expected.into_vec());
    assert_ne!(got, local(&local_span, &[&other]), "the prompt was added");
    // Prompt rows of the wrong shape, or as many as the reservation,
    // are refused at the opening with the reason.
    for bad in [
        SessionPrompts {
            rows: 1,
            values: rows[0].clone(),
        },
        SessionPrompts {
            rows: 4 * TOKENS as u32,
            values: vec![0.0; 4 * TOKENS * width * 2],
        },
    ] {
        let refused = open_with(&client, server_peer, Dtype::F32, Some(bad))
            .await
            .expect_err("refused");
        assert!(refused.contains("prompt values"), "{refused}");
    }

    // Sent in half precision, the challenge is still recognised.
    let mut half = open(&client, server_peer, Dtype::F16).await;
    let refused = step(&mut half, Dtype::F16, 0, &challenge, width)
        .await
        .unwrap_err();
    assert!(refused.contains("consensus challenge"), "{refused}");

    // Cleared: the same input is served like any other.
    server.set_challenge_input(None);
    let got = step(&mut session, Dtype::F32, 0, &challenge, width)
        .await
        .unwrap();
    assert_eq!(got, local(&local_span, &[&challenge]));

    // Inputs that make the outputs non-finite (a client trying to frame
    // the server): it refuses to send, and so to sign, a non-finite
    // output, which would convict it on its own.
    let huge = vec![f32::NAN; TOKENS * width];
    assert!(
        local(&local_span, &[&huge]).iter().any(|v| !v.is_finite()),
        "these inputs spoil the blocks' outputs"
    );
    let mut fresh = open(&client, server_peer, Dtype::F32).await;
    let refused = step(&mut fresh, Dtype::F32, 0, &huge, width)
        .await
        .unwrap_err();
    assert!(refused.contains("not finite"), "{refused}");

    for task in [server_net, server_run, client_net] {
        task.abort();
    }
}
