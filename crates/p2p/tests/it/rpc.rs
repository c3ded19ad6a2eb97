//! Signed RPC between real nodes.

use std::sync::Arc;

use futures::future::BoxFuture;
use hypertensor_p2p::{
    Admission, Event, Outcome, P2pError, PeerId, Refusal, RpcHandler, SignedRequest, now_ms,
    record::peer_id_of,
};

use crate::harness::{GENESIS, Node, config, key, spawn, stake_set};

/// Answers `upper` with the body upper-cased, `fail` with an error.
struct Upper;

impl RpcHandler for Upper {
    fn handle(
        &self,
        _caller: PeerId,
        method: String,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        Box::pin(async move {
            match method.as_str() {
                "upper" => Ok(body.to_ascii_uppercase()),
                other => Err(format!("no method {other}")),
            }
        })
    }
}

/// A server (node0), a staked client (node1) and an unstaked one (mallory),
/// both connected to the server.
async fn trio(admission: Admission) -> (Node, Node, Node) {
    let stake = stake_set(2, &[]);
    let mut cfg = config("node0", stake.clone());
    cfg.rpc_handler = Some(Arc::new(Upper));
    cfg.session_methods = vec!["inference".into()];
    cfg.admission = admission;
    let server = spawn(cfg).await;
    let client = spawn(config("node1", stake.clone())).await;
    let mallory = spawn(config("mallory", stake)).await;
    client.client.dial(server.addr.clone()).await.unwrap();
    mallory.client.dial(server.addr.clone()).await.unwrap();
    (server, client, mallory)
}

fn refusal(r: Result<Vec<u8>, P2pError>) -> Refusal {
    match r {
        Err(P2pError::Refused { refusal, .. }) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn refused(outcome: &Outcome) -> Refusal {
    match outcome {
        Outcome::Refused(r) => r.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_round_trip_with_a_response_signed_by_the_server() {
    let (server, client, _) = trio(Admission::StakedOnly).await;
    let answer = client
        .client
        .request(server.peer_id(), "upper", b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"HELLO");
    match client
        .client
        .request(server.peer_id(), "nope", vec![])
        .await
    {
        Err(P2pError::Remote { message, .. }) => assert_eq!(message, "no method nope"),
        other => panic!("expected a handler error, got {other:?}"),
    }

    let req = SignedRequest::new(
        &key("node1"),
        &GENESIS,
        server.peer_id(),
        "upper",
        b"ab".to_vec(),
    );
    let resp = client
        .client
        .send_request(server.peer_id(), &req)
        .await
        .unwrap();
    assert_eq!(resp.outcome, Outcome::Ok(b"AB".to_vec()));
    assert_eq!(resp.request_nonce, req.nonce);
    assert!(resp.verify(&GENESIS, &server.peer_id(), &req));
    assert!(
        !resp.verify(&GENESIS, &client.peer_id(), &req),
        "not signed by the client"
    );
    let mut tampered = resp.clone();
    tampered.outcome = Outcome::Ok(b"XX".to_vec());
    assert!(!tampered.verify(&GENESIS, &server.peer_id(), &req));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_are_refused_with_their_reason() {
    let (server, client, mallory) = trio(Admission::StakedOnly).await;
    let sp = server.peer_id();
    let me = key("node1");

    let req = SignedRequest::new(&me, &GENESIS, sp, "upper", b"x".to_vec());
    assert!(matches!(
        client.client.send_request(sp, &req).await.unwrap().outcome,
        Outcome::Ok(_)
    ));
    let replay = client.client.send_request(sp, &req).await.unwrap();
    assert_eq!(refused(&replay.outcome), Refusal::ReplayedNonce);
    assert!(
        replay.verify(&GENESIS, &sp, &req),
        "refusals are signed too"
    );

    let elsewhere = SignedRequest::new(&me, &GENESIS, mallory.peer_id(), "upper", vec![]);
    let resp = client.client.send_request(sp, &elsewhere).await.unwrap();
    assert_eq!(refused(&resp.outcome), Refusal::WrongRecipient);

    let skewed = SignedRequest::with(
        &me,
        &GENESIS,
        sp,
        "upper",
        vec![],
        now_ms() - 120_000,
        rand_nonce(1),
    );
    let resp = client.client.send_request(sp, &skewed).await.unwrap();
    assert!(matches!(refused(&resp.outcome), Refusal::ClockSkew { skew_ms } if skew_ms >= 119_000));
    let ahead = SignedRequest::with(
        &me,
        &GENESIS,
        sp,
        "upper",
        vec![],
        now_ms() + 90_000,
        rand_nonce(2),
    );
    assert!(matches!(
        refused(
            &client
                .client
                .send_request(sp, &ahead)
                .await
                .unwrap()
                .outcome
        ),
        Refusal::ClockSkew { .. }
    ));

    let mut forged = SignedRequest::new(&me, &GENESIS, sp, "upper", b"x".to_vec());
    forged.body = b"y".to_vec();
    let resp = client.client.send_request(sp, &forged).await.unwrap();
    assert_eq!(refused(&resp.outcome), Refusal::BadSignature);

    let other_net = SignedRequest::new(
        &me,
        &hypertensor_primitives::H256([9; 32]),
        sp,
        "upper",
        vec![],
    );
    assert_eq!(
        refused(
            &client
                .client
                .send_request(sp, &other_net)
                .await
                .unwrap()
                .outcome
        ),
        Refusal::BadSignature
    );

    // Signed by node1 but sent over mallory's connection.
    let stolen = SignedRequest::new(&me, &GENESIS, sp, "upper", vec![]);
    let resp = mallory.client.send_request(sp, &stolen).await.unwrap();
    assert_eq!(refused(&resp.outcome), Refusal::SenderMismatch);

    let r = mallory.client.request(sp, "upper", b"x".to_vec()).await;
    assert_eq!(refusal(r), Refusal::NotStaked);
}

fn rand_nonce(tag: u8) -> [u8; 16] {
    let mut n: [u8; 16] = now_ms().to_be_bytes().repeat(2).try_into().unwrap();
    n[0] = tag;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_client_mode_admits_unstaked_callers_under_a_rate_limit() {
    let (server, client, mallory) = trio(Admission::PublicClients { per_second: 3 }).await;
    let sp = server.peer_id();
    for _ in 0..3 {
        assert_eq!(
            mallory
                .client
                .request(sp, "upper", b"a".to_vec())
                .await
                .unwrap(),
            b"A"
        );
    }
    assert_eq!(
        refusal(mallory.client.request(sp, "upper", b"a".to_vec()).await),
        Refusal::RateLimited
    );
    // Staked callers are not limited.
    for _ in 0..5 {
        client
            .client
            .request(sp, "upper", b"a".to_vec())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stream_frames_both_ways() {
    let (mut server, client, mallory) = trio(Admission::StakedOnly).await;
    let sp = server.peer_id();
    let mut session = client
        .client
        .open_session(sp, "inference", b"open".to_vec())
        .await
        .unwrap();
    let Some(Event::InboundSession {
        method,
        body,
        session: mut inbound,
    }) = server.events.recv().await
    else {
        panic!("no inbound session");
    };
    assert_eq!(
        (method.as_str(), body.as_slice()),
        ("inference", &b"open"[..])
    );
    assert_eq!(inbound.peer(), client.peer_id());
    let echo = tokio::spawn(async move {
        while let Some(frame) = inbound.recv().await.unwrap() {
            let mut out = frame.clone();
            out.reverse();
            inbound.send(&out).await.unwrap();
        }
    });
    for step in 0..20u32 {
        let frame: Vec<u8> = (0..1000).map(|i| (i as u32 + step) as u8).collect();
        session.send(&frame).await.unwrap();
        let mut back = session.recv().await.unwrap().unwrap();
        back.reverse();
        assert_eq!(back, frame);
    }
    session.close().await.unwrap();
    echo.await.unwrap();

    match client.client.open_session(sp, "mining", vec![]).await {
        Err(P2pError::Refused {
            refusal: Refusal::UnknownMethod(m),
            ..
        }) => assert_eq!(m, "mining"),
        other => panic!("expected unknown method, got {other:?}"),
    }
    match mallory.client.open_session(sp, "inference", vec![]).await {
        Err(P2pError::Refused {
            refusal: Refusal::NotStaked,
            ..
        }) => {}
        other => panic!("expected not staked, got {other:?}"),
    }
    let _ = peer_id_of(&key("node0"));
}
