//! Reading a child process's output line by line in tests.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;

/// The lines `child` prints on its (piped) stdout, on a channel fed by a
/// thread that keeps draining it so the child never blocks on a full pipe.
pub(crate) fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining even once nobody listens, so the child never
        // blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lines
}

/// The WebSocket URL of the RPC server a `hypertensor chain` child
/// announces (`RPC listening on http://ADDR`) within `within`.
pub(crate) fn chain_rpc_url(lines: &mpsc::Receiver<String>, within: std::time::Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("the chain node prints its RPC address");
        if let Some(rest) = line.strip_prefix("RPC listening on http://") {
            return format!(
                "ws://{}",
                rest.split_whitespace().next().unwrap_or_default()
            );
        }
    }
}
