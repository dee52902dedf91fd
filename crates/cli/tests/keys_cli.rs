//! `leadscore keys list` / `keys revoke` and the redaction of passwords, as a real process on a SQLite file.

use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leadscore-keys-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn leadscore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run leadscore")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The rows of `keys list` under its header.
fn list(db: &str) -> Vec<Vec<String>> {
    let out = leadscore(&["keys", "list", "--database-url", db]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("prefix\tname\tworkspace\tcreated\tlast_used\trevoked"));
    lines.map(|l| l.split('\t').map(str::to_owned).collect()).collect()
}

#[test]
fn keys_are_listed_and_revoked() {
    let dir = scratch("list");
    let db = format!("sqlite://{}", dir.join("leadscore.db").display());
    assert!(list(&db).is_empty());
    let mut keys = Vec::new();
    for (name, workspace) in [("ops", Some("default")), ("ci", None), ("ci", None)] {
        let mut args = vec!["keys", "create", "--name", name, "--database-url", &db];
        if let Some(w) = workspace {
            args.extend(["--workspace", w]);
        }
        let out = leadscore(&args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        keys.push(stdout.trim().to_owned());
    }
    let rows = list(&db);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][..3], [&keys[0][..12], "ops", "default"]);
    assert!(rows.iter().all(|r| r.len() == 6 && r[4] == "-" && r[5] == "-"), "{rows:?}");
    let listed = format!("{rows:?}");
    assert!(keys.iter().all(|k| !listed.contains(&k[12..])), "secrets are never listed");

    let out = leadscore(&["keys", "revoke", "ci", "--database-url", &db]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "two keys are named ci: {stderr}");
    assert!(stderr.contains("2 API keys match \"ci\""), "{stderr}");
    let out = leadscore(&["keys", "revoke", "lsk_nothere", "--database-url", &db]);
    assert_eq!(out.status.code(), Some(2));

    let out = leadscore(&["keys", "revoke", &keys[1][..12], "--database-url", &db]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Revoked API key \"ci\""), "{stderr}");
    let rows = list(&db);
    assert_ne!(rows[1][5], "-", "revoked: {rows:?}");
    assert_eq!((rows[0][5].as_str(), rows[2][5].as_str()), ("-", "-"), "only that one: {rows:?}");
    let out = leadscore(&["keys", "revoke", &keys[1][..12], "--database-url", &db]);
    assert!(out.status.success() && text(&out).1.contains("already revoked"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn passwords_never_reach_help_or_errors() {
    let secret = "s3cr3tpw";
    let url = format!("postgres://leadscore:{secret}@db.internal:5432/leads");
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["serve", "--help"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("help");
    let (stdout, _) = text(&out);
    assert!(stdout.contains("DATABASE_URL") && !stdout.contains(secret), "{stdout}");

    for bad in [
        format!("mysql://leadscore:{secret}@db.internal/leads"),
        format!("postgres://leadscore:{secret}@db.internal:notaport/leads"),
        format!("postgres://db.internal/leads?user=u&password={secret}&sslmode=nope"),
    ] {
        let out = leadscore(&["migrate", "--database-url", &bad]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(!stderr.contains(secret), "{bad}: {stderr}");
    }
}
