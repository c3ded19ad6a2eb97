//! Creating, entering and removing network namespaces.

use std::process::Command;

use crate::{LabError, Result};

/// Prefix of every namespace a lab makes, then the owning process's id.
const PREFIX: &str = "htl";

/// The namespace name of `host` in this process's lab number `lab`.
pub(crate) fn name(lab: usize, host: &str) -> String {
    format!("{PREFIX}{}-{lab}-{host}", std::process::id())
}

/// Runs `ip args`, failing with its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| LabError::Io {
            what: "running `ip`".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Makes namespace `ns` with its loopback up.
pub(crate) fn create(ns: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

/// Removes namespace `ns` (and the devices in it), ignoring failure.
pub(crate) fn delete(ns: &str) {
    let _ = ip(&["netns", "del", ns]);
}

/// Removes the namespaces of labs whose process has gone (a test run
/// killed before it could clean up).
pub(crate) fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(&name);
        }
    }
}

/// Runs `f` on a new thread that has entered namespace `ns`: sockets it
/// opens (and threads it starts) live on that host.
pub fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|source| LabError::Io {
        what: format!("opening {path}"),
        source,
    })?;
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid namespace fd; setns changes only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LabError::Io {
                what: format!("entering {path}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(f())
    })
    .join()
    .map_err(|_| LabError::Io {
        what: "a thread in the namespace".into(),
        source: std::io::Error::other("panicked"),
    })?
}
