use clap::{CommandFactory, Parser};

use super::*;

#[test]
fn the_commands_are_well_formed() {
    for c in commands() {
        c.1.clone().debug_assert();
    }
}

#[test]
fn every_option_has_a_flag_and_a_variable() {
    for (binary, command) in commands() {
        for arg in options(&command) {
            assert!(arg.get_long().is_some(), "{binary}: {} has no flag", arg.get_id());
            assert!(arg.get_env().is_some(), "{binary}: --{} has no variable", arg.get_id());
        }
    }
}

#[test]
fn secrets_are_hidden_from_help() {
    for (binary, command) in commands() {
        for arg in options(&command) {
            let var = arg.get_env().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
            if SECRET_VARIABLES.contains(&var.as_str()) {
                assert!(arg.is_hide_env_values_set(), "{binary}: {var} would show its value in --help");
            }
        }
    }
}

#[test]
fn serve_defaults_to_sqlite_on_loopback_and_the_cluster_binaries_to_all_interfaces() {
    let serve = serve_command();
    let default = |c: &clap::Command, id: &str| {
        let a = c.get_arguments().find(|a| a.get_id() == id).expect(id);
        a.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(",")
    };
    assert_eq!(default(&serve, "database_url"), "sqlite://leadscore.db");
    assert_eq!(default(&serve, "listen"), "127.0.0.1:8080");
    assert_eq!(default(&serve, "ops_listen"), "127.0.0.1:9464");
    assert_eq!(default(&ApiCli::command(), "database_url"), "");
    assert_eq!(default(&ApiCli::command(), "listen"), "0.0.0.0:8080");
    assert_eq!(default(&WorkerCli::command(), "db_max_connections"), "8");
    assert_eq!(default(&ApiCli::command(), "db_max_connections"), "16");
}

#[test]
fn the_llm_settings_reach_the_llm_configuration() {
    let cli = WorkerCli::try_parse_from([
        "leadscore-worker",
        "--database-url",
        "postgres://x@h/db",
        "--openai-base-url",
        "http://127.0.0.1:1/v1/",
        "--rpm",
        "7",
        "--model",
        "o3-mini",
        "--redis-url",
        "redis://127.0.0.1:1",
    ])
    .expect("parses");
    let c = cli.llm.config().expect("valid").expect("on");
    assert_eq!(
        (c.base_url.as_str(), c.rpm, c.kind),
        ("http://127.0.0.1:1/v1", 7, leadscore_llm::ModelKind::Reasoning)
    );
    assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:1"));
    let off = WorkerCli::try_parse_from([
        "leadscore-worker",
        "--database-url",
        "sqlite://x.db",
        "--openai-api-key",
        " ",
    ])
    .expect("parses");
    assert!(off.llm.config().expect("valid").is_none(), "a blank key is no key");
}

#[test]
fn bootstrap_keys_must_be_long() {
    let parse = |key: &str| {
        ApiCli::try_parse_from(["leadscore-api", "--database-url", "sqlite://x.db", "--bootstrap-key", key])
    };
    assert!(parse("short").is_err());
    assert!(parse(&"a b".repeat(20)).is_err());
    assert_eq!(parse(&"k".repeat(40)).expect("long enough").bootstrap_key, Some("k".repeat(40)));
}

/// The README's configuration table is generated from these definitions; run with
/// `LEADSCORE_UPDATE_README=1` to rewrite it after changing an option.
#[test]
fn the_readme_table_matches_the_definitions() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let (start, end) =
        (readme.find(TABLE_START).expect("table start marker"), readme.find(TABLE_END).expect("end marker"));
    let table = super::table::markdown();
    let current = &readme[start + TABLE_START.len()..end];
    if current.trim() != table.trim() {
        if std::env::var_os("LEADSCORE_UPDATE_README").is_some() {
            let updated = format!("{}{TABLE_START}\n{}\n{}", &readme[..start], table.trim(), &readme[end..]);
            std::fs::write(path, updated).expect("write README.md");
        } else {
            panic!(
                "README.md's configuration table is stale; run LEADSCORE_UPDATE_README=1 cargo test -p leadscore-ops. Expected:\n{table}"
            );
        }
    }
}

const TABLE_START: &str = "<!-- configuration table: generated from crates/ops/src/config.rs -->";
const TABLE_END: &str = "<!-- end of configuration table -->";

fn options(command: &clap::Command) -> Vec<&clap::Arg> {
    command.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")).collect()
}
