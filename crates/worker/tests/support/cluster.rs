//! A throwaway PostgreSQL cluster on its own port (never the shared server), with the `initdb` / `pg_ctl` of the
//! installed PostgreSQL: for tests that stop and restart the database under a running process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A throwaway cluster; stopped and deleted on drop.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn pg_ctl(&self, args: &[&str]) -> bool {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let mut full: Vec<String> = vec![
            self.bin.join("pg_ctl").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-l".into(),
            log.display().to_string(),
        ];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        run(&full, self.as_postgres)
    }

    pub fn start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        assert!(self.pg_ctl(&["-w", "-o", &opts, "start"]), "pg_ctl start: {}", self.log());
    }

    pub fn stop(&self) {
        assert!(self.pg_ctl(&["-w", "-m", "fast", "stop"]), "pg_ctl stop: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[String], as_postgres: bool) -> bool {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).args(args);
        c
    } else {
        let mut c = Command::new(&args[0]);
        c.args(&args[1..]);
        c
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(55_432, |a| a.port())
}

/// The newest installed PostgreSQL's binaries, if any.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent().and_then(Path::file_name).and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok())
    });
    versions.pop()
}

impl Cluster {
    /// A new cluster under `name` (initialised, not started) on a free port.
    pub fn new(name: &str) -> Cluster {
        throwaway_cluster(name)
    }
}

fn throwaway_cluster(name: &str) -> Cluster {
    let bin = postgres_bin().expect("PostgreSQL's initdb (scripts/test installs the postgresql package)");
    let dir = std::env::temp_dir().join(format!("leadscore-pg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // initdb refuses to run as root: run the cluster as the postgres user then.
    let as_postgres = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if as_postgres {
        assert!(run(&["chown".into(), "postgres".into(), dir.display().to_string()], false), "chown");
    }
    let initdb = vec![
        bin.join("initdb").display().to_string(),
        "-D".into(),
        dir.join("data").display().to_string(),
        "-A".into(),
        "trust".into(),
        "-U".into(),
        "postgres".into(),
    ];
    assert!(run(&initdb, as_postgres), "initdb failed");
    Cluster { bin, dir, port: free_port(), as_postgres }
}
