//! Compiles `protos/*.proto` with prost-build, parsed by protox (pure Rust), so that a machine
//! without a system `protoc` builds with cargo alone.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `-V` of every binary names the commit it was built from (`unknown` outside a checkout).
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NETMOD_GIT_REV={rev}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
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
