//! Records the git commit berth is built from, for `berth --version`, and sets the `berth`
//! binary's entry point to `early_seal`'s, which runs before the C library's.

fn main() {
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=BERTH_COMMIT={commit}");
    }
    // HEAD names the branch; the branch's ref (loose, or packed) moves with each commit. A
    // path that does not exist would rerun this script on every build.
    for path in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ARCH") == "x86_64" {
        println!("cargo:rustc-link-arg-bin=berth=-Wl,--entry=berth_entry");
    }
}
