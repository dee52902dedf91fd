//! A fresh, isolated database per test: a new PostgreSQL database on the server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), or a new SQLite file. Dropped when the test ends.

use std::path::PathBuf;

use crate::{Backend, ConnectOptions, Store};

pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub store: Store,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite { dir: PathBuf },
}

impl TestDb {
    /// Creates and migrates a fresh database. Panics when the server is unreachable: tests need a real one.
    pub async fn new(backend: Backend) -> TestDb {
        let name = format!("ls_test_{}", uuid::Uuid::new_v4().simple());
        let (url, cleanup) = match backend {
            Backend::Postgres => {
                let admin_url = postgres_url();
                let admin = Store::connect_lazy(
                    &admin_url,
                    &ConnectOptions { max_connections: 1, ..Default::default() },
                )
                .expect("DATABASE_URL");
                crate::on_pool!(admin, pool => {
                    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                        .execute(pool)
                        .await
                        .unwrap_or_else(|e| panic!("cannot create a test database on {admin_url}: {e}"));
                });
                admin.close().await;
                let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b).to_owned();
                (format!("{base}/{name}"), Cleanup::Postgres { admin_url, name })
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("temp dir");
                (format!("sqlite://{}", dir.join("leadscore.db").display()), Cleanup::Sqlite { dir })
            }
        };
        let store =
            Store::open(&url, &ConnectOptions::default()).await.expect("open and migrate the test database");
        TestDb { url, store, cleanup }
    }

    /// Runs one raw SQL statement (to force a state no operation of the store reaches directly); returns the
    /// rows it changed. Panics on error.
    pub async fn execute(&self, sql: &str) -> u64 {
        crate::on_pool!(self.store, pool => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .rows_affected())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                // Drop runs outside async context; a short-lived thread with its own runtime does the work.
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    rt.block_on(async {
                        let admin = Store::connect_lazy(&admin_url, &ConnectOptions::default()).ok()?;
                        crate::on_pool!(admin, pool => {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("drop database if exists {name} with (force)")))
                                .execute(pool)
                                .await;
                        });
                        admin.close().await;
                        Some(())
                    })
                })
                .join();
            }
        }
    }
}

/// The `i`-th lead of the queue tests: a CEO on even `i`, an analyst on odd, all of one B2B SaaS company.
pub fn sample_lead(i: usize) -> leadscore_core::Lead {
    leadscore_core::Lead {
        external_id: None,
        name: format!("Lead {i}"),
        role: if i.is_multiple_of(2) { "CEO".into() } else { "Analyst".into() },
        company: "Acme".into(),
        industry: "B2B SaaS".into(),
        location: "Berlin".into(),
        linkedin_bio: "bio".into(),
        attributes: vec![],
    }
}

/// An offer for "B2B SaaS" and an upload of `n` [`sample_lead`]s in the default workspace: (offer id, upload id).
pub async fn seed(store: &Store, n: usize) -> (String, String) {
    let ws = crate::DEFAULT_WORKSPACE;
    let offer = leadscore_core::Offer {
        name: "x".into(),
        value_props: vec![],
        ideal_use_cases: vec!["B2B SaaS".into()],
    };
    let offer = store.create_offer(ws, &offer).await.expect("offer");
    let mut w = store.begin_upload(ws, None).await.expect("upload");
    let leads: Vec<(u64, leadscore_core::Lead)> = (0..n).map(|i| (i as u64 + 2, sample_lead(i))).collect();
    w.write_batch(&leads, &[]).await.expect("batch");
    (offer.id, w.commit(&[]).await.expect("commit").id)
}
