//! Compiles `protos/*.proto` with prost-build, parsed by protox (pure Rust), so that a machine
//! without a system `protoc` builds with cargo alone.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
