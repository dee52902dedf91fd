//! API keys: shown once, stored as a SHA-256 hash, each bound to one workspace; listed and revoked by their
//! public prefix or their name.
//!
//! Every request with a key looks it up (one indexed read): no process remembers a key as valid, so a revoked
//! key is refused by the next request in every process, on both stores (a cache could only be invalidated at
//! once within one process). The read also says when the key was last used; `last_used_at` is written only when
//! that is more than [`LAST_USED_EVERY`] ago, so a busy key costs one write a minute, not one per request.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::row::DbRow;
use crate::{Result, Store, StoreError, new_id, now, on_pool};

/// A key just created: `key` is the secret, shown to the operator once and never stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub workspace_id: String,
    pub key: String,
    /// The start of `key`, stored in clear to name the key in `leadscore keys list` / `revoke`.
    pub prefix: String,
}

/// What `leadscore keys list` shows of a key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    /// `None` for keys created before prefixes were stored.
    pub prefix: Option<String>,
    pub name: String,
    pub workspace_id: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// What `revoke_api_key` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The key is refused from now on.
    Now(ApiKeyInfo),
    /// It already was.
    Already(ApiKeyInfo),
}

/// `last_used_at` is at most this old while a key is in use (the write it costs is made at most this often).
pub const LAST_USED_EVERY: time::Duration = time::Duration::minutes(1);

/// Keys whose recorded use a process remembers at most (the memory is cleared when full).
const KEY_USES_MAX: usize = 10_000;

/// Characters of a key kept as its prefix: `lsk_` and 8 hex digits (32 bits: names a key, reveals nothing
/// useful of the 256-bit secret).
const PREFIX_LEN: usize = 12;

/// Keys are 256 random bits, so a plain SHA-256 is a sound way to store them (no password stretching needed).
pub(crate) fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn random_key() -> String {
    // Two v4 UUIDs are 244 bits from the OS random source.
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("lsk_{}{}", a.simple(), b.simple())
}

const INFO_COLUMNS: &str = "id, prefix, name, workspace_id, created_at, last_used_at, revoked_at";

fn info(r: &impl DbRow) -> Result<ApiKeyInfo> {
    Ok(ApiKeyInfo {
        id: r.text("id")?,
        prefix: r.opt_text("prefix")?,
        name: r.text("name")?,
        workspace_id: r.text("workspace_id")?,
        created_at: r.time("created_at")?,
        last_used_at: r.opt_time("last_used_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}

impl Store {
    /// Creates a key named `name`. With `workspace: None` a new workspace named after the key is created; pass
    /// [`DEFAULT_WORKSPACE`](crate::DEFAULT_WORKSPACE) to keep the data created while auth was off.
    pub async fn create_api_key(&self, name: &str, workspace: Option<&str>) -> Result<NewApiKey> {
        let key = random_key();
        let prefix = key[..PREFIX_LEN].to_owned();
        let new = NewApiKey {
            id: new_id(),
            workspace_id: workspace.map_or_else(new_id, str::to_owned),
            key,
            prefix,
        };
        on_pool!(self, pool => {
            // Reads, then writes: on SQLite a deferred transaction could not take the write lock after another
            // writer committed (SQLITE_BUSY at once, no busy wait), so it takes it up front.
            let mut tx = crate::WritePool::begin_write(pool).await?;
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
            sqlx::query(
                "insert into api_keys (id, workspace_id, name, key_hash, prefix) values ($1, $2, $3, $4, $5)")
                .bind(&new.id)
                .bind(&new.workspace_id)
                .bind(name)
                .bind(hash_key(&new.key))
                .bind(&new.prefix)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(new)
    }

    /// Stores an operator-chosen key (`LEADSCORE_BOOTSTRAP_KEY`) in the `default` workspace unless a key with
    /// the same secret already exists, revoked or not: a revoked bootstrap key stays revoked across restarts.
    /// Safe to run from several processes at once (the hash is unique). Returns whether it was added.
    pub async fn ensure_api_key(&self, name: &str, key: &str) -> Result<bool> {
        let prefix: String = key.chars().take(PREFIX_LEN).collect();
        let added = on_pool!(self, pool => {
            sqlx::query(
                "insert into api_keys (id, workspace_id, name, key_hash, prefix) values ($1, $2, $3, $4, $5) \
                 on conflict (key_hash) do nothing")
                .bind(new_id())
                .bind(crate::DEFAULT_WORKSPACE)
                .bind(name)
                .bind(hash_key(key))
                .bind(prefix)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(added == 1)
    }

    /// The workspace of a presented key, if the key is known and not revoked. Looked up every time (see the
    /// module documentation); records the use at most once a [`LAST_USED_EVERY`].
    pub async fn workspace_for_key(&self, key: &str) -> Result<Option<String>> {
        let hash = hash_key(key);
        let row = on_pool!(self, pool => {
            let row = sqlx::query(
                "select id, workspace_id, last_used_at from api_keys where key_hash = $1 and revoked_at is null")
                .bind(&hash)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(r) => Some((r.text("id")?, r.text("workspace_id")?, r.opt_time("last_used_at")?)),
                None => None,
            }
        });
        let Some((id, workspace, last_used)) = row else { return Ok(None) };
        if last_used.is_none_or(|at| now() - at >= LAST_USED_EVERY) && self.claim_key_use(&id) {
            // In the background: on SQLite the write waits for the write lock, the request need not.
            let store = self.clone();
            tokio::spawn(async move { store.touch_api_key(&id).await });
        }
        Ok(Some(workspace))
    }

    /// Whether this process should record a use of key `id` now: not when it did less than
    /// [`LAST_USED_EVERY`] ago (concurrent requests of one key all read the same stale time).
    fn claim_key_use(&self, id: &str) -> bool {
        let mut uses = self.key_uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if uses.get(id).is_some_and(|at| at.elapsed() < LAST_USED_EVERY) {
            return false;
        }
        if uses.len() >= KEY_USES_MAX {
            uses.clear();
        }
        uses.insert(id.to_owned(), std::time::Instant::now());
        true
    }

    /// Records a use of key `id`. A failure is logged, not returned: the request the key came with went on.
    async fn touch_api_key(&self, id: &str) {
        let written = on_pool!(self, pool => sqlx::query("update api_keys set last_used_at = $1 where id = $2")
            .bind(now())
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ()));
        if let Err(e) = written {
            tracing::debug!(error = %e, "could not record the use of an API key");
        }
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        let sql = format!("select {INFO_COLUMNS} from api_keys order by created_at, id");
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
            rows.iter().map(info).collect()
        })
    }

    /// Revokes the one key whose prefix, name or id is `which`: refused by every process from its next request.
    /// `Ok(None)`: no key matches; [`StoreError::AmbiguousKey`] when several do (names need not be unique:
    /// use the prefix).
    pub async fn revoke_api_key(&self, which: &str) -> Result<Option<Revoked>> {
        let sql = format!("select {INFO_COLUMNS} from api_keys where prefix = $1 or name = $1 or id = $1");
        let matches: Vec<ApiKeyInfo> = on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(which).fetch_all(pool).await?;
            rows.iter().map(info).collect::<Result<_>>()?
        });
        let mut key = match <[ApiKeyInfo; 1]>::try_from(matches) {
            Ok([key]) => key,
            Err(v) if v.is_empty() => return Ok(None),
            Err(v) => return Err(StoreError::AmbiguousKey { which: which.to_owned(), count: v.len() }),
        };
        if key.revoked_at.is_some() {
            return Ok(Some(Revoked::Already(key)));
        }
        let at = now();
        on_pool!(self, pool => sqlx::query(
            "update api_keys set revoked_at = $1 where id = $2 and revoked_at is null")
            .bind(at)
            .bind(&key.id)
            .execute(pool)
            .await
            .map(|_| ())?);
        key.revoked_at = Some(at);
        Ok(Some(Revoked::Now(key)))
    }

    /// Whether a key that is not revoked exists. Decides at start whether a server may run without keys; a
    /// server that does stops doing so once this turns true (see the API's `Access`).
    pub async fn auth_enabled(&self) -> Result<bool> {
        let any = on_pool!(self, pool => sqlx::query("select 1 from api_keys where revoked_at is null limit 1")
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
