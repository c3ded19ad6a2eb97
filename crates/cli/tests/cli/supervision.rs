//! A node whose critical task stops exits at once with an error naming
//! the task; a node told to stop (SIGTERM) exits cleanly and promptly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A hoster of one block, without a chain, with `env` set.
fn hoster(env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hypertensor"));
    command
        .args(["node", "--role", "hoster", "--blocks", "0:1"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .env_remove("RUST_LOG")
        .env_remove("HYPERTENSOR_FAIL_TASK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("the binary runs")
}

/// Lines of `stream` with the instant each arrived, until it closes.
fn timed_lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most `limit`) for `child` to exit.
fn exit_within(child: &mut Child, limit: Duration) -> Option<(Instant, std::process::ExitStatus)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((Instant::now(), status));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// `HYPERTENSOR_FAIL_TASK` is honoured by debug builds only.
#[cfg(debug_assertions)]
#[test]
fn a_node_whose_critical_task_fails_or_panics_exits_nonzero_within_2_s_naming_it() {
    let cases = [
        ("block-server", "block-server", "failed"),
        ("p2p:panic", "p2p", "panicked"),
    ];
    let mut running: Vec<_> = cases
        .iter()
        .map(|&(knob, task, how)| {
            let mut child = hoster(&[("HYPERTENSOR_FAIL_TASK", knob)]);
            let stderr = timed_lines(child.stderr.take().unwrap());
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink())
            });
            (child, stderr, task, how)
        })
        .collect();
    for (child, stderr, task, how) in &mut running {
        let mut injected = None;
        let mut text = String::new();
        // The model loads first: give it a minute, then 2 s after the
        // failure.
        let started = Instant::now();
        while injected.is_none() && started.elapsed() < Duration::from_secs(120) {
            let Ok((at, line)) = stderr.recv_timeout(Duration::from_secs(1)) else {
                continue;
            };
            if line.contains("HYPERTENSOR_FAIL_TASK: injecting a failure") {
                injected = Some(at);
            }
            text.push_str(&line);
            text.push('\n');
        }
        let injected = injected.unwrap_or_else(|| panic!("{task}: no failure injected:\n{text}"));
        let (exited, status) = exit_within(child, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{task}: the node still runs 5 s after its failure"));
        let took = exited - injected;
        assert!(
            took < Duration::from_secs(2),
            "{task}: exited {took:?} after the failure"
        );
        assert!(!status.success(), "{task}: {status}");
        while let Ok((_, line)) = stderr.recv_timeout(Duration::from_secs(2)) {
            text.push_str(&line);
            text.push('\n');
        }
        let expected = format!("error: the critical task `{task}` {how}");
        assert!(
            text.contains(&expected),
            "{task}: no {expected:?} in\n{text}"
        );
    }
}

#[cfg(unix)]
#[test]
fn sigterm_stops_a_node_cleanly_within_the_shutdown_deadline() {
    let mut child = hoster(&[]);
    let lines = crate::process::stdout_lines(&mut child);
    let started = Instant::now();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the hoster starts");
        if line.contains("serving blocks 0..1") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120));
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let (exited, status) = exit_within(&mut child, Duration::from_secs(10))
        .expect("the node stops within its 5 s shutdown deadline");
    assert!(status.success(), "{status}");
    assert!(exited - signalled < Duration::from_secs(6));
}
