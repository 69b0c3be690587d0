//! The `berth-cni` command line (the binary run under its own name rather than as a
//! plugin): named networks, attaching containers through a network's chain, and the OCI
//! hook mode. One small file per command over the `network` library.

mod add;
mod check;
mod container_inspect;
mod del;
mod hook;
mod network_create;
mod network_inspect;
mod network_ls;
mod network_rm;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::network::Dirs;

#[derive(Parser, Debug)]
#[command(
    name = "berth-cni",
    version,
    about = "berth-cni: berth's CNI plugins, and named networks for containers run without an orchestrator",
    long_about = "berth-cni is one binary for berth's CNI plugins: linked under a plugin's name (bridge, \
host-local, loopback, ...) in a CNI bin directory it is that plugin. Run as berth-cni it manages named \
networks (conflists of bridge + portmap + firewall + tuning), attaches containers to them as cnitool does, \
and, as an OCI createRuntime/poststop hook, attaches bundles run by berth or runc and keeps their hosts \
files listing every member of the network."
)]
pub struct Cli {
    #[command(flatten)]
    pub dirs: DirOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct DirOpts {
    /// Directory of the network configs (conflists)
    #[arg(long, global = true, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// Directory of the CNI plugins [default: the lib/cni installed next to berth-cni]
    #[arg(long, global = true, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// berth-cni's state: attachments, cached results, address allocations
    #[arg(long, global = true, value_name = "DIR", default_value = "/var/lib/berth/cni")]
    pub state_dir: PathBuf,
}

impl DirOpts {
    fn resolve(&self) -> Result<Dirs> {
        let bin_dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            // `make install` puts berth-cni in bin/ and its plugin links in lib/cni/.
            None => {
                let exe = std::env::current_exe().context("cannot find berth-cni's own path (give --bin-dir)")?;
                exe.parent().map(|bin| bin.join("../lib/cni")).context("berth-cni has no directory (give --bin-dir)")?
            }
        };
        Ok(Dirs { conf_dir: self.conf_dir.clone(), bin_dir, state_dir: self.state_dir.clone() })
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, inspect and remove networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Attach a container's namespace to a network (prints the CNI result)
    Add(AttachArgs),
    /// Detach a container from a network (also when its namespace is gone, and when repeated)
    Del(DetachArgs),
    /// Check a container's attachment to a network
    Check(DetachArgs),
    /// OCI hook mode: read the container's state on stdin
    #[command(subcommand)]
    Hook(HookCommand),
    /// Running containers attached by hook add, by name
    #[command(subcommand)]
    Container(ContainerCommand),
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Print the running container of that name (id, bundle, pinned network namespace) as JSON
    Inspect(ContainerName),
}

#[derive(Args, Debug)]
pub struct ContainerName {
    /// The container's name (hook add's --name)
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network: a conflist in --conf-dir with a free private subnet unless given
    Create(network_create::CreateArgs),
    /// List the networks
    Ls(network_ls::LsArgs),
    /// Print a network and its attached containers as JSON
    Inspect(NetworkName),
    /// Remove a network (refused while containers are attached)
    Rm(NetworkName),
}

#[derive(Args, Debug)]
pub struct NetworkName {
    /// The network's name
    pub name: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// What ADD takes besides the network and container.
#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    /// Publish a container port: [IP:][HOST:]CTR[/udp|/tcp|/sctp], ranges like 8000-8010:80-90,
    /// or CTR alone for a free host port
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Another name the other members resolve this container by
    #[arg(long = "alias", value_name = "NAME")]
    pub aliases: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The network's name
    pub network: String,
    /// Path of the container's network namespace
    #[arg(long, value_name = "PATH")]
    pub netns: String,
    /// The container's id
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// The interface inside the container
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    #[command(flatten)]
    pub publish: PublishArgs,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// The network's name
    pub network: String,
    /// Path of the container's network namespace (may be gone for del)
    #[arg(long, value_name = "PATH", default_value = "")]
    pub netns: String,
    /// The container's id
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// The interface inside the container
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
}

#[derive(Subcommand, Debug)]
pub enum HookCommand {
    /// As a createRuntime hook: attach the container (netns /proc/<pid>/ns/net, id from the state)
    Add(hook::HookAddArgs),
    /// As a poststop hook: detach the container, also when its namespace is gone
    Del(hook::HookDelArgs),
}

/// Runs the command line of `berth-cni`; returns the exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // --help and --version go to stdout and exit 0; bad usage exits 2 with the usage.
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-cni: {e:#}");
            1
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let dirs = cli.dirs.resolve()?;
    match &cli.command {
        Command::Network(NetworkCommand::Create(args)) => network_create::run(&dirs, args),
        Command::Network(NetworkCommand::Ls(args)) => network_ls::run(&dirs, args),
        Command::Network(NetworkCommand::Inspect(args)) => network_inspect::run(&dirs, &args.name),
        Command::Network(NetworkCommand::Rm(args)) => network_rm::run(&dirs, &args.name),
        Command::Add(args) => add::run(&dirs, args),
        Command::Del(args) => del::run(&dirs, args),
        Command::Check(args) => check::run(&dirs, args),
        Command::Hook(HookCommand::Add(args)) => hook::add(&dirs, args),
        Command::Hook(HookCommand::Del(args)) => hook::del(&dirs, args),
        Command::Container(ContainerCommand::Inspect(args)) => container_inspect::run(&dirs, &args.name),
    }
}
