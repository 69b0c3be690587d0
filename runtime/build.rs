//! Records the git commit berth is built from, for `berth --version`.

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
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
