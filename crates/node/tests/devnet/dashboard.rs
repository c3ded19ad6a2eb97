//! The dashboard and the metrics of a running devnet, end to end: a real
//! headless Chromium (Debian's package, over the DevTools protocol) loads
//! the gateway's page; Prometheus text is scraped over HTTP from the
//! gateway, a hoster, a validator and a chain validator.
//!
//! Screenshots are saved under `target/tmp/dashboard/`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hypertensor_runtime::SettlementOutcome;

use crate::browser::{Browser, find_chromium};
use crate::scenario::{config, get, post, run};

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

/// The sum of every sample of the metric `name` (all its label sets) in a
/// Prometheus text exposition; `None` when it has no sample.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest.trim(),
            Some('{') => match rest.split_once("} ") {
                Some((_, v)) => v.trim(),
                None => continue,
            },
            _ => continue,
        };
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The value of the sample `sample` (name and labels exactly as written).
fn sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `host:port` of the first of comma-separated `ws://` or `http://` URLs.
fn socket_of(urls: &str) -> SocketAddr {
    let url = urls.split(',').next().unwrap_or(urls);
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {url}"))
}

/// The JSON string literal of `text`.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

#[test]
fn the_dashboard_and_metrics_show_a_running_devnet() {
    let Some(_) = find_chromium() else {
        assert!(
            std::env::var_os("HYPERTENSOR_REQUIRE_BROWSER").is_none(),
            "no Chromium, and this run requires the browser tests (.ci/run installs Debian's `chromium`)"
        );
        eprintln!("skipping: no Chromium on this machine (apt-get install chromium)");
        return;
    };
    let mut config = config("dashboard");
    config.validators = 2;
    config.hosters = Some(3);
    config.blocks_per_hoster = 10;
    let scenario = run(config, 2);
    let devnet = &scenario.devnet;
    let api = devnet.api_addr;
    let chain_rpc = socket_of(&devnet.chain_url);
    let (hoster, validator) = {
        let addr_of = |prefix: &str| {
            devnet
                .nodes
                .iter()
                .find(|(m, _)| m.name.starts_with(prefix))
                .and_then(|(_, n)| n.metrics_addr)
                .unwrap_or_else(|| panic!("a {prefix} serving metrics"))
        };
        (addr_of("hoster"), addr_of("validator"))
    };
    let settled: BTreeSet<u64> = scenario
        .reports
        .iter()
        .filter(|r| r.elected.is_some())
        .map(|r| r.epoch)
        .collect();
    assert_eq!(settled.len(), 2, "both epochs elected a validator");
    let scrape = |addr: SocketAddr| {
        let (status, text) = scenario.runtime.block_on(get(addr, "/metrics"));
        assert_eq!(status, 200, "/metrics of {addr}");
        text
    };

    // Health and readiness on every kind of server.
    for addr in [api, hoster, validator, chain_rpc] {
        let (status, body) = scenario.runtime.block_on(get(addr, "/health"));
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"ok"}"#),
            "{addr}"
        );
        let (status, body) = scenario.runtime.block_on(get(addr, "/ready"));
        assert_eq!(status, 200, "{addr} is ready: {body}");
    }

    let before = (scrape(api), scrape(hoster), scrape(chain_rpc));

    // The browser.
    let dir = screenshots();
    let mut browser = Browser::launch().expect("Chromium starts");
    let mut page = browser.new_page(1280, 900, false).unwrap();
    let base = format!("http://{api}");

    // Network: every block of the model covered, each server listed.
    page.goto(&format!("{base}/#network")).unwrap();
    let covered = page
        .wait_for(
            "(() => { const c = document.querySelector('#coverage'); \
             return c && c.dataset.blocks === '30' && c.dataset.covered === '30' \
             && document.querySelectorAll('#servers tbody tr').length === 3 \
             && document.querySelector('#coverage-summary').textContent; })()",
            Duration::from_secs(30),
        )
        .expect("the network view shows every block covered");
    assert!(
        covered
            .as_str()
            .unwrap()
            .contains("30 of 30 blocks covered"),
        "{covered}"
    );
    let bars = page
        .eval("[...document.querySelectorAll('#coverage .block.covered')].map(b => Number(b.dataset.servers))")
        .unwrap();
    assert_eq!(bars, serde_json::json!(vec![1; 30]), "one hoster per block");
    page.screenshot(&dir.join("network.png")).unwrap();

    // Chain: the charts hold exactly the settled epochs, the table their
    // outcomes.
    page.click("button[data-view=chain]").unwrap();
    let last = *settled.last().unwrap();
    let charted = page
        .wait_for(
            &format!(
                "(() => {{ const s = document.querySelector('#score-chart'); \
                 const r = document.querySelector('#reward-chart'); \
                 if (!s || !r || s.dataset.epochs !== r.dataset.epochs) return null; \
                 const e = (s.dataset.epochs || '').split(',').filter(x => x).map(Number); \
                 return e.includes({last}) ? e : null; }})()"
            ),
            Duration::from_secs(30),
        )
        .expect("the chain view charts the settled epochs");
    let charted: BTreeSet<u64> = serde_json::from_value(charted).unwrap();
    assert!(
        settled.is_subset(&charted),
        "charted {charted:?}, settled {settled:?}"
    );
    let current = scenario
        .runtime
        .block_on(devnet.chain.epoch_info())
        .unwrap()
        .epoch;
    assert!(
        charted.iter().all(|e| *e < current),
        "{charted:?} settled before {current}"
    );
    for report in &scenario.reports {
        let points = page
            .eval(&format!(
                "document.querySelectorAll('#score-chart [data-epoch=\"{}\"]').length",
                report.epoch
            ))
            .unwrap();
        assert!(
            points.as_u64().unwrap() >= 1,
            "epoch {} plotted",
            report.epoch
        );
        // A bar for every node the epoch paid.
        for paid in report.nodes.iter().filter(|n| n.reward > 0) {
            let bars = page
                .eval(&format!(
                    "document.querySelectorAll('#reward-chart [data-epoch=\"{}\"][data-node=\"{}\"]').length",
                    report.epoch, paid.node
                ))
                .unwrap();
            assert_eq!(
                bars,
                serde_json::json!(1),
                "epoch {} paid node {}",
                report.epoch,
                paid.node
            );
        }
        let outcome = page
            .eval(&format!(
                "document.querySelector('#epochs tr[data-epoch=\"{}\"]')?.textContent",
                report.epoch
            ))
            .unwrap();
        let elected = page
            .eval(&format!(
                "document.querySelector('#epochs tr[data-epoch=\"{}\"] td:nth-child(2)')?.textContent",
                report.epoch
            ))
            .unwrap();
        let (_, overview) = scenario.runtime.block_on(get(api, "/v1/chain"));
        assert_eq!(
            elected,
            serde_json::json!(report.elected.unwrap().to_string()),
            "epoch {}'s elected validator; /v1/chain: {overview}",
            report.epoch
        );
        if let Some(SettlementOutcome::InConsensus { .. }) = report.outcome {
            assert!(
                outcome.as_str().unwrap_or("").contains("in_consensus"),
                "epoch {}: {outcome}",
                report.epoch
            );
        }
    }
    let rows = page
        .eval("document.querySelectorAll('#nodes tbody tr').length")
        .unwrap();
    assert_eq!(
        rows,
        serde_json::json!(5),
        "two validators and three hosters"
    );
    page.screenshot(&dir.join("chain.png")).unwrap();

    // Playground: a greedy chat streams the API's own answer.
    page.click("button[data-view=playground]").unwrap();
    page.wait_for(
        "!document.querySelector('#view-playground').hidden",
        Duration::from_secs(5),
    )
    .unwrap();
    let prompt = "What is the capital of France?";
    page.set_value("#temperature", "0").unwrap();
    page.set_value("#max-tokens", "12").unwrap();
    page.insert_text("#prompt", prompt).unwrap();
    page.click("#send").unwrap();
    let chunks = page
        .wait_for(
            "(() => { const m = document.querySelector('#transcript .message.assistant'); \
             return m && m.dataset.streaming === 'false' && Number(m.dataset.chunks); })()",
            Duration::from_secs(60),
        )
        .expect("the answer streams to its end");
    assert!(
        chunks.as_u64().unwrap() >= 2,
        "{chunks} chunks: it streamed"
    );
    let shown = page
        .eval("document.querySelector('#transcript .message.assistant .content')?.textContent ?? document.querySelector('#transcript .message.assistant').textContent")
        .unwrap();
    let direct = scenario.runtime.block_on(post(
        api,
        "/v1/chat/completions",
        &format!(
            r#"{{"model":"smollm2","messages":[{{"role":"user","content":{}}}],"temperature":0,"top_p":1,"max_tokens":12}}"#,
            js(prompt)
        ),
    ));
    let body: serde_json::Value =
        serde_json::from_str(direct.split_once("\r\n\r\n").unwrap().1).unwrap();
    let expected = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!expected.is_empty());
    assert!(
        shown.as_str().unwrap().contains(expected),
        "the page shows {shown}, the API answered {expected:?}"
    );
    page.screenshot(&dir.join("playground.png")).unwrap();

    // An error from the API reaches the user.
    page.click("#reset").unwrap();
    page.set_value("#max-tokens", "100000").unwrap();
    page.insert_text("#prompt", prompt).unwrap();
    page.click("#send").unwrap();
    let error = page
        .wait_for(
            "document.querySelector('#transcript .message.error[role=alert]')?.textContent",
            Duration::from_secs(30),
        )
        .expect("the API's error is shown");
    let refused = scenario.runtime.block_on(post(
        api,
        "/v1/chat/completions",
        &format!(
            r#"{{"model":"smollm2","messages":[{{"role":"user","content":{}}}],"max_tokens":100000,"stream":true}}"#,
            js(prompt)
        ),
    ));
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    let refusal: serde_json::Value =
        serde_json::from_str(refused.split_once("\r\n\r\n").unwrap().1).unwrap();
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(
        error.as_str().unwrap().contains(message),
        "the page shows {error}, the API said {message:?}"
    );
    let enabled = page
        .eval("!document.querySelector('#send').disabled")
        .unwrap();
    assert_eq!(enabled, serde_json::json!(true), "the form is usable again");
    page.screenshot(&dir.join("error.png")).unwrap();
    assert_eq!(page.console_errors(), Vec::<String>::new());

    // Phone width: nothing wider than the screen.
    let mut phone = browser.new_page(375, 812, true).unwrap();
    for view in ["network", "chain", "playground"] {
        phone.goto(&format!("{base}/#{view}")).unwrap();
        phone
            .wait_for(
                &format!("!document.querySelector('#view-{view}').hidden"),
                Duration::from_secs(10),
            )
            .unwrap();
        if view == "chain" {
            phone
                .wait_for(
                    "document.querySelectorAll('#nodes tbody tr').length > 0",
                    Duration::from_secs(30),
                )
                .unwrap();
        }
        let width = phone
            .eval("document.documentElement.scrollWidth")
            .unwrap()
            .as_u64()
            .unwrap();
        assert!(
            width <= 375,
            "the {view} view is {width} px wide on a phone"
        );
        phone
            .screenshot(&dir.join(format!("phone-{view}.png")))
            .unwrap();
    }
    assert_eq!(phone.console_errors(), Vec::<String>::new());
    drop(phone);
    drop(browser);

    // The counters moved.
    let after = (scrape(api), scrape(hoster), scrape(chain_rpc));
    let moved = |before: &str, after: &str, name: &str| {
        let (b, a) = (metric(before, name).unwrap_or(0.0), metric(after, name));
        let a = a.unwrap_or_else(|| panic!("{name} is exposed:\n{after}"));
        assert!(a > b, "{name} moved: {b} -> {a}");
    };
    moved(&before.0, &after.0, "api_completion_tokens_total");
    moved(&before.0, &after.0, "api_request_seconds_count");
    moved(&before.0, &after.0, "p2p_dht_operations_total");
    moved(&before.0, &after.0, "p2p_rpc_request_seconds_count");
    moved(&before.0, &after.0, "inference_client_sessions_total");
    moved(&before.1, &after.1, "inference_server_tokens_total");
    moved(&before.1, &after.1, "inference_server_batch_rows_count");
    moved(&before.2, &after.2, "chain_height");
    moved(&before.2, &after.2, "chain_rpc_request_seconds_count");
    moved(&before.2, &after.2, "chain_block_import_seconds_count");
    assert!(metric(&after.0, "p2p_peers").unwrap() >= 1.0);
    assert!(metric(&after.1, "inference_server_kv_cache_free_bytes").unwrap() > 0.0);
    assert!(metric(&after.2, "chain_pool_size").is_some());
    assert!(metric(&after.2, "chain_finality_lag_blocks").is_some());
    // Every node followed the settlements; validators wrote their records.
    let validator_text = scrape(validator);
    assert!(
        sample(
            &validator_text,
            r#"consensus_epochs_total{outcome="in_consensus"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{validator_text}"
    );
    assert!(metric(&validator_text, "consensus_records_written_total").unwrap() >= 2.0);
    assert!(metric(&validator_text, "consensus_attestation_ratio").unwrap() > 0.0);
    assert!(metric(&after.1, "consensus_records_written_total").unwrap() >= 2.0);
}
