//! berth-cni: CNI 1.1 plugins in one multicall binary; each plugin is a short
//! orchestration over the shared protocol, result and store modules.

pub mod bridge;
pub mod conf;
pub mod error;
pub mod exec;
pub mod firewall;
pub mod host_local;
pub mod ipam;
pub mod loopback;
pub mod netlink;
pub mod netns;
pub mod portmap;
pub mod result;
pub mod skel;
pub mod spoofcheck;

/// Runs the plugin named by the program's file name; returns the exit code.
pub fn run_as(argv0: &str) -> i32 {
    let name = std::path::Path::new(argv0).file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name {
        "bridge" => skel::run(&bridge::Bridge, name),
        "host-local" => skel::run(&host_local::HostLocal, name),
        "loopback" => skel::run(&loopback::Loopback, name),
        "portmap" => skel::run(&portmap::PortMap, name),
        _ => {
            eprintln!("berth-cni: run me as one of the plugins bridge, host-local or loopback (a link named so), not as {name:?}");
            1
        }
    }
}
