//! Guards for tests that need root or a host facility: they say what is missing, and fail
//! under `CI=true` instead of passing silently.

/// True when the test may go on. Without root it fails under CI and skips loudly elsewhere.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    missing(test, "root privileges")
}

/// Reports a missing facility: a failure under `CI=true`, a loud skip otherwise.
pub fn missing(test: &str, what: &str) -> bool {
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{test}: needs {what}, which this CI machine lacks");
    }
    eprintln!("SKIPPED {test}: needs {what}");
    false
}

/// True when `program` is on PATH.
pub fn have_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
