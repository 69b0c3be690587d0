//! Bringing `lo` up in a container's new network namespace, as runc does: a fresh network
//! namespace starts with its loopback DOWN, so nothing inside could reach 127.0.0.1.

use anyhow::{Context, Result};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// True when the config asks for a new network namespace (a network namespace entry
/// without a path); joining an existing one by path leaves its interfaces to their owner.
fn creates_network_namespace(spec: &Spec) -> bool {
    spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()).is_some_and(|namespaces| {
        namespaces.iter().any(|ns| ns.typ() == LinuxNamespaceType::Network && ns.path().is_none())
    })
}

/// Sets IFF_UP on `lo` in the network namespace of process `init`, when the config made
/// that namespace. It is done from here, before start, because the container's init runs
/// the executor only after dropping capabilities (CAP_NET_ADMIN is rarely kept).
pub fn bring_up_in_new_namespace(init: Pid, spec: &Spec) -> Result<()> {
    if !creates_network_namespace(spec) {
        return Ok(());
    }
    let namespace = format!("/proc/{init}/ns/net");
    let container = std::fs::File::open(&namespace)
        .with_context(|| format!("cannot open the container's network namespace {namespace}"))?;
    let own = std::fs::File::open("/proc/thread-self/ns/net").context("cannot open berth's own network namespace")?;
    // A socket belongs to the network namespace it was made in, whatever the thread's
    // namespace later: enter the container's for the socket() call only.
    nix::sched::setns(&container, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter the container's network namespace {namespace}"))?;
    let socket = interface_socket();
    if let Err(e) = nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET) {
        // Whatever berth did next (hooks, cleanup) would run in the container's namespace.
        eprintln!("berth: cannot return to its own network namespace from the container's: {e}");
        std::process::abort();
    }
    set_loopback_up(&socket?).context("cannot bring the loopback interface up in the container's network namespace")
}

/// A socket for interface ioctls, in the calling thread's network namespace.
fn interface_socket() -> Result<std::os::fd::OwnedFd> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("cannot open a socket for interface ioctls")
}

/// SIOCGIFFLAGS then SIOCSIFFLAGS with IFF_UP on `lo`, through `socket` (of the namespace
/// whose `lo` it is).
fn set_loopback_up(socket: &std::os::fd::OwnedFd) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: both ioctls read and write one ifreq, which outlives the calls. (The request
    // number's type is the C library's: unsigned long in glibc, int in musl.)
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS on lo");
    }
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled in.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) } < 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS on lo");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::creates_network_namespace;

    fn spec_with(namespaces: serde_json::Value) -> oci_spec::runtime::Spec {
        serde_json::from_value(serde_json::json!({"ociVersion": "1.1.0", "linux": {"namespaces": namespaces}})).unwrap()
    }

    #[test]
    fn only_a_network_namespace_without_a_path_is_new() {
        assert!(creates_network_namespace(&spec_with(serde_json::json!([{"type": "pid"}, {"type": "network"}]))));
        assert!(!creates_network_namespace(&spec_with(
            serde_json::json!([{"type": "network", "path": "/run/netns/a"}])
        )));
        assert!(!creates_network_namespace(&spec_with(serde_json::json!([{"type": "pid"}, {"type": "mount"}]))));
    }
}
