//! berth-cni: CNI 1.1 plugins in one multicall binary; each plugin is a short
//! orchestration over the shared protocol, result and store modules. Run under its own
//! name it is the `berth-cni` command line (`cli`): named networks and the OCI hook mode.

pub mod bridge;
pub mod chain;
pub mod cli;
pub mod conf;
pub mod error;
pub mod exec;
pub mod firewall;
pub mod firewall_plugin;
pub mod host_local;
pub mod hosts;
pub mod ipam;
pub mod loopback;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod portmap;
pub mod result;
pub mod skel;
pub mod spoofcheck;
pub mod tuning;

/// The plugins this binary can run as: the CNI `type`, which is the file name it runs under.
pub const PLUGINS: &[&str] = &["bridge", "firewall", "host-local", "loopback", "portmap", "tuning"];

/// Runs the plugin named by the program's file name (the first of `args`, the program's
/// arguments as it was started with them); returns the exit code.
pub fn run_as(args: Vec<std::ffi::OsString>) -> i32 {
    let argv0 = args.first().cloned().unwrap_or_default();
    let name = std::path::Path::new(&argv0).file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name {
        "bridge" => skel::run(&bridge::Bridge, name),
        "firewall" => skel::run(&firewall_plugin::Firewall, name),
        "host-local" => skel::run(&host_local::HostLocal, name),
        "loopback" => skel::run(&loopback::Loopback, name),
        "portmap" => skel::run(&portmap::PortMap, name),
        "tuning" => skel::run(&tuning::Tuning, name),
        "berth-cni" => cli::main(args),
        _ => skel::refuse_unknown_plugin(name, PLUGINS),
    }
}
