//! The schema registry: which keys may be written, with what values.
//!
//! Each registered key prefix names a value type (a decoder supplied by the
//! layer that owns the key, e.g. consensus or the inference server), a size
//! limit and a maximum time to live. A key matches the longest registered
//! prefix; a key that matches none is refused, so peers cannot fill the DHT
//! with keys nobody reads.

use std::sync::Arc;
use std::time::Duration;

/// Checks that a value decodes as the type of its key; returns why not.
pub type ValueCheck = Arc<dyn Fn(&[u8]) -> std::result::Result<(), String> + Send + Sync>;

/// The rules for every key starting with `prefix`.
#[derive(Clone)]
pub struct KeySchema {
    /// The key prefix, e.g. `"challenge/"`.
    pub prefix: String,
    /// Name of the value type, for logs and errors.
    pub type_name: String,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Longest time to live: an expiration further than this from now is
    /// refused.
    pub max_ttl: Duration,
    /// The decoder that checks a value's type.
    pub check: ValueCheck,
}

impl KeySchema {
    /// A schema whose values are opaque bytes (only the size is checked).
    pub fn bytes(prefix: &str, max_value_bytes: usize, max_ttl: Duration) -> KeySchema {
        KeySchema {
            prefix: prefix.to_string(),
            type_name: "bytes".to_string(),
            max_value_bytes,
            max_ttl,
            check: Arc::new(|_| Ok(())),
        }
    }

    /// A schema whose values must pass `check` (typically: decode as a
    /// given type).
    pub fn typed(
        prefix: &str,
        type_name: &str,
        max_value_bytes: usize,
        max_ttl: Duration,
        check: impl Fn(&[u8]) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> KeySchema {
        KeySchema {
            prefix: prefix.to_string(),
            type_name: type_name.to_string(),
            max_value_bytes,
            max_ttl,
            check: Arc::new(check),
        }
    }
}

impl std::fmt::Debug for KeySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySchema")
            .field("prefix", &self.prefix)
            .field("type_name", &self.type_name)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

/// The registry of key schemas.
#[derive(Clone, Debug, Default)]
pub struct SchemaRegistry {
    schemas: Vec<KeySchema>,
}

impl SchemaRegistry {
    /// An empty registry (refuses every key).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the schema of a prefix.
    pub fn register(mut self, schema: KeySchema) -> Self {
        self.schemas.retain(|s| s.prefix != schema.prefix);
        self.schemas.push(schema);
        self
    }

    /// The schema of the longest registered prefix of `key`.
    pub fn lookup(&self, key: &str) -> Option<&KeySchema> {
        self.schemas
            .iter()
            .filter(|s| key.starts_with(&s.prefix))
            .max_by_key(|s| s.prefix.len())
    }

    /// The longest max TTL of any schema (how long any record may live).
    pub fn longest_ttl(&self) -> Duration {
        self.schemas
            .iter()
            .map(|s| s.max_ttl)
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_unknown_keys_have_none() {
        let r = SchemaRegistry::new()
            .register(KeySchema::bytes("a/", 10, Duration::from_secs(1)))
            .register(KeySchema::bytes("a/b/", 20, Duration::from_secs(1)));
        assert_eq!(r.lookup("a/b/c").unwrap().max_value_bytes, 20);
        assert_eq!(r.lookup("a/c").unwrap().max_value_bytes, 10);
        assert!(r.lookup("b").is_none());
    }
}
