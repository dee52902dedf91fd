//! The verdict cache: identical inputs (workspace, model, prompt version, offer snapshot, cleaned lead) get the
//! identical verdict without a call. The key is computed here; Redis storage is here too, database storage in
//! the store.

use std::collections::HashMap;
use std::time::Duration;

use leadscore_core::AiVerdict;
use leadscore_core::prompt::{PROMPT_VERSION, Prompt};
use sha2::{Digest, Sha256};

/// Hex SHA-256 over the workspace, the model, the prompt version and the prompt's text. The prompt holds the
/// offer snapshot and the lead's fields as sent (cleaned and capped), so two leads that differ only in what is
/// never sent (the name, extra columns) share a verdict, and any change to what the model sees makes a new key.
///
/// The workspace is part of the key so that one workspace never gets a verdict another paid for (a hit would
/// tell it that someone else scored the same lead against the same offer). Entries stored before the workspace
/// was part of the key are never found again; they expire with their TTL.
pub fn cache_key(workspace: &str, model: &str, prompt: &Prompt) -> String {
    let mut h = Sha256::new();
    for part in [workspace, model, PROMPT_VERSION, &prompt.system, &prompt.user] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Verdicts in Redis with a TTL (cluster mode).
#[derive(Clone)]
pub struct RedisCache {
    client: redis::Client,
    conn: std::sync::Arc<tokio::sync::OnceCell<redis::aio::ConnectionManager>>,
    prefix: String,
    ttl: Duration,
}

impl RedisCache {
    pub fn new(url: &str, prefix: &str, ttl: Duration) -> redis::RedisResult<RedisCache> {
        Ok(RedisCache {
            client: redis::Client::open(url)?,
            conn: std::sync::Arc::default(),
            prefix: prefix.to_owned(),
            ttl,
        })
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let conn = self.conn.get_or_try_init(|| self.client.get_connection_manager()).await?;
        Ok(conn.clone())
    }

    fn key(&self, key: &str) -> String {
        format!("{}verdict:{key}", self.prefix)
    }

    /// The cached verdicts among `keys` (one `MGET`); errors (Redis down, a corrupt entry) read as misses: the
    /// cache only saves money.
    pub async fn get_many(&self, keys: &[String]) -> HashMap<String, AiVerdict> {
        let Ok(mut conn) = self.conn().await else { return HashMap::new() };
        if keys.is_empty() {
            return HashMap::new();
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&full).query_async(&mut conn).await.unwrap_or_default();
        keys.iter()
            .zip(values)
            .filter_map(|(k, v)| Some((k.clone(), serde_json::from_str(&v?).ok()?)))
            .collect()
    }

    /// Stores verdicts with the TTL in one pipeline.
    pub async fn put_many(&self, entries: &[(String, AiVerdict)]) {
        let Ok(mut conn) = self.conn().await else { return };
        let mut pipe = redis::pipe();
        for (key, verdict) in entries {
            if let Ok(value) = serde_json::to_string(verdict) {
                pipe.cmd("SET")
                    .arg(self.key(key))
                    .arg(value)
                    .arg("EX")
                    .arg(self.ttl.as_secs().max(1))
                    .ignore();
            }
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::debug!(error = %e, "caching verdicts failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadscore_core::Flag;

    fn prompt(user: &str) -> Prompt {
        Prompt { system: "s".into(), user: user.into(), flags: Vec::<Flag>::new() }
    }

    #[test]
    fn keys_change_with_every_input() {
        let base = cache_key("w", "m", &prompt("u"));
        assert_eq!(base.len(), 64);
        assert_eq!(base, cache_key("w", "m", &prompt("u")));
        assert_ne!(base, cache_key("w2", "m", &prompt("u")));
        assert_ne!(base, cache_key("w", "m2", &prompt("u")));
        assert_ne!(base, cache_key("w", "m", &prompt("u2")));
        // Length-prefixed parts: moving text between parts changes the key.
        assert_ne!(cache_key("w", "mu", &prompt("")), cache_key("w", "m", &prompt("u")));
        assert_ne!(cache_key("wm", "", &prompt("u")), cache_key("w", "m", &prompt("u")));
    }
}
