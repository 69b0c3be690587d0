//! The loopback plugin: brings `lo` up in the container's namespace and reports it; DEL
//! takes it down when the namespace is still there and succeeds when it is gone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde_json::Value;

use crate::error::{CniError, CniResult, IO_FAILURE};
use crate::result::{Interface, IpConfig, NetResult};
use crate::skel::{Args, Plugin};

pub struct Loopback;

/// lo's interface flags in the current namespace.
fn lo_flags() -> CniResult<libc::c_short> {
    lo_ioctl(None)
}

/// Sets or clears IFF_UP on `lo` of the current namespace.
fn set_lo_up(up: bool) -> CniResult<()> {
    lo_ioctl(Some(up)).map(|_| ())
}

/// Reads lo's flags and, with `up`, sets or clears IFF_UP; returns the flags read.
fn lo_ioctl(up: Option<bool>) -> CniResult<libc::c_short> {
    // SAFETY: a datagram socket used only for interface ioctls, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(CniError::io("cannot open a socket", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain data; the name fits.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let result = (|| {
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq given.
        if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) } != 0 {
            return Err(CniError::new(IO_FAILURE, format!("cannot read lo's flags: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: the flags member of the union is what SIOCGIFFLAGS filled.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        let Some(up) = up else { return Ok(flags) };
        let wanted = if up { flags | libc::IFF_UP as libc::c_short } else { flags & !(libc::IFF_UP as libc::c_short) };
        req.ifr_ifru.ifru_flags = wanted;
        // SAFETY: as above.
        if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) } != 0 {
            return Err(CniError::new(IO_FAILURE, format!("cannot set lo's flags: {}", std::io::Error::last_os_error())));
        }
        Ok(flags)
    })();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    result
}

impl Plugin for Loopback {
    fn add(&self, args: &Args, _conf: &Value) -> CniResult<NetResult> {
        crate::netns::enter(&args.netns)?;
        set_lo_up(true)?;
        let mut ips = vec![IpConfig { address: IpNet::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8).unwrap(), gateway: None, interface: Some(0) }];
        // ::1 exists only where IPv6 is enabled in the namespace.
        if std::fs::read_to_string("/proc/net/if_inet6").map(|t| t.lines().any(|l| l.ends_with(" lo"))).unwrap_or(false) {
            ips.push(IpConfig { address: IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap(), gateway: None, interface: Some(0) });
        }
        Ok(NetResult { interfaces: vec![Interface { name: "lo".into(), mac: "00:00:00:00:00:00".into(), sandbox: Some(args.netns.clone()) }], ips, ..Default::default() })
    }

    fn del(&self, args: &Args, _conf: &Value) -> CniResult<()> {
        // A namespace already gone has nothing left to undo.
        if args.netns.is_empty() || crate::netns::enter(&args.netns).is_err() {
            return Ok(());
        }
        set_lo_up(false)
    }

    fn check(&self, args: &Args, _conf: &Value) -> CniResult<()> {
        crate::netns::enter(&args.netns)?;
        if lo_flags()? & libc::IFF_UP as libc::c_short != 0 { Ok(()) } else { Err(CniError::new(IO_FAILURE, "lo is down in the container's namespace")) }
    }

    fn gc(&self, _conf: &Value, _valid: &[(String, String)]) -> CniResult<()> {
        Ok(()) // loopback keeps nothing outside the namespace
    }

    fn status(&self, _conf: &Value) -> CniResult<()> {
        Ok(())
    }
}
