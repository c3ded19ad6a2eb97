//! Swarms of real servers and clients on loopback.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hypertensor_inference::{
    AdmitAll, BlockServer, ClientConfig, ServerConfig, SwarmClient, p2p_config,
};
use hypertensor_model::{
    BlockSpan, Flow, GenerationRequest, GgufFile, HiddenStates, LocalModel, SamplingParams,
    generate,
};
use hypertensor_p2p::{Client, Config, Multiaddr, PeerId};
use hypertensor_primitives::{H256, Keypair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::AbortHandle;

pub(crate) const MODEL: &str = "smollm2";
const GENESIS: H256 = H256([9; 32]);

pub(crate) fn model_path() -> PathBuf {
    match std::env::var_os("HYPERTENSOR_MODEL") {
        Some(p) => p.into(),
        None => hypertensor_fetch::default_model_path(true).expect("default model"),
    }
}

pub(crate) fn local_model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| LocalModel::load(model_path()).expect("model loads"))
}

/// A greedy generation of `max_tokens` after `prompt`.
pub(crate) fn request(prompt: &[u32], max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: prompt.to_vec(),
        max_tokens,
        sampling: SamplingParams::default(),
        stop: vec![],
    }
}

/// Greedy tokens of the whole local model.
pub(crate) fn local_greedy(prompt: &str, max_tokens: usize) -> Vec<u32> {
    let model = local_model();
    let prompt = model.tokenizer().encode_with_bos(prompt, false).unwrap();
    let mut session = model.session();
    generate(
        &mut session,
        model.tokenizer(),
        &request(&prompt, max_tokens),
        |_| Flow::Continue,
    )
    .unwrap()
    .tokens
}

pub(crate) fn span(range: Range<usize>) -> BlockSpan {
    span_of(&model_path(), range)
}

fn span_of(path: &std::path::Path, range: Range<usize>) -> BlockSpan {
    let gguf = GgufFile::open(path).unwrap();
    BlockSpan::load(&gguf, range).unwrap()
}

/// A model a swarm serves: its name in DHT keys and its file.
#[derive(Debug, Clone)]
pub(crate) struct TestModel {
    pub(crate) name: &'static str,
    pub(crate) path: PathBuf,
}

impl TestModel {
    /// The default model.
    pub(crate) fn default_model() -> TestModel {
        TestModel {
            name: MODEL,
            path: model_path(),
        }
    }

    /// Gemma 3 270M (Q4_K_M), fetched by name.
    #[allow(dead_code)] // used by tests/two_models.rs, which shares this file
    pub(crate) fn gemma() -> TestModel {
        TestModel {
            name: "gemma3-270m",
            path: hypertensor_fetch::named_model_path("gemma3-270m", true).expect("Gemma 3"),
        }
    }
}

fn node_config(name: &str, model: &str, bootstrap: Option<&Multiaddr>) -> Config {
    let mut cfg = p2p_config(Keypair::dev(name), 1, GENESIS, model, Arc::new(AdmitAll));
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.bootstrap = bootstrap.into_iter().cloned().collect();
    cfg.query_timeout = Duration::from_secs(5);
    cfg
}

/// Aborts a server's tasks: its network goes away as if killed.
#[derive(Clone)]
pub(crate) struct Killer(Vec<AbortHandle>);

impl Killer {
    pub(crate) fn kill(&self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

pub(crate) struct ServerNode {
    pub(crate) peer: PeerId,
    pub(crate) server: Arc<BlockServer>,
    killer: Killer,
}

impl ServerNode {
    pub(crate) fn killer(&self) -> Killer {
        self.killer.clone()
    }
}

/// How a corrupting server spoils its answers once its honest steps are
/// spent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Corruption {
    /// Every value NaN.
    Nan,
    /// One row short of the rows it was sent.
    ShortRow,
}

/// A server started by [`Swarm::add_corrupting_server`].
pub(crate) struct CorruptingServer {
    pub(crate) peer: PeerId,
    /// Steps it answered so far, honestly or not.
    pub(crate) steps: Arc<AtomicUsize>,
}

/// A bootstrap node, servers joined to it, and clients.
pub(crate) struct Swarm {
    name: String,
    boot: Client,
    boot_addr: Multiaddr,
    tasks: std::sync::Mutex<Vec<AbortHandle>>,
    servers: std::sync::Mutex<Vec<PeerId>>,
    count: AtomicUsize,
    model: TestModel,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().iter() {
            t.abort();
        }
    }
}

impl Swarm {
    pub(crate) async fn new(name: &str) -> Swarm {
        Self::serving(name, TestModel::default_model()).await
    }

    /// A swarm of its own (a bootstrap node) for `model`.
    pub(crate) async fn serving(name: &str, model: TestModel) -> Swarm {
        let (boot, _events, event_loop) =
            hypertensor_p2p::new(node_config(&format!("{name}-boot"), model.name, None)).unwrap();
        let task = tokio::spawn(event_loop.run());
        let addr = boot.listen_addrs().await.unwrap()[0]
            .clone()
            .with_p2p(boot.peer_id())
            .unwrap();
        Swarm {
            name: name.to_string(),
            boot,
            boot_addr: addr,
            tasks: std::sync::Mutex::new(vec![task.abort_handle()]),
            servers: std::sync::Mutex::new(Vec::new()),
            count: Default::default(),
            model,
        }
    }

    /// Starts a server of `range`; returns once its announcement is found.
    pub(crate) async fn add_server(
        &self,
        range: Range<usize>,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> ServerNode {
        let i = self.count.fetch_add(1, Ordering::SeqCst);
        let model = &self.model;
        let cfg = node_config(
            &format!("{}-server{i}", self.name),
            model.name,
            Some(&self.boot_addr),
        );
        let (p2p, events, event_loop) = hypertensor_p2p::new(cfg).unwrap();
        let net = tokio::spawn(event_loop.run());
        let mut config = ServerConfig::new(model.name);
        tweak(&mut config);
        let server =
            Arc::new(BlockServer::new(span_of(&model.path, range.clone()), config).unwrap());
        let peer = p2p.peer_id();
        let run = tokio::spawn(server.clone().run(p2p, events));
        self.servers.lock().unwrap().push(peer);
        // Wait until the bootstrap node sees its announcement.
        let key = hypertensor_inference::block_key(model.name, range.start);
        let start = tokio::time::Instant::now();
        loop {
            let dict = self.boot.get(&key).await.unwrap_or_default();
            if dict.get(&peer).is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "server {i} never announced"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let killer = Killer(vec![net.abort_handle(), run.abort_handle()]);
        // The swarm stops every server when the test ends.
        self.tasks.lock().unwrap().extend(killer.0.iter().cloned());
        ServerNode {
            peer,
            server,
            killer,
        }
    }

    /// A server that announces `range` as the fastest and roomiest of all
    /// but answers every opening with `refusal`; returns its peer id once
    /// its announcement is found.
    pub(crate) async fn add_refusing_server(
        &self,
        range: Range<usize>,
        refusal: hypertensor_inference::wire::Refusal,
    ) -> PeerId {
        use hypertensor_inference::wire::encode_open_reply;
        let (p2p, mut events, mut tasks) = self.fake_node("refusing");
        let peer = p2p.peer_id();
        // The node runs while a client handle lives: the task keeps one.
        let keep = p2p.clone();
        tasks.push(
            tokio::spawn(async move {
                let _keep = keep;
                while let Some(event) = events.recv().await {
                    let hypertensor_p2p::Event::InboundSession { mut session, .. } = event;
                    let _ = session.send(&encode_open_reply(Err(&refusal))).await;
                    let _ = session.close().await;
                }
            })
            .abort_handle(),
        );
        self.announce_as_fastest(&p2p, range, "liar", tasks).await;
        peer
    }

    /// A server of `range`, announced as the slowest of all, that takes
    /// every session and never answers; returns its peer id once its
    /// announcement is found.
    pub(crate) async fn add_stalling_server(&self, range: Range<usize>) -> PeerId {
        let (p2p, mut events, mut tasks) = self.fake_node("stalling");
        let peer = p2p.peer_id();
        let keep = p2p.clone();
        tasks.push(
            tokio::spawn(async move {
                let _keep = keep;
                let mut held = Vec::new();
                while let Some(event) = events.recv().await {
                    let hypertensor_p2p::Event::InboundSession { session, .. } = event;
                    held.push(session);
                }
            })
            .abort_handle(),
        );
        self.announce(&p2p, range, "stalling", 1e-3, tasks).await;
        peer
    }

    /// A server of `range` announced as the fastest and roomiest of all,
    /// that runs its real blocks honestly for its first `honest_steps`
    /// steps (counted over all its sessions) and then answers every step
    /// with hidden states spoiled by `corruption`.
    pub(crate) async fn add_corrupting_server(
        &self,
        range: Range<usize>,
        honest_steps: usize,
        corruption: Corruption,
    ) -> CorruptingServer {
        use hypertensor_consensus::evidence::{
            RECEIPT_PURPOSE, ReceiptFields, Transcript, output_digest,
        };
        use hypertensor_inference::wire::{
            OpenRequest, Refusal, SESSION_METHOD, Signed, Step, encode_open_reply,
            encode_step_reply,
        };
        let (p2p, mut events, mut tasks) = self.fake_node("corrupting");
        let peer = p2p.peer_id();
        let blocks = Arc::new(span(range.clone()));
        let steps = Arc::new(AtomicUsize::new(0));
        let counter = steps.clone();
        let keep = p2p.clone();
        tasks.push(
            tokio::spawn(async move {
                let _keep = keep;
                // Dropped with this task: every session ends with it.
                let mut sessions = tokio::task::JoinSet::new();
                while let Some(event) = events.recv().await {
                    let hypertensor_p2p::Event::InboundSession {
                        method,
                        body,
                        mut session,
                    } = event;
                    let range = blocks.range();
                    let open = match OpenRequest::decode(&body) {
                        Ok(open)
                            if method == SESSION_METHOD
                                && open.start as usize == range.start
                                && open.end as usize == range.end =>
                        {
                            open
                        }
                        _ => {
                            let refusal = Refusal::Unserved("not this span".into());
                            let _ = session.send(&encode_open_reply(Err(&refusal))).await;
                            let _ = session.close().await;
                            continue;
                        }
                    };
                    let (blocks, counter, signer) =
                        (blocks.clone(), counter.clone(), _keep.clone());
                    sessions.spawn(async move {
                        if session.send(&encode_open_reply(Ok(()))).await.is_err() {
                            return;
                        }
                        let width = blocks.config().hidden_size;
                        let mut cache = blocks.new_cache();
                        let mut transcript = Transcript::new(
                            &open.model,
                            open.start,
                            open.end,
                            open.dtype.encoding(),
                        );
                        while let Ok(Some(frame)) = session.recv().await {
                            let step = Step::decode(&frame, open.dtype, width).unwrap();
                            let input_len = step.values.len() * open.dtype.size();
                            transcript.step(
                                step.position,
                                step.n_tokens,
                                &frame[frame.len() - input_len..],
                            );
                            let position = step.position as usize;
                            if position < cache.positions() {
                                blocks.truncate(&mut cache, position);
                            }
                            let mut hidden = HiddenStates::new(width, step.values).unwrap();
                            tokio::task::block_in_place(|| blocks.forward(&mut hidden, &mut cache))
                                .unwrap();
                            let mut out = hidden.into_vec();
                            if counter.fetch_add(1, Ordering::SeqCst) >= honest_steps {
                                match corruption {
                                    Corruption::Nan => out.fill(f32::NAN),
                                    Corruption::ShortRow => out.truncate(out.len() - width),
                                }
                            }
                            // Signed as an honest server signs its answers.
                            let mut output = Vec::new();
                            open.dtype.encode_into(&out, &mut output);
                            let (_, digest) = output_digest(&output, width * open.dtype.size());
                            let client = hypertensor_primitives::PeerId::from_bytes(
                                &session.peer().to_bytes(),
                            )
                            .unwrap();
                            let fields = ReceiptFields {
                                client: &client,
                                session: &session.nonce(),
                                model: &open.model,
                                start: open.start,
                                end: open.end,
                                encoding: open.dtype.encoding(),
                                position: step.position,
                                n_tokens: step.n_tokens,
                                inputs: &transcript.digest(),
                                output: &digest,
                            };
                            let signature =
                                signer.sign_domain(RECEIPT_PURPOSE, &fields.signed_payload());
                            let input =
                                hypertensor_primitives::sha256(
                                    &[&frame[frame.len() - input_len..]],
                                );
                            let reply = encode_step_reply(Ok(Signed {
                                signature: &signature.0,
                                input: &input.0,
                                output: &output,
                            }));
                            if session.send(&reply).await.is_err() {
                                break;
                            }
                        }
                        let _ = session.close().await;
                    });
                }
            })
            .abort_handle(),
        );
        self.announce_as_fastest(&p2p, range, "corrupting", tasks)
            .await;
        CorruptingServer { peer, steps }
    }

    /// A P2P node joined to the swarm for a hand-written server, with the
    /// task running its network.
    fn fake_node(
        &self,
        kind: &str,
    ) -> (
        Client,
        tokio::sync::mpsc::Receiver<hypertensor_p2p::Event>,
        Vec<AbortHandle>,
    ) {
        let i = self.count.fetch_add(1, Ordering::SeqCst);
        let cfg = node_config(
            &format!("{}-{kind}{i}", self.name),
            self.model.name,
            Some(&self.boot_addr),
        );
        let (p2p, events, event_loop) = hypertensor_p2p::new(cfg).unwrap();
        let tasks = vec![tokio::spawn(event_loop.run()).abort_handle()];
        (p2p, events, tasks)
    }

    /// Announces `p2p` as a server of `range`, the fastest and roomiest of
    /// all, and returns once the announcement is found; the swarm then
    /// owns `tasks`.
    async fn announce_as_fastest(
        &self,
        p2p: &Client,
        range: Range<usize>,
        version: &str,
        tasks: Vec<AbortHandle>,
    ) {
        self.announce(p2p, range, version, 1e6, tasks).await;
    }

    /// Announces `p2p` as a server of `range` with `throughput` and all
    /// the room it could want, and returns once the announcement is found;
    /// the swarm then owns `tasks`.
    async fn announce(
        &self,
        p2p: &Client,
        range: Range<usize>,
        version: &str,
        throughput: f64,
        tasks: Vec<AbortHandle>,
    ) {
        use hypertensor_inference::{ServerInfo, ServerState, block_key};
        let peer = p2p.peer_id();
        p2p.wait_for_peers(Duration::from_secs(10)).await;
        let addrs = p2p
            .listen_addrs()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.with_p2p(peer).unwrap_or_else(|a| a).to_string())
            .collect();
        let info = ServerInfo {
            state: ServerState::Online,
            start: range.start as u32,
            end: range.end as u32,
            throughput,
            sessions: 0,
            free_cache_tokens: u64::MAX,
            version: version.into(),
            addrs,
            relayed: false,
        };
        let expiration = hypertensor_p2p::now_ms() + 60_000;
        for block in range.clone() {
            p2p.store(
                &block_key(self.model.name, block),
                info.encode(),
                expiration,
            )
            .await
            .unwrap();
        }
        let key = block_key(self.model.name, range.start);
        let start = tokio::time::Instant::now();
        while self
            .boot
            .get(&key)
            .await
            .unwrap_or_default()
            .get(&peer)
            .is_none()
        {
            assert!(start.elapsed() < Duration::from_secs(20), "never announced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.servers.lock().unwrap().push(peer);
        self.tasks.lock().unwrap().extend(tasks);
    }

    /// A client whose DHT view includes every server started so far.
    pub(crate) async fn client(&self, tweak: impl FnOnce(&mut ClientConfig)) -> Arc<SwarmClient> {
        let i = self.count.fetch_add(1, Ordering::SeqCst);
        let cfg = node_config(
            &format!("{}-client{i}", self.name),
            self.model.name,
            Some(&self.boot_addr),
        );
        let (p2p, _events, event_loop) = hypertensor_p2p::new(cfg).unwrap();
        self.tasks
            .lock()
            .unwrap()
            .push(tokio::spawn(event_loop.run()).abort_handle());
        let mut config = ClientConfig::new(self.model.name);
        config.step_timeout = Duration::from_secs(10);
        // Many servers share two cores here: a decode step is not given up
        // sooner than any other (a spurious ban would change the counts
        // these tests assert).
        config.decode_timeout = config.step_timeout;
        config.ban_base = Duration::from_secs(120);
        tweak(&mut config);
        let client = SwarmClient::load(
            &self.model.path,
            p2p,
            tokio::runtime::Handle::current(),
            config,
        )
        .unwrap();
        let want = self.servers.lock().unwrap().len();
        let start = tokio::time::Instant::now();
        while client.servers(0).await.unwrap().len() < want {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "client never saw every server"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Arc::new(client)
    }
}

/// Serves the OpenAI-compatible API over `client` on 127.0.0.1:0, with
/// the default limits; returns its address.
pub(crate) async fn serve_api(client: Arc<SwarmClient>) -> std::net::SocketAddr {
    let backend: Arc<dyn hypertensor_api::Backend> =
        Arc::new(hypertensor_inference::SwarmBackend::new(MODEL, client));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = hypertensor_api::ApiConfig::default();
    tokio::spawn(async move {
        hypertensor_api::serve(listener, backend, &config, std::future::pending()).await
    });
    addr
}

/// One HTTP/1.1 GET over a real socket; returns status and body.
pub(crate) async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// One HTTP/1.1 POST over a real socket; returns status and body.
pub(crate) async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, request).await
}

async fn exchange(addr: std::net::SocketAddr, request: String) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

/// `tokens` greedy tokens of `prompt` through `client`'s swarm, and the
/// route the sequence ended on.
pub(crate) async fn greedy_through(
    client: &Arc<SwarmClient>,
    prompt: &'static str,
    tokens: usize,
) -> (Vec<u32>, Vec<(PeerId, std::ops::Range<usize>)>) {
    let c = client.clone();
    tokio::task::spawn_blocking(move || {
        let prompt = c.tokenizer().encode_with_bos(prompt, false).unwrap();
        let mut session = c.session();
        let g = generate(
            &mut session,
            c.tokenizer(),
            &request(&prompt, tokens),
            |_| Flow::Continue,
        )
        .unwrap();
        (g.tokens, session.route())
    })
    .await
    .unwrap()
}
