//! berth's own effective capabilities, read where a step needs one that a containerized host
//! (or a container's exec'd process) may lack.

/// CAP_SYS_ADMIN: loading a seccomp filter without no_new_privs needs it.
pub const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process has capability `bit` in its effective set (/proc/self/status CapEff).
pub fn has_effective(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).unwrap_or("0");
    u64::from_str_radix(effective, 16).map(|caps| caps & (1 << bit) != 0).unwrap_or(false)
}
