//! The trained prompts a backend serves, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use hypertensor_model::PromptTuning;

use crate::BackendError;

/// Trained prompts served beside a plain model: the API names each
/// `<model>:<name>` in `/v1/models` and requests.
#[derive(Debug, Clone, Default)]
pub struct Tunings {
    by_name: BTreeMap<String, Arc<PromptTuning>>,
}

/// What a backend without trained prompts serves.
static NONE: Tunings = Tunings {
    by_name: BTreeMap::new(),
};

impl Tunings {
    /// No trained prompts.
    pub fn none() -> &'static Tunings {
        &NONE
    }

    /// Adds `tuning` as `name`: letters, digits, `.`, `_` and `-`, at
    /// most 64, not taken already. Fails, changing nothing, naming what
    /// was wrong.
    pub fn insert(&mut self, name: &str, tuning: PromptTuning) -> Result<(), BackendError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
            return Err(BackendError::Invalid(format!(
                "`{name}` cannot name a prompt tuning: use 1 to 64 letters, digits, `.`, `_` or `-`"
            )));
        }
        if self.by_name.contains_key(name) {
            return Err(BackendError::Invalid(format!(
                "two prompt tunings are named `{name}`"
            )));
        }
        self.by_name.insert(name.to_string(), Arc::new(tuning));
        Ok(())
    }

    /// The prompt named `name`, if served.
    pub fn get(&self, name: &str) -> Option<&Arc<PromptTuning>> {
        self.by_name.get(name)
    }

    /// The names served, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
