//! `hypertensor keygen`: a new Ed25519 key in libp2p's protobuf key-file
//! format, so one file is both a chain account and a libp2p identity.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use hypertensor_primitives::Keypair;
#[cfg(unix)]
use hypertensor_primitives::keyfile::KEY_FILE_MODE;
use rand::TryRngCore;

/// Arguments of `hypertensor keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the key file (created with owner-only permissions).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub(crate) force: bool,
}

/// Generates a key from the operating system's randomness, writes it and
/// prints its account id and peer id.
pub(crate) fn run(args: KeygenArgs) -> Result<()> {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut secret)
        .context("the operating system's random number generator failed")?;
    let key = Keypair::from_secret(secret);
    write_key_file(&args.output, &key, args.force)?;
    println!("key file:   {}", args.output.display());
    println!("account id: {}", key.account_id());
    println!("peer id:    {}", key.peer_id());
    Ok(())
}

fn write_key_file(path: &Path, key: &Keypair, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} exists; pass --force to replace it (its key would be lost)",
            path.display()
        );
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(KEY_FILE_MODE);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // `mode` applies only when the file is created; a replaced file (--force)
    // keeps its old bits unless they are set here.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(KEY_FILE_MODE))
            .with_context(|| format!("cannot make {} owner-only", path.display()))?;
    }
    file.write_all(&key.to_protobuf_encoding())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a key file written by `keygen` (or any libp2p Ed25519 key file).
pub(crate) fn read_key_file(path: &Path) -> Result<Keypair> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    warn_if_exposed(path, &meta);
    if meta.len() > hypertensor_primitives::keyfile::MAX_KEY_FILE_LENGTH as u64 {
        bail!("{} is too large to be a key file", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Keypair::from_protobuf_encoding(&bytes)
        .with_context(|| format!("{} is not a valid Ed25519 key file", path.display()))
}

/// Warns (on Unix) when group or others can access a key file, with the
/// `chmod` that fixes it; the key is still used.
pub(crate) fn warn_if_exposed(path: &Path, meta: &std::fs::Metadata) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if let Some(warning) = hypertensor_primitives::keyfile::check_permissions(path, mode) {
            tracing::warn!("{warning}");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
}
