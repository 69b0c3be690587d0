//! Netlink for the plugins, synchronous (they are short-lived processes: no async runtime,
//! no `ip` or `nft` subprocesses): one socket with its request and acknowledgement loop
//! and one error type, under the message builders of rtnetlink (`route`) and nf_tables
//! (`nftables`). A client acts in the network namespace it was opened in.

pub mod conntrack;
pub mod nftables;
pub mod route;
mod socket;

/// A failed netlink request (rtnetlink or nf_tables): the kernel's errno, or a transport
/// problem, and what was being done.
#[derive(Debug)]
pub struct NetlinkError {
    pub errno: i32,
    pub message: String,
}

impl std::fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NetlinkError {}

pub type Result<T> = std::result::Result<T, NetlinkError>;

pub(crate) fn failed(what: &str, errno: i32) -> NetlinkError {
    NetlinkError { errno, message: format!("{what}: {}", std::io::Error::from_raw_os_error(errno)) }
}
