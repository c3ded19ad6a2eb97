//! The `hypertensor` command: one binary for every role in the network.
//!
//! This file only parses arguments, sets up logging and dispatches; each
//! subcommand lives in [`commands`].

mod cli;
mod commands;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    raise_open_file_limit();
    match commands::run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Most open files the process asks for: the chain's and the API's
/// connection caps (1,024 each by default) plus the P2P sockets and the
/// database, with room to spare.
const OPEN_FILES_WANTED: u64 = 16_384;

/// Raises the soft limit on open files towards the hard limit (often 1,024
/// soft, far more hard), so the servers' connection caps, not the kernel's
/// descriptor limit, are what a flood of connections meets.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct
        // passed by pointer, which lives on this stack frame.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            let wanted = (OPEN_FILES_WANTED as libc::rlim_t).min(limit.rlim_max);
            if limit.rlim_cur < wanted {
                limit.rlim_cur = wanted;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    tracing::warn!(
                        "cannot raise the open-file limit; `ulimit -n` caps connections before the servers do"
                    );
                }
            }
        }
    }
}

/// Quiet by default (warnings only); `-v` for info, `-vv` for debug;
/// `RUST_LOG` overrides both.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
