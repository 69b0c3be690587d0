//! `exec`: runs a new process in a running container, from a process JSON or from flags.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::ContainerStatus;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::SigSet;

use crate::cli::ExecArgs;
use crate::store::Store;

/// Returns the exit code berth should exit with (the process's, in the foreground).
pub fn exec(store: &Store, args: &ExecArgs) -> Result<i32> {
    let (container, _) = store.load(&args.id)?;
    match container.status() {
        ContainerStatus::Running => {}
        ContainerStatus::Paused if args.ignore_paused => {}
        ContainerStatus::Paused => bail!("cannot exec in a paused container {} (resume it, or pass --ignore-paused)", args.id),
        _ => bail!("cannot exec in a stopped container: container not running: {}", args.id),
    }
    if args.process.is_none() && args.command.is_empty() {
        bail!("exec needs a command after the container id, or --process FILE");
    }
    if args.tty && args.console_socket.is_none() {
        bail!("exec --tty needs --console-socket to receive the terminal; berth does not proxy terminals itself yet");
    }
    let (user, group) = parse_user(args.user.as_deref())?;
    let env: HashMap<String, String> = args
        .env
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => bail!("invalid --env {pair:?}: use NAME=VALUE"),
        })
        .collect::<Result<_>>()?;

    let pid = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&store.root)
        .and_then(|b| b.with_pid_file(args.pid_file.as_ref()))
        .map(|b| b.with_console_socket(args.console_socket.as_ref()).with_preserved_fds(args.preserve_fds))
        .and_then(|b| {
            b.as_tenant()
                .with_detach(args.detach)
                .with_cwd(args.cwd.as_ref())
                .with_env(env)
                .with_process(args.process.as_ref())
                .with_no_new_privs(args.no_new_privs)
                .with_container_args(args.command.clone())
                .with_additional_gids(args.additional_gids.clone())
                .with_user(user)
                .with_group(group)
                .with_capabilities(args.cap.clone())
                .with_ignore_paused(args.ignore_paused)
                .with_sub_cgroup(args.cgroup.clone())
                .with_apparmor(args.apparmor.clone())
                .with_process_label(args.process_label.clone())
                .build()
        })
        .with_context(|| format!("cannot exec in container {}", args.id))?;
    if args.detach {
        return Ok(0);
    }
    let signals = SigSet::all();
    signals.thread_block().context("cannot block signals to forward them")?;
    crate::foreground::wait_forwarding(pid, &signals)
}

/// `UID[:GID]`, numeric as runc takes it.
fn parse_user(user: Option<&str>) -> Result<(Option<u32>, Option<u32>)> {
    let Some(user) = user else { return Ok((None, None)) };
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let number = |text: &str| text.parse::<u32>().with_context(|| format!("invalid --user {user:?}: use numeric UID[:GID]"));
    Ok((Some(number(uid)?), gid.map(number).transpose()?))
}
