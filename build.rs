//! Compiles `protos/*.proto` with prost-build, parsed by protox (pure Rust), so that a machine
//! without a system `protoc` builds with cargo alone; and says which of the test suite's
//! prerequisites this machine has (see [`prerequisites`]).

use std::path::PathBuf;

/// The tests that need something cargo does not bring (PostgreSQL, nginx, a browser, …) are
/// `#[cfg_attr(not(netmod_…), ignore = "needs …")]`: without it they show as *ignored* in
/// cargo's summary, never as passed. A cfg is set when the tool is on `PATH` (PostgreSQL: when
/// `DATABASE_URL` is set), or when its `NETMOD_REQUIRE_…=1` says it must run, as in CI: then the
/// test runs and fails if the tool is missing. Installing a tool later changes nothing until
/// `PATH` or one of these variables changes (or `touch build.rs`).
fn prerequisites() {
    let set = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty());
    let required = |var: &str| std::env::var(var).as_deref() == Ok("1");
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
    };
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=DATABASE_URL");
    println!("cargo:rerun-if-env-changed=DATABASE_REPLICA_URL");
    let found = [
        ("netmod_pg", "NETMOD_REQUIRE_PG", set("DATABASE_URL")),
        (
            "netmod_pg_replica",
            "NETMOD_REQUIRE_PG",
            set("DATABASE_URL") && set("DATABASE_REPLICA_URL"),
        ),
        ("netmod_nginx", "NETMOD_REQUIRE_NGINX", on_path("nginx")),
        ("netmod_curl", "NETMOD_REQUIRE_CURL", on_path("curl")),
        (
            "netmod_openssl",
            "NETMOD_REQUIRE_OPENSSL",
            on_path("openssl"),
        ),
        (
            "netmod_chromium",
            "NETMOD_REQUIRE_CHROMIUM",
            on_path("chromium"),
        ),
        (
            "netmod_redis",
            "NETMOD_REQUIRE_REDIS",
            on_path("redis-server") && on_path("redis-cli"),
        ),
        (
            "netmod_systemd_analyze",
            "NETMOD_REQUIRE_SYSTEMD_ANALYZE",
            on_path("systemd-analyze"),
        ),
    ];
    for (cfg, require, have) in found {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        println!("cargo:rerun-if-env-changed={require}");
        if have || required(require) {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prerequisites();
    let mut protos: Vec<PathBuf> = std::fs::read_dir("protos")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    protos.sort();
    println!("cargo:rerun-if-changed=protos");
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let fds = protox::compile(&protos, ["protos"])?;
    prost_build::Config::new()
        // `bytes::Bytes` lets a decoded payload share the frame's buffer instead of copying it.
        .bytes(["."])
        .compile_fds(fds)?;
    Ok(())
}
