//! Decode speed through a 3-server chain on loopback against the local
//! model in the same run, time to first token through the HTTP API, and
//! aggregate tokens/s with 8 concurrent sessions. Prints a table and writes
//! JSON (path in `HYPERTENSOR_BENCH_JSON`, default in the temp directory).

mod common;

use common::{MODEL, loopback_config};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypertensor_api::{ApiConfig, Backend};
use hypertensor_inference::{BlockServer, ClientConfig, ServerConfig, SwarmBackend, SwarmClient};
use hypertensor_model::{
    BlockSpan, Flow, GenerationRequest, GgufFile, LanguageModel, LocalModel, SamplingParams,
    sampling::argmax,
};

const PROMPT: &str = "Once upon a time, in a small village by the sea, there lived";
const DECODE_TOKENS: usize = 64;
const CONCURRENT: usize = 8;
const CONCURRENT_TOKENS: usize = 32;

fn decode_rate(model: &mut dyn LanguageModel, prompt: &[u32]) -> f64 {
    let mut logits = model.forward(prompt).expect("prefill");
    let start = Instant::now();
    for _ in 0..DECODE_TOKENS {
        logits = model.forward(&[argmax(&logits)]).expect("decode");
    }
    DECODE_TOKENS as f64 / start.elapsed().as_secs_f64()
}

fn time_to_first_token(addr: std::net::SocketAddr) -> Duration {
    let body = format!(
        r#"{{"model":"{MODEL}","prompt":"{PROMPT}","max_tokens":4,"temperature":0,"stream":true}}"#
    );
    let start = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "stream ended before any token");
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).contains("data: {") {
            return start.elapsed();
        }
    }
}

fn main() {
    let path = std::env::var_os("HYPERTENSOR_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| hypertensor_fetch::default_model_path(true).expect("default model"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handle = runtime.handle().clone();
    let local = LocalModel::load(&path).expect("model");
    let prompt = local
        .tokenizer()
        .encode_with_bos(PROMPT, false)
        .expect("prompt");

    let (client, _tasks) = runtime.block_on(async {
        let (boot, _e, lp) =
            hypertensor_p2p::new(loopback_config("bench-boot", None)).expect("p2p");
        let mut tasks = vec![tokio::spawn(lp.run())];
        let boot_addr = boot.listen_addrs().await.expect("addrs")[0]
            .clone()
            .with_p2p(boot.peer_id())
            .expect("p2p addr");
        let gguf = GgufFile::open(&path).expect("gguf");
        for (i, range) in [0..10, 10..20, 20..30].into_iter().enumerate() {
            let (p2p, events, lp) = hypertensor_p2p::new(loopback_config(
                &format!("bench-server{i}"),
                Some(&boot_addr),
            ))
            .expect("p2p");
            tasks.push(tokio::spawn(lp.run()));
            let server = BlockServer::new(
                BlockSpan::load(&gguf, range).expect("span"),
                ServerConfig::new(MODEL),
            )
            .expect("server");
            tasks.push(tokio::spawn(Arc::new(server).run(p2p, events)));
        }
        let (p2p, _e, lp) =
            hypertensor_p2p::new(loopback_config("bench-client", Some(&boot_addr))).expect("p2p");
        tasks.push(tokio::spawn(lp.run()));
        let client = SwarmClient::load(&path, p2p, handle.clone(), ClientConfig::new(MODEL))
            .expect("client");
        let start = Instant::now();
        while client.servers(0).await.map(|s| s.len()).unwrap_or(0) < 3 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "servers never announced"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (Arc::new(client), (_e, tasks))
    });

    let local_rate = decode_rate(&mut local.session(), &prompt);
    let chain_rate = {
        let mut session = client.session_for(prompt.len() + DECODE_TOKENS + 1);
        decode_rate(&mut session, &prompt)
    };

    let backend = Arc::new(SwarmBackend::new(MODEL, client.clone()));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api_backend: Arc<dyn Backend> = backend.clone();
    runtime.spawn(async move {
        let config = ApiConfig::default();
        hypertensor_api::serve(listener, api_backend, &config, std::future::pending()).await
    });
    let mut ttfts: Vec<Duration> = (0..5).map(|_| time_to_first_token(addr)).collect();
    ttfts.sort();
    let ttft = ttfts[ttfts.len() / 2];

    let start = Instant::now();
    let threads: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let backend = backend.clone();
            let prompt = prompt.clone();
            std::thread::spawn(move || {
                let request = GenerationRequest {
                    prompt,
                    max_tokens: CONCURRENT_TOKENS,
                    sampling: SamplingParams {
                        temperature: 0.8,
                        seed: i as u64,
                        ..SamplingParams::default()
                    },
                    stop: vec![],
                };
                backend
                    .generate(&request, None, &mut |_| Flow::Continue)
                    .expect("generation")
                    .tokens
                    .len()
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    let aggregate = total as f64 / start.elapsed().as_secs_f64();

    println!("| measure | value | baseline |");
    println!("|---|---|---|");
    println!(
        "| decode, 3-server chain (tokens/s) | {chain_rate:.1} | local model {local_rate:.1} (ratio {:.2}) |",
        chain_rate / local_rate
    );
    println!(
        "| time to first token via HTTP, 3-server chain (ms, median of 5) | {:.1} | |",
        ttft.as_secs_f64() * 1e3
    );
    println!(
        "| aggregate decode, {CONCURRENT} concurrent sessions (tokens/s) | {aggregate:.1} | one session {chain_rate:.1} |"
    );
    let json = serde_json::json!({
        "decode_chain_tokens_per_s": chain_rate,
        "decode_local_tokens_per_s": local_rate,
        "ratio": chain_rate / local_rate,
        "ttft_ms": ttft.as_secs_f64() * 1e3,
        "aggregate_tokens_per_s": aggregate,
        "concurrent_sessions": CONCURRENT,
    });
    let out = std::env::var_os("HYPERTENSOR_BENCH_JSON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hypertensor-bench-inference.json"));
    std::fs::write(&out, json.to_string()).expect("write JSON");
    println!("JSON written to {}", out.display());
    std::process::exit(0);
}
