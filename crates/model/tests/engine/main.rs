//! End-to-end tests of the model engine on the real default model.

mod bad_input;
mod batching;
mod generation;
mod malformed;
mod other_files;
mod raw_gguf;
mod reference;

mod each_block;
mod gradients;
mod spans;
mod synthetic;
mod tuning;

use std::path::PathBuf;
use std::sync::OnceLock;

use hypertensor_model::LocalModel;

/// The default model: `$HYPERTENSOR_MODEL`, or the per-user cached copy
/// (fetched and hash-checked on first use).
pub fn model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("HYPERTENSOR_MODEL") {
        return PathBuf::from(path);
    }
    hypertensor_fetch::default_model_path(true).expect("the default model is available")
}

/// The default model, loaded once for all tests of this binary.
pub fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| LocalModel::load(model_path()).expect("the default model loads"))
}
