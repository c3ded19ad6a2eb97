//! The server side of signed RPC: one future per inbound substream.

use std::sync::Arc;
use std::time::Duration;

use hypertensor_primitives::{H256, Keypair};
use libp2p::{PeerId, Stream};

use crate::Event;
use crate::record::now_ms;
use crate::rpc::{
    Outcome, Refusal, RequestGuard, RpcHandler, RpcSession, SignedRequest, SignedResponse,
    read_frame, write_frame,
};
use crate::validate::StakeOracle;

/// How long a peer has to send its request frame.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server needs to answer requests; shared by all its futures.
pub(crate) struct RpcServer {
    pub(crate) keypair: Keypair,
    pub(crate) genesis: H256,
    pub(crate) guard: RequestGuard,
    pub(crate) stake: Arc<dyn StakeOracle>,
    pub(crate) handler: Option<Arc<dyn RpcHandler>>,
    pub(crate) session_methods: Vec<String>,
    pub(crate) max_frame: usize,
}

impl RpcServer {
    fn respond(&self, client: PeerId, nonce: [u8; 16], outcome: Outcome) -> Vec<u8> {
        SignedResponse::sign(&self.keypair, &self.genesis, client, nonce, outcome).encode()
    }

    /// Reads and checks a request: envelope, then admission by stake or
    /// rate. On refusal returns the nonce to bind the refusal to.
    async fn admit(
        &self,
        peer: PeerId,
        stream: &mut Stream,
    ) -> Option<Result<SignedRequest, ([u8; 16], Refusal)>> {
        let bytes =
            match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_frame(stream, self.max_frame))
                .await
            {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) | Err(_) => return None,
                Ok(Err(e)) => return Some(Err(([0; 16], Refusal::Malformed(e.to_string())))),
            };
        let req = match SignedRequest::decode(&bytes, self.max_frame) {
            Ok(req) => req,
            Err(e) => return Some(Err(([0; 16], Refusal::Malformed(e.to_string())))),
        };
        if let Err(refusal) = self.guard.check(&peer, &req, now_ms()) {
            return Some(Err((req.nonce, refusal)));
        }
        let staked = self.stake.is_staked(peer).await;
        if let Err(refusal) = self.guard.admit(peer, staked) {
            return Some(Err((req.nonce, refusal)));
        }
        Some(Ok(req))
    }

    /// Serves one unary request on `stream`.
    pub(crate) async fn serve_unary(self: Arc<Self>, peer: PeerId, mut stream: Stream) {
        let Some(admitted) = self.admit(peer, &mut stream).await else {
            return;
        };
        let (nonce, outcome) = match admitted {
            Err((nonce, refusal)) => {
                tracing::debug!(%peer, %refusal, "rpc request refused");
                (nonce, Outcome::Refused(refusal))
            }
            Ok(req) => match &self.handler {
                None => (
                    req.nonce,
                    Outcome::Refused(Refusal::UnknownMethod(req.method)),
                ),
                Some(handler) => {
                    let result = handler.handle(peer, req.method, req.body).await;
                    let outcome = match result {
                        Ok(body) => Outcome::Ok(body),
                        Err(message) => Outcome::Error(message),
                    };
                    (req.nonce, outcome)
                }
            },
        };
        let response = self.respond(peer, nonce, outcome);
        if let Err(e) = write_frame(&mut stream, &response).await {
            tracing::debug!(%peer, error = %e, "could not send rpc response");
        }
        let _ = futures::AsyncWriteExt::close(&mut stream).await;
    }

    /// Runs the handshake of an inbound session; on acceptance returns the
    /// event that hands the session to the application.
    pub(crate) async fn serve_session(
        self: Arc<Self>,
        peer: PeerId,
        mut stream: Stream,
    ) -> Option<Event> {
        let admitted = self.admit(peer, &mut stream).await?;
        let (nonce, outcome, accepted) = match admitted {
            Err((nonce, refusal)) => (nonce, Outcome::Refused(refusal), None),
            Ok(req) if !self.session_methods.contains(&req.method) => (
                req.nonce,
                Outcome::Refused(Refusal::UnknownMethod(req.method)),
                None,
            ),
            Ok(req) => (req.nonce, Outcome::Ok(Vec::new()), Some(req)),
        };
        let response = self.respond(peer, nonce, outcome);
        if let Err(e) = write_frame(&mut stream, &response).await {
            tracing::debug!(%peer, error = %e, "could not answer session request");
            return None;
        }
        let req = accepted?;
        Some(Event::InboundSession {
            method: req.method,
            body: req.body,
            session: RpcSession::new(peer, req.nonce, stream, self.max_frame),
        })
    }
}
