//! The state directory (`--root`): one directory per container id, how containers are
//! found in it, and the guard against a reused init pid looking alive.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libcontainer::container::state::StateError;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use serde::{Deserialize, Serialize};

use crate::cli::GlobalOpts;

/// Default state root when running as root, as `/run/runc` is for runc.
pub const DEFAULT_ROOT: &str = "/run/berth";

/// berth's own record beside libcontainer's state.json.
const RECORD_FILE: &str = "berth.json";

/// What berth keeps beside libcontainer's state: the init process's start time (clock ticks
/// after boot) so a reused pid is not taken for the container, and the absolute rootfs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub init_start: Option<u64>,
    pub rootfs: PathBuf,
}

/// The state root and how containers under it are managed.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

impl Store {
    /// The root from `--root`, else `/run/berth` for root and `$XDG_RUNTIME_DIR/berth` for
    /// other users (as runc picks `/run/runc` or `$XDG_RUNTIME_DIR/runc`).
    pub fn new(global: &GlobalOpts) -> Store {
        let root = match &global.root {
            Some(root) => root.clone(),
            None if !nix::unistd::geteuid().is_root() => std::env::var_os("XDG_RUNTIME_DIR")
                .map(|dir| PathBuf::from(dir).join("berth"))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
            None => PathBuf::from(DEFAULT_ROOT),
        };
        Store { root, systemd_cgroup: global.systemd_cgroup }
    }

    /// Creates the root directory (mode 0700) if needed, for commands that add containers.
    pub fn ensure_root(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .with_context(|| format!("cannot create state root {}", self.root.display()))
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn exists(&self, id: &str) -> bool {
        self.container_dir(id).join("state.json").exists()
    }

    /// Loads a container with berth's record, its status refreshed and checked against pid reuse.
    pub fn load(&self, id: &str) -> Result<(Container, Record)> {
        check_id(id)?;
        let dir = self.container_dir(id);
        if !dir.join("state.json").exists() {
            bail!("container does not exist: no container {id:?} under {}", self.root.display());
        }
        let mut container = load_whole_state(&dir)
            .with_context(|| format!("cannot read the state of container {id:?} in {}", dir.display()))?;
        let record: Option<Record> =
            fs::read(dir.join(RECORD_FILE)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if container.status() != ContainerStatus::Stopped && !init_is_ours(&container, record.as_ref()) {
            container.set_status(ContainerStatus::Stopped);
        }
        let record = record.unwrap_or_else(|| Record { init_start: None, rootfs: container.bundle().join("rootfs") });
        Ok((container, record))
    }

    /// Writes berth's record right after create: the init's start time and the rootfs.
    pub fn write_record(&self, container: &Container, rootfs: PathBuf) -> Result<()> {
        let init_start = match container.pid() {
            Some(pid) => Some(process_start_time(pid.as_raw()).with_context(|| {
                format!("container {:?}: init process {pid} vanished during create", container.id())
            })?),
            None => None,
        };
        let path = self.container_dir(container.id()).join(RECORD_FILE);
        let record = Record { init_start, rootfs };
        fs::write(&path, serde_json::to_vec(&record)?).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Ids of every container under the root, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list state root {}", self.root.display())),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().join("state.json").exists())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// Loads libcontainer's state. libcontainer rewrites state.json in place (overwrite, then
/// cut to length: patches/libcontainer-0.7.0.patch), so a reader racing a writer (`stop` or
/// `state` while `run` marks the container running) can see it cut short, or whole with the
/// old text's tail after it: a read that does not parse is retried for up to 200 ms.
fn load_whole_state(dir: &std::path::Path) -> Result<Container, LibcontainerError> {
    let mut attempts = 0;
    loop {
        match Container::load(dir.to_path_buf()) {
            Err(LibcontainerError::State(StateError::ParseStateFile { .. })) if attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

/// Refuses ids that cannot be a directory name under the root (runc's rule).
pub fn check_id(id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if !valid {
        bail!("invalid container id {id:?}: use letters, digits, '_', '+', '-' and '.'");
    }
    Ok(())
}

/// True unless the recorded start time shows the pid now belongs to another process.
fn init_is_ours(container: &Container, record: Option<&Record>) -> bool {
    let Some(pid) = container.pid() else { return false };
    // Mid-create there is no record yet: trust libcontainer's liveness check.
    let Some(recorded) = record.and_then(|r| r.init_start) else { return true };
    process_start_time(pid.as_raw()) == Some(recorded)
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks after boot.
pub fn process_start_time(pid: i32) -> Option<u64> {
    with_stat_fields(pid, |mut fields| fields.nth(19)?.parse().ok())
}

/// `read` over the fields of /proc/PID/stat after the command name, from the state on.
fn with_stat_fields<T>(pid: i32, read: impl FnOnce(std::str::SplitWhitespace) -> Option<T>) -> Option<T> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    read(stat.get(stat.rfind(')')? + 2..)?.split_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_state_replaces_a_longer_one_whole() {
        // libcontainer's save overwrites state.json in place (patches/libcontainer-0.7.0.patch):
        // what it wrote last must be all that the file holds.
        use libcontainer::container::State;
        let dir = std::env::temp_dir().join(format!("berth-state-save-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut state =
            State::new("shrinks", ContainerStatus::Creating, Some(42), PathBuf::from("/a/long/bundle/path"));
        state.annotations = Some([("org.example.long".to_string(), "x".repeat(4096))].into());
        state.save(&dir).unwrap();
        state.status = ContainerStatus::Created;
        state.annotations = None;
        state.save(&dir).unwrap();
        let saved = fs::read_to_string(dir.join("state.json"));
        let loaded = State::load(&dir);
        fs::remove_dir_all(&dir).unwrap();
        let saved = saved.unwrap();
        assert!(saved.len() < 4096 && !saved.contains("org.example.long"), "stale bytes left: {saved}");
        let loaded = loaded.unwrap();
        assert_eq!((loaded.status, loaded.pid, loaded.annotations), (ContainerStatus::Created, Some(42), None));
    }

    #[test]
    fn ids_follow_runcs_rule() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(check_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn own_start_time_is_read_and_stable() {
        let me = std::process::id() as i32;
        let first = process_start_time(me).expect("start time of this process");
        assert_eq!(Some(first), process_start_time(me));
        assert_eq!(process_start_time(i32::MAX), None);
    }
}
