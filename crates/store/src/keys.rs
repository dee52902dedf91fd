//! API keys: shown once, stored as a SHA-256 hash, each bound to one workspace.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{Result, Store, StoreError, new_id, on_pool};

/// A key just created: `key` is the secret, shown to the operator once and never stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub workspace_id: String,
    pub key: String,
}

/// How long a known key is trusted without a lookup.
pub const KNOWN_KEY_TTL: Duration = Duration::from_secs(60);
/// Keys remembered at most (the memory is cleared when full).
const KNOWN_KEYS_MAX: usize = 10_000;

/// Keys are 256 random bits, so a plain SHA-256 is a sound way to store them (no password stretching needed).
pub(crate) fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn random_key() -> String {
    // Two v4 UUIDs are 244 bits from the OS random source.
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("lsk_{}{}", a.simple(), b.simple())
}

impl Store {
    /// Creates a key named `name`. With `workspace: None` a new workspace named after the key is created; pass
    /// [`DEFAULT_WORKSPACE`] to keep the data created while auth was off.
    pub async fn create_api_key(&self, name: &str, workspace: Option<&str>) -> Result<NewApiKey> {
        let key = random_key();
        let new = NewApiKey { id: new_id(), workspace_id: workspace.map_or_else(new_id, str::to_owned), key };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if workspace.is_none() {
                sqlx::query("insert into workspaces (id, name) values ($1, $2)")
                    .bind(&new.workspace_id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            } else if sqlx::query("select 1 from workspaces where id = $1")
                .bind(&new.workspace_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_none()
            {
                return Err(StoreError::UnknownWorkspace(new.workspace_id));
            }
            sqlx::query("insert into api_keys (id, workspace_id, name, key_hash) values ($1, $2, $3, $4)")
                .bind(&new.id)
                .bind(&new.workspace_id)
                .bind(name)
                .bind(hash_key(&new.key))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(new)
    }

    /// The workspace of a presented key, if the key is known. Known keys are remembered for
    /// [`KNOWN_KEY_TTL`] in this process (unknown ones are looked up every time, so a new key works at once);
    /// a key deleted from `api_keys` by hand stops working within that time.
    pub async fn workspace_for_key(&self, key: &str) -> Result<Option<String>> {
        let hash = hash_key(key);
        if let Some((ws, at)) = self.known_keys().get(&hash)
            && at.elapsed() < KNOWN_KEY_TTL
        {
            return Ok(Some(ws.clone()));
        }
        let ws = on_pool!(self, pool => sqlx::query_scalar::<_, String>(
            "select workspace_id from api_keys where key_hash = $1")
            .bind(&hash)
            .fetch_optional(pool)
            .await?);
        if let Some(ws) = &ws {
            let mut known = self.known_keys();
            if known.len() >= KNOWN_KEYS_MAX {
                known.clear();
            }
            known.insert(hash, (ws.clone(), Instant::now()));
        }
        Ok(ws)
    }

    fn known_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.known_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether any key exists: then every request must present one.
    pub async fn auth_enabled(&self) -> Result<bool> {
        let any = on_pool!(self, pool => sqlx::query("select 1 from api_keys limit 1")
            .fetch_optional(pool)
            .await?
            .is_some());
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_WORKSPACE;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, b) = (random_key(), random_key());
        assert_ne!(a, b);
        assert!(a.starts_with("lsk_") && a.len() == 4 + 64, "{a}");
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(DEFAULT_WORKSPACE, "default");
    }
}
