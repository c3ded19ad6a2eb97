//! The official `openai` Python package against the API over a swarm that
//! has no full route: the client sees a 503 as its `InternalServerError`.
//! (The other statuses and the normal answers are checked in the api crate.)

use crate::harness::{Swarm, serve_api};
use crate::python_env::run_openai_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_sees_503_without_a_full_route() {
    let swarm = Swarm::new("openai-py").await;
    // Only the first third of the model is served.
    swarm.add_server(0..10, |_| {}).await;
    let client = swarm.client(|_| {}).await;
    let addr = serve_api(client).await;
    run_openai_client(vec![
        "--unavailable-url".into(),
        format!("http://{addr}/v1"),
    ])
    .await;
}
