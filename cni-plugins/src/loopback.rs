//! The loopback plugin: brings `lo` up in the container's namespace and reports it; DEL
//! takes it down when the namespace is still there and succeeds when it is gone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde_json::Value;

use crate::error::{CniError, CniResult, IO_FAILURE};
use crate::result::{Interface, IpConfig, NetResult};
use crate::skel::{Args, Plugin};

pub struct Loopback;

/// Sets or clears IFF_UP on `lo` of the current namespace; returns whether it is up.
fn set_lo_up(up: bool) -> CniResult<bool> {
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
        let wanted = if up { flags | libc::IFF_UP as libc::c_short } else { flags & !(libc::IFF_UP as libc::c_short) };
        req.ifr_ifru.ifru_flags = wanted;
        // SAFETY: as above.
        if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) } != 0 {
            return Err(CniError::new(IO_FAILURE, format!("cannot set lo's flags: {}", std::io::Error::last_os_error())));
        }
        Ok(up)
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
        set_lo_up(false).map(|_| ())
    }

    fn check(&self, args: &Args, _conf: &Value) -> CniResult<()> {
        crate::netns::enter(&args.netns)?;
        let flags = std::fs::read_to_string("/sys/class/net/lo/flags").unwrap_or_default();
        let up = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).map(|f| f & libc::IFF_UP as u32 != 0).unwrap_or(false);
        if up { Ok(()) } else { Err(CniError::new(IO_FAILURE, "lo is down in the container's namespace")) }
    }

    fn gc(&self, _conf: &Value, _valid: &[(String, String)]) -> CniResult<()> {
        Ok(()) // loopback keeps nothing outside the namespace
    }

    fn status(&self, _conf: &Value) -> CniResult<()> {
        Ok(())
    }
}
