//! `leadscore keys`: create, list and revoke API keys.

use std::process::ExitCode;

use anyhow::{Context, bail};
use leadscore_store::{ApiKeyInfo, Revoked};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::serve::{DbArgs, block_on, open_store};

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key; it is printed once and only its hash is stored.
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// A name for the key (and for its new workspace).
        #[arg(long)]
        name: String,
        /// Attach the key to an existing workspace (`default` keeps the data created while auth was off)
        /// instead of creating a new one.
        #[arg(long)]
        workspace: Option<String>,
    },
    /// List every key: prefix, name, workspace, created, last used (to the minute), revoked. Never the secret.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key, named by its prefix (from `keys list`), its name or its id: every server refuses it from
    /// its next request. A server started with keys keeps requiring them even when none is left.
    Revoke {
        #[command(flatten)]
        db: DbArgs,
        /// The key's prefix (`lsk_` and 8 characters), name or id.
        prefix_or_name: String,
    },
}

pub fn run(cmd: &KeysCommand) -> ExitCode {
    block_on(async {
        match cmd {
            KeysCommand::Create { db, name, workspace } => {
                let store = open_store(db)?;
                store.migrate().await.context("applying migrations")?;
                let key = store.create_api_key(name, workspace.as_deref()).await?;
                eprintln!(
                    "Created API key {:?} ({}) for workspace {}. It is shown once; store it now:",
                    name, key.prefix, key.workspace_id
                );
                println!("{}", key.key);
                eprintln!(
                    "A running keyless `leadscore serve` requires keys from its next request; without the key, \
                     requests get 401."
                );
            }
            KeysCommand::List { db } => {
                let store = open_store(db)?;
                store.migrate().await.context("applying migrations")?;
                print!("{}", table(&store.list_api_keys().await?));
            }
            KeysCommand::Revoke { db, prefix_or_name } => {
                let store = open_store(db)?;
                store.migrate().await.context("applying migrations")?;
                match store.revoke_api_key(prefix_or_name).await? {
                    Some(Revoked::Now(k)) => {
                        eprintln!("Revoked API key {:?} ({}).", k.name, shown_prefix(&k))
                    }
                    Some(Revoked::Already(k)) => {
                        eprintln!("API key {:?} ({}) was already revoked.", k.name, shown_prefix(&k));
                    }
                    None => bail!(
                        "no API key has the prefix, name or id {prefix_or_name:?} (see `leadscore keys list`)"
                    ),
                }
            }
        }
        Ok(())
    })
}

fn shown_prefix(k: &ApiKeyInfo) -> &str {
    k.prefix.as_deref().unwrap_or("-")
}

fn when(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// Tab-separated with a header line: readable, and easy for `cut` / `awk`.
fn table(keys: &[ApiKeyInfo]) -> String {
    let mut out = String::from("prefix\tname\tworkspace\tcreated\tlast_used\trevoked\n");
    for k in keys {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            shown_prefix(k),
            k.name.replace(['\t', '\n'], " "),
            k.workspace_id,
            when(Some(k.created_at)),
            when(k.last_used_at),
            when(k.revoked_at),
        ));
    }
    out
}
