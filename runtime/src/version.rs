//! `--version` in runc's format: name and version, commit, spec version, libseccomp.

/// The version text; callers such as containerd's go-runc parse its `commit:` and `spec:` lines.
pub fn text() -> String {
    let (major, minor, micro) = libseccomp_version();
    format!(
        "berth version {}\ncommit: {}\nspec: {}\nlibseccomp: {major}.{minor}.{micro}\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("BERTH_COMMIT").unwrap_or("unknown"),
        oci_spec::runtime::VERSION,
    )
}

fn libseccomp_version() -> (u32, u32, u32) {
    match libseccomp::ScmpVersion::current() {
        Ok(v) => (v.major, v.minor, v.micro),
        Err(_) => (0, 0, 0),
    }
}
