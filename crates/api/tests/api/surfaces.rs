//! What the API server answers besides the OpenAI endpoints, on a local
//! model with the default surfaces (as `hypertensor serve` runs it): the
//! dashboard's files, `/v1/status`, `/v1/chain`, `/health`, `/ready` and
//! Prometheus `/metrics`.

use serde_json::{Value, json};

use crate::http::{get, post};
use crate::{MODEL, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary() {
    let addr = start().await;
    let (status, page) = get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<nav") && page.contains("/app.js"), "{page}");
    // Nothing of the page comes from another origin.
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    let (status, script) = get(addr, "/app.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("/v1/chat/completions"));
    // The SVG namespace is a name, not an address.
    let script = script.replace("http://www.w3.org/2000/svg", "");
    assert!(!script.contains("http://") && !script.contains("https://"));
    let (status, css) = get(addr, "/style.css").await;
    assert_eq!(status, 200);
    assert!(!css.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_model_and_a_local_server_has_no_chain() {
    let addr = start().await;
    let (status, body) = get(addr, "/v1/status").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["backend"], "local");
    assert_eq!(v["blocks"], 30);
    assert_eq!(v["chain"], false);
    let (status, body) = get(addr, "/v1/chain").await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["error"]["message"],
        "this server is not connected to a chain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer_and_counters_move() {
    let addr = start().await;
    assert_eq!(
        get(addr, "/health").await,
        (200, r#"{"status":"ok"}"#.into())
    );
    assert_eq!(
        get(addr, "/ready").await,
        (200, r#"{"status":"ready"}"#.into())
    );
    let (status, before) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(before.ends_with("# EOF\n"), "{before}");
    let tokens = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("api_completion_tokens_total "))
            .map(|v| v.trim().parse::<u64>().unwrap())
    };
    assert_eq!(tokens(&before), Some(0));
    let (status, _) = post(
        addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, after) = get(addr, "/metrics").await;
    assert_eq!(tokens(&after), Some(5), "{after}");
    assert!(
        after.contains(r#"api_request_seconds_count{path="/v1/completions",status="200"} 1"#),
        "{after}"
    );
    // Paths outside the API share one label.
    let _ = get(addr, "/no/such/path").await;
    let (_, after) = get(addr, "/metrics").await;
    assert!(after.contains(r#"path="other",status="404""#), "{after}");
    assert!(!after.contains("/no/such/path"));
}
