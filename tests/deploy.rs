//! The deployment files in `deploy/`: the systemd units pass `systemd-analyze verify` (with the
//! binaries of this build in place of /usr/local/bin; pg_autoctl's where it is installed), and each program starts with its sample
//! configuration and flags (benches/cluster.sh runs the whole layout with them).

mod common;

use std::path::{Path, PathBuf};

use common::{prerequisite, Proc, TempDir};

const REQUIRE: &str = "NETMOD_REQUIRE_SYSTEMD_ANALYZE";

fn deploy(part: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(part)
}

fn analyzer() -> bool {
    common::runs("systemd-analyze", "--version")
}

#[test]
#[cfg_attr(not(netmod_systemd_analyze), ignore = "needs systemd-analyze")]
fn the_systemd_units_verify() {
    if !prerequisite("systemd-analyze", REQUIRE, analyzer()) {
        return;
    }
    let dir = TempDir::new("units");
    let bin = common::bin_path("db-server");
    let bin_dir = bin.parent().unwrap().display().to_string();
    // pg_auto_failover's pg_autoctl (Debian's pg-auto-failover-cli; .ci/run installs it).
    let autoctl = common::runs("pg_autoctl", "--version");
    assert!(
        autoctl || std::env::var_os(REQUIRE).is_none(),
        "pg_autoctl is missing: deploy/systemd/pg_autoctl.service cannot be verified"
    );
    let mut units = Vec::new();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(deploy("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        // Ours run as a dynamic user; pg_autoctl as postgres, which owns the data.
        let user = if name.starts_with("netmod-") {
            "DynamicUser=yes"
        } else {
            "User=postgres"
        };
        assert!(
            text.contains("KillSignal=SIGTERM")
                && text.contains("Restart=")
                && text.contains("LimitNOFILE=")
                && text.contains(user)
                && text.contains("ProtectSystem=strict"),
            "{} lacks a required setting",
            path.display()
        );
        names.push(name.clone());
        if name == "pg_autoctl.service" && !autoctl {
            eprintln!("pg_autoctl is not installed: {name} is not verified");
            continue;
        }
        let here = dir.path(&name);
        std::fs::write(
            &here,
            text.replace("/usr/local/bin/", &format!("{bin_dir}/")),
        )
        .unwrap();
        units.push(here);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "netmod-db-server.service",
            "netmod-proxy.service",
            "netmod-test-server.service",
            "pg_autoctl.service"
        ],
        "one unit per server, and pg_auto_failover's"
    );
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of `key` in a systemd EnvironmentFile.
fn env_value(file: &str, key: &str) -> String {
    std::fs::read_to_string(deploy("config").join(file))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in {file}"))
        .to_string()
}

#[test]
fn each_program_accepts_its_sample_configuration() {
    let config = |name: &str| deploy("config").join(name).display().to_string();
    // Every flag of the sample is accepted (`--help` after them parses them first).
    for (bin, env, key, toml) in [
        (
            "db-server",
            "db-server.env",
            "DB_SERVER_ARGS",
            "db-server.toml",
        ),
        (
            "test-server",
            "test-server.env",
            "TEST_SERVER_ARGS",
            "test-server.toml",
        ),
        ("proxy", "proxy.env", "PROXY_ARGS", "proxy.toml"),
    ] {
        let args = env_value(env, key);
        let out = std::process::Command::new(common::bin_path(bin))
            .arg("--config")
            .arg(config(toml))
            .args(args.split_whitespace())
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{bin} {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And the configuration files load: the proxy with its backends, db-server with its file.
    let dir = TempDir::new("deploy-configs");
    let db_file = dir.path("d.db").display().to_string();
    let mut db = Proc::spawn(
        "db-server",
        &[
            "--config",
            &config("db-server.toml"),
            "--listen",
            "127.0.0.1:0",
            "--sqlite",
            &db_file,
        ],
    );
    db.listen_addr();
    let mut proxy = Proc::spawn(
        "proxy",
        &[
            "--config",
            &config("proxy.toml"),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let line = proxy.wait_line("proxy listening on ");
    assert!(
        line.contains("3 backend(s), strategy least_connections"),
        "{line}"
    );
}
