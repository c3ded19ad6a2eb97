//! The network: its hosts, how each process is started, and the driver's
//! view of the chain from the gateway's host.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hypertensor_chain_client::{Client as ChainClient, Health};
use hypertensor_netlab::{Lab, Link, in_namespace};
use hypertensor_node::devnet::{self, DevnetConfig, EpochReport, EpochReporter, Member, Role};
use hypertensor_primitives::Keypair;
use hypertensor_runtime::{ChainValidator, SubnetId, Totals};
use tokio::runtime::Runtime;

use crate::process::Process;
use crate::{Error, Result};

/// A chain validator's P2P port (in the genesis) on its host.
const CHAIN_P2P_PORT: u16 = 30333;
/// A chain validator's RPC port on its host.
const CHAIN_RPC_PORT: u16 = 9944;
/// A subnet node's libp2p port on its host.
const NODE_PORT: u16 = 4001;
/// The gateway's API port on its host.
const API_PORT: u16 = 8000;
/// Longest a process may take to say it is ready (a node loads the model
/// and may wait for AutoNAT's answer).
const READY_WITHIN: Duration = Duration::from_secs(120);
/// The gateway's host: where the driver's chain and API requests leave from.
const GATEWAY: &str = "gateway";

/// The shape of a lab network.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `hypertensor` binary every process runs.
    pub bin: PathBuf,
    /// The GGUF file every node loads.
    pub model: PathBuf,
    /// The model's name (the subnet's name and the DHT keys').
    pub model_name: String,
    /// Directory for keys, the genesis, chain stores and each process's
    /// log (`<host>.log`); emptied first.
    pub dir: PathBuf,
    /// Every host's link to the others.
    pub link: Link,
    /// Chain validators, hosts `chain-0`, `chain-1`, ….
    pub chain_validators: usize,
    /// Subnet validators that host nothing, hosts `validator-0`, ….
    pub validators: usize,
    /// Hosters, hosts `hoster-0`, …, spans dealt round-robin.
    pub hosters: usize,
    /// Blocks each hoster serves.
    pub blocks_per_hoster: usize,
    /// Chain blocks per epoch.
    pub epoch_length: u64,
    /// Milliseconds between chain blocks.
    pub block_time_ms: u64,
}

impl Options {
    /// Four chain validators, three subnet validators and three hosters
    /// of ten blocks on 10 ms round trips, epochs of 20 blocks of 500 ms.
    pub fn new(bin: PathBuf, model: PathBuf, dir: PathBuf) -> Options {
        Options {
            bin,
            model,
            model_name: "smollm2".into(),
            dir,
            link: Link::round_trip(Duration::from_millis(10)),
            chain_validators: 4,
            validators: 3,
            hosters: 3,
            blocks_per_hoster: 10,
            epoch_length: 20,
            block_time_ms: 500,
        }
    }
}

/// A running lab network. Dropping it kills every process and removes
/// the lab.
pub struct Network {
    processes: BTreeMap<String, Process>,
    options: Options,
    members: Vec<Member>,
    chain_urls: Vec<String>,
    subnet: SubnetId,
    genesis: PathBuf,
    runtime: Runtime,
    lab: Lab,
}

/// The name of chain validator `index`'s host.
pub fn chain_host(index: usize) -> String {
    format!("chain-{index}")
}

impl Network {
    /// Makes the lab, writes the genesis, starts the chain validators,
    /// registers the subnet and its nodes, starts every node and the
    /// gateway, and returns once nodes and subnet are activated.
    pub fn start(options: Options) -> Result<Network> {
        let n_blocks = hypertensor_model::GgufFile::open(&options.model)
            .map_err(|e| Error::Scenario(format!("{}: {e}", options.model.display())))?
            .config()
            .map_err(|e| Error::Scenario(format!("{}: {e}", options.model.display())))?
            .n_blocks;
        let members = devnet::roster(
            n_blocks,
            Some(options.hosters),
            options.validators,
            options.blocks_per_hoster,
        )?;
        let mut hosts: Vec<String> = (0..options.chain_validators).map(chain_host).collect();
        hosts.extend(members.iter().map(|m| m.name.clone()));
        hosts.push(GATEWAY.into());
        let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let lab = Lab::new(&names, options.link)?;

        let _ = std::fs::remove_dir_all(&options.dir);
        create_dir(&options.dir)?;
        // The driver's tasks run on this runtime's workers, which are
        // started (and start their helpers) on the gateway's host.
        let runtime = in_namespace(lab.namespace(GATEWAY), || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        })?
        .map_err(|source| Error::Io {
            what: "starting the driver's runtime".into(),
            source,
        })?;

        let mut network = Network {
            processes: BTreeMap::new(),
            chain_urls: (0..options.chain_validators)
                .map(|i| format!("ws://{}:{CHAIN_RPC_PORT}", lab.ip(&chain_host(i))))
                .collect(),
            genesis: options.dir.join("genesis.json"),
            subnet: 0,
            members,
            options,
            runtime,
            lab,
        };
        network.write_genesis()?;
        for i in 0..network.options.chain_validators {
            network.start_process(&chain_host(i))?;
        }
        let chain = network.chain()?;
        let config = network.devnet_config();
        let members = network.members.clone();
        network.subnet = network.on_lab(async move {
            devnet::register(&chain, &config, &members)
                .await
                .map_err(Error::from)
        })??;
        let names: Vec<String> = network.members.iter().map(|m| m.name.clone()).collect();
        for name in names.iter().chain(std::iter::once(&GATEWAY.to_string())) {
            network.start_process(name)?;
        }
        let chain = network.chain()?;
        let (subnet, members) = (network.subnet, network.members.clone());
        network.on_lab(async move {
            devnet::activate(&chain, subnet, &members)
                .await
                .map_err(Error::from)
        })??;
        Ok(network)
    }

    /// The lab the network runs in.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The subnet's nodes (their names are their hosts').
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The subnet.
    pub fn subnet(&self) -> SubnetId {
        self.subnet
    }

    /// The gateway's API address (on the gateway's host).
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from((self.lab.ip(GATEWAY), API_PORT))
    }

    /// Every chain validator's RPC URL, in validator order.
    pub fn chain_urls(&self) -> &[String] {
        &self.chain_urls
    }

    /// Runs `task` on the driver's runtime, on the gateway's host (so it
    /// can reach the lab's addresses), and waits for it.
    pub fn on_lab<F>(&self, task: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .block_on(self.runtime.spawn(task))
            .map_err(|e| Error::Scenario(format!("a driver task failed: {e}")))
    }

    /// A fresh connection to the chain (the first validator that
    /// answers).
    pub fn chain(&self) -> Result<ChainClient> {
        let urls = self.chain_urls.join(",");
        self.on_lab(async move { ChainClient::connect(&urls).await })?
            .map_err(Error::from)
    }

    /// What happened in `epoch` (complete once it is settled).
    pub fn report(&self, epoch: u64) -> Result<EpochReport> {
        let reporter = EpochReporter::new(
            self.chain_urls.clone(),
            self.chain()?,
            self.subnet,
            self.members.clone(),
        );
        self.on_lab(async move { reporter.epoch_report(epoch).await })?
            .map_err(Error::from)
    }

    /// The current epoch.
    pub fn epoch(&self) -> Result<u64> {
        let chain = self.chain()?;
        Ok(self.on_lab(async move { chain.epoch_info().await })??.epoch)
    }

    /// The chain's issuance and where it sits.
    pub fn totals(&self) -> Result<Totals> {
        let chain = self.chain()?;
        Ok(self.on_lab(async move { chain.totals().await })??)
    }

    /// Waits until the chain is in `epoch` (or later); the epoch it is in.
    pub fn wait_for_epoch(&self, epoch: u64, within: Duration) -> Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            match self.epoch() {
                Ok(now) if now >= epoch => return Ok(now),
                Ok(_) | Err(Error::Chain(_)) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(Error::Scenario(format!(
                    "the chain did not reach epoch {epoch} within {within:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Each chain validator's health, in validator order (`None`: it did
    /// not answer within a second).
    pub fn chain_status(&self) -> Result<Vec<Option<Health>>> {
        let urls = self.chain_urls.clone();
        self.on_lab(async move {
            let mut out = Vec::with_capacity(urls.len());
            for url in urls {
                let health = tokio::time::timeout(Duration::from_secs(1), async {
                    ChainClient::connect(&url).await?.health().await
                })
                .await;
                out.push(health.ok().and_then(|h| h.ok()));
            }
            out
        })
    }

    /// Cuts `host`'s link: nothing goes in or out until [`Network::heal`].
    pub fn cut(&self, host: &str) -> Result<()> {
        Ok(self.lab.set_link(host, self.options.link.cut())?)
    }

    /// Gives `host` its link back.
    pub fn heal(&self, host: &str) -> Result<()> {
        Ok(self.lab.set_link(host, self.options.link)?)
    }

    /// Kills (SIGKILL) the process on `host`, as a machine going down.
    pub fn kill(&mut self, host: &str) -> Result<()> {
        self.processes
            .remove(host)
            .map(drop)
            .ok_or_else(|| Error::Scenario(format!("nothing runs on {host}")))
    }

    /// Starts `host`'s process again (a chain validator on its store, a
    /// node with its identity) and waits until it is ready.
    pub fn restart(&mut self, host: &str) -> Result<()> {
        if self.processes.contains_key(host) {
            return Err(Error::Scenario(format!("{host} is still running")));
        }
        self.start_process(host)
    }

    /// Whether `host`'s process runs.
    pub fn is_running(&mut self, host: &str) -> bool {
        self.processes
            .get_mut(host)
            .is_some_and(Process::is_running)
    }

    /// Each running process's host and resident memory in MiB.
    pub fn memory(&self) -> Vec<(String, u64)> {
        self.processes
            .iter()
            .map(|(host, p)| (host.clone(), p.rss_mib()))
            .collect()
    }

    /// One completion through the gateway's API (`POST /v1/completions`),
    /// greedy: the HTTP status and body (status 0 when no answer came).
    pub fn complete(&self, prompt: &str, max_tokens: u32) -> Result<(u16, String)> {
        let body = serde_json::json!({
            "model": self.options.model_name,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
        })
        .to_string();
        Ok(post_from(
            self.lab.namespace(GATEWAY),
            self.api_addr(),
            "/v1/completions",
            &body,
        ))
    }

    fn devnet_config(&self) -> DevnetConfig {
        let mut config = DevnetConfig::new(
            self.options.dir.clone(),
            self.options.model.clone(),
            &self.options.model_name,
        );
        config.epoch_length = self.options.epoch_length;
        config.block_time_ms = self.options.block_time_ms;
        config
    }

    fn chain_key(&self, index: usize) -> Keypair {
        Keypair::dev(&format!("labnet/chain-{index}"))
    }

    fn key_path(&self, host: &str) -> PathBuf {
        self.options.dir.join(format!("{host}.key"))
    }

    /// The development genesis with the members funded and the chain
    /// validators at their hosts; every key file beside it.
    fn write_genesis(&self) -> Result<()> {
        let mut genesis = devnet::genesis(&self.devnet_config(), &self.members);
        for i in 0..self.options.chain_validators {
            let key = self.chain_key(i);
            write_key(&self.key_path(&chain_host(i)), &key)?;
            genesis.validators.push(ChainValidator {
                account: key.account_id(),
                address: format!("{}:{CHAIN_P2P_PORT}", self.lab.ip(&chain_host(i))),
            });
        }
        for m in &self.members {
            write_key(&self.key_path(&m.name), &m.identity)?;
        }
        let json = serde_json::to_string_pretty(&genesis)
            .map_err(|e| Error::Scenario(format!("the genesis does not serialize: {e}")))?;
        std::fs::write(&self.genesis, json).map_err(|source| Error::Io {
            what: format!("writing {}", self.genesis.display()),
            source,
        })
    }

    /// A node's libp2p address (its identity is known before it starts).
    fn node_addr(&self, member: &Member) -> String {
        format!(
            "/ip4/{}/tcp/{NODE_PORT}/p2p/{}",
            self.lab.ip(&member.name),
            member.identity.peer_id()
        )
    }

    /// Starts `host`'s process and waits until it says it is ready.
    fn start_process(&mut self, host: &str) -> Result<()> {
        let (command, ready) = self.command(host)?;
        let log = self.options.dir.join(format!("{host}.log"));
        let process = Process::spawn(host, command, &log)?;
        process.wait_for(ready, READY_WITHIN)?;
        self.processes.insert(host.to_string(), process);
        Ok(())
    }

    /// How `host`'s process is started, and the line that says it is
    /// ready.
    fn command(&self, host: &str) -> Result<(Command, &'static str)> {
        let bin = &self.options.bin;
        let ip = self.lab.ip(host);
        if host.starts_with("chain-") {
            let mut c = self.lab.command(host, bin);
            c.arg("chain")
                .arg("--genesis")
                .arg(&self.genesis)
                .arg("--validator-key")
                .arg(self.key_path(host))
                .arg("--base-path")
                .arg(self.options.dir.join(format!("{host}-db")))
                .args(["--rpc-addr", &format!("{ip}:{CHAIN_RPC_PORT}")]);
            return Ok((c, "RPC listening on"));
        }
        let mut c = self.lab.command(host, bin);
        c.arg("node")
            .arg("--model")
            .arg(&self.options.model)
            .args(["--model-name", &self.options.model_name])
            .args(["--chain", &self.chain_urls.join(",")])
            .args(["--subnet-id", &self.subnet.to_string()])
            .args(["--listen", &format!("/ip4/{ip}/tcp/{NODE_PORT}")]);
        for other in self.members.iter().filter(|m| m.name != host) {
            c.args(["--bootstrap", &self.node_addr(other)]);
        }
        if host == GATEWAY {
            c.args(["--role", "client"])
                .args(["--api", &SocketAddr::from((ip, API_PORT)).to_string()]);
            return Ok((c, "OpenAI-compatible API on"));
        }
        let member = self
            .members
            .iter()
            .find(|m| m.name == host)
            .ok_or_else(|| Error::Scenario(format!("the network has no host {host}")))?;
        c.arg("--identity").arg(self.key_path(host));
        match &member.role {
            Role::Validator => {
                c.args(["--role", "validator"]);
            }
            Role::Hoster(blocks) => {
                c.args(["--role", "hoster"])
                    .args(["--blocks", &format!("{}:{}", blocks.start, blocks.end)]);
            }
        }
        Ok((c, "consensus duties run every epoch"))
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })
}

/// Writes a key file as `hypertensor keygen` does (owner-only).
fn write_key(path: &Path, key: &Keypair) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    std::fs::write(path, key.to_protobuf_encoding()).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
}

/// A JSON `POST` to `addr` over HTTP/1.1 from the lab namespace `ns`
/// (blocking; callable from any thread): the status and body (status 0
/// if no answer came within two minutes).
pub fn post_from(ns: &str, addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let connected = in_namespace(ns, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    });
    let Ok(Ok(mut stream)) = connected else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
