//! A `hypertensor` child process on a lab host.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A child process, killed (SIGKILL) when dropped, whose stdout lines
/// arrive on a channel fed by a thread that keeps draining the pipe (so
/// the child never blocks on a full one).
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Spawns `command` as `name` (stdout piped, stderr to `log`).
    pub fn spawn(name: &str, mut command: Command, log: &std::path::Path) -> Result<Process> {
        let log_file = std::fs::File::create(log).map_err(|source| Error::Io {
            what: format!("creating {}", log.display()),
            source,
        })?;
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|source| Error::Io {
                what: format!("starting {name}"),
                source,
            })?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Process {
            name: name.to_string(),
            reason: "its stdout is not piped".into(),
        })?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                let _ = tx.send(line);
            }
        });
        Ok(Process {
            name: name.to_string(),
            child,
            lines,
        })
    }

    /// The first line (from now on) containing `needle`, within `within`.
    pub fn wait_for(&self, needle: &str, within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    return Err(Error::Process {
                        name: self.name.clone(),
                        reason: format!("printed no line containing {needle:?} within {within:?}"),
                    });
                }
            }
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its resident memory in MiB (0 once it is gone).
    pub fn rss_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
