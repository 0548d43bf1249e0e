//! `-V` of every binary names the commit it was built from (`unknown` outside a checkout).

fn main() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NETMOD_GIT_REV={rev}");
    let git = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.git");
    println!("cargo:rerun-if-changed={git}/HEAD");
    println!("cargo:rerun-if-changed={git}/refs/heads");
}
