//! What the benchmarks across lab hosts share: `hypertensor node`
//! processes started on a host and killed when dropped.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hypertensor_netlab::Lab;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hypertensor");

/// A child process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `hypertensor node ARGS` on `host`, listening on its lab address
/// port 4001, and waits (up to 2 min) for a line containing `ready`;
/// returns it and the multiaddr it listens on.
pub(crate) fn node(lab: &Lab, host: &str, args: &[&str], ready: &str) -> (Proc, String) {
    let mut proc = Proc(
        lab.command(host, BIN)
            .arg("node")
            .args(["--listen", &format!("/ip4/{}/tcp/4001", lab.ip(host))])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs"),
    );
    let stdout = proc.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut addr = String::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{host} never printed {ready:?}"));
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = a.trim().to_string();
        }
        if line.contains(ready) {
            return (proc, addr);
        }
    }
}

/// A hoster of `span` on `host`, joined through `boot` if given.
pub(crate) fn hoster(lab: &Lab, host: &str, span: &str, boot: Option<&str>) -> (Proc, String) {
    let mut args = vec!["--role", "hoster", "--blocks", span];
    if let Some(b) = boot {
        args.extend(["--bootstrap", b]);
    }
    node(lab, host, &args, "serving blocks")
}
