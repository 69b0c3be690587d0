//! `checkpoint` and `restore` through CRIU; both first require `criu check` to pass.

use anyhow::{bail, Context, Result};
use libcontainer::container::CheckpointOptions;

use crate::cli::{CheckpointArgs, RestoreArgs};
use crate::store::Store;

pub fn checkpoint(store: &Store, args: &CheckpointArgs, criu: Option<&std::path::Path>) -> Result<()> {
    let (mut container, _) = store.load(&args.id)?;
    crate::checkpoint::criu_check(criu)?;
    let opts = &args.criu;
    std::fs::create_dir_all(&opts.image_path)
        .with_context(|| format!("cannot create image directory {}", opts.image_path.display()))?;
    let options = CheckpointOptions {
        ext_unix_sk: opts.ext_unix_sk,
        file_locks: opts.file_locks,
        image_path: opts.image_path.clone(),
        leave_running: args.leave_running,
        shell_job: opts.shell_job,
        tcp_established: opts.tcp_established,
        work_path: opts.work_path.clone(),
        manage_cgroups_mode: rust_criu::CgMode::SOFT,
        link_remap: false,
    };
    container.checkpoint(&options).with_context(|| format!("cannot checkpoint container {}", args.id))
}

pub fn restore(_store: &Store, args: &RestoreArgs, criu: Option<&std::path::Path>) -> Result<()> {
    crate::checkpoint::criu_check(criu)?;
    bail!(
        "cannot restore container {} from {}: restore is not implemented by berth yet (libcontainer 0.7 has no restore)",
        args.id,
        args.criu.image_path.display()
    );
}
