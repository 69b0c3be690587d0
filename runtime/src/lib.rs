//! berth: a runc-compatible OCI runtime on youki's libcontainer. The CLI parses and calls
//! these modules, so tests and other crates use the same code.

pub mod bundle;
pub mod cgroup_v1_mount;
pub mod cgroups;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod exec_process;
pub mod exec_seccomp;
pub mod executor;
pub mod foreground;
pub mod lifecycle;
pub mod logging;
pub mod loopback;
pub mod mount_namespace;
pub mod mount_options;
pub mod propagation;
pub mod sealed_exe;
pub mod signal;
pub mod state;
pub mod store;
pub mod terminal;
pub mod version;
pub mod working_dir;

use anyhow::Result;

use cli::{Cli, Command};
use logging::Reporter;
use store::Store;

/// Runs one parsed command line and returns the process exit code.
pub fn execute(cli: Cli, reporter: &Reporter) -> Result<i32> {
    let store = Store::new(&cli.global);
    let rootless = cli.global.rootless.as_deref().is_some_and(|v| v == "true");
    let criu = cli.global.criu.as_deref();
    let Some(command) = cli.command else {
        anyhow::bail!("no command given; see `berth --help`");
    };
    let foreground = match &command {
        Command::Run(args) => !args.detach,
        Command::Exec(args) => !args.detach,
        _ => false,
    };
    if foreground {
        foreground::block_all()?;
    }
    if matches!(command, Command::Create(_) | Command::Run(_) | Command::Exec(_)) {
        sealed_exe::ensure()?;
    }
    match command {
        Command::Create(args) => commands::create::create(&store, &args)?,
        Command::Start(args) => commands::start::start(&store, &args.id, reporter)?,
        Command::State(args) => commands::state::state(&store, &args.id)?,
        Command::Kill(args) => commands::kill::kill(&store, &args)?,
        Command::Stop(args) => commands::stop::stop(&store, &args)?,
        Command::Delete(args) => commands::delete::delete(&store, &args, reporter)?,
        Command::Run(args) => return commands::run::run(&store, &args, reporter),
        Command::List(args) => commands::list::list(&store, &args)?,
        Command::Spec(args) => commands::spec::spec(&args, rootless)?,
        Command::Exec(args) => return commands::exec::exec(&store, &args),
        Command::Ps(args) => commands::ps::ps(&store, &args)?,
        Command::Pause(args) => commands::pause::pause(&store, &args.id)?,
        Command::Resume(args) => commands::pause::resume(&store, &args.id)?,
        Command::Update(args) => commands::update::update(&store, &args)?,
        Command::Events(args) => commands::events::events(&store, &args)?,
        Command::Features => commands::features::features(criu)?,
        Command::Checkpoint(args) => commands::checkpoint::checkpoint(&store, &args, criu)?,
        Command::Restore(args) => commands::checkpoint::restore(&store, &args, criu)?,
    }
    Ok(0)
}
