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
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
