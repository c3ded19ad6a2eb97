//! Running the binary in tests: with input on stdin, or reading its
//! output line by line.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `hypertensor ARGS` with `input` on its stdin (then closed) and
/// returns what it printed, as a user typing into `chat` would.
pub(crate) fn run_with_input(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("the binary reads its input");
    child.wait_with_output().expect("the binary ends")
}

/// A child process killed when dropped, with its stdout lines on a channel.
pub(crate) struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Takes over `child`, whose stdout must be piped.
    pub(crate) fn new(mut child: Child) -> Running {
        let lines = stdout_lines(&mut child);
        Running { child, lines }
    }

    /// The first line containing `needle`, within 90 s.
    pub(crate) fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

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
