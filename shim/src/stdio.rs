//! A process's stdio as containerd names it: fifos (plain paths), `binary://` loggers and
//! `file://` files; terminals through a console socket whose pty the shim copies; stdin
//! forwarded from containerd's fifo by the serving loop.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use crate::runtime::CallIo;

/// What the shim holds for a running process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    /// containerd's stdin fifo and where it goes; dropping it gives the process EOF.
    pub stdin: Option<StdinForward>,
    /// The pty master of a terminal process.
    pub console: Option<File>,
    /// A `binary://` logger the process writes to.
    logger: Option<Child>,
    copies: Vec<JoinHandle<()>>,
}

/// containerd's names for one process's stdio.
#[derive(Debug, Clone, Default)]
pub struct StdioSpec {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl ProcessIo {
    /// Closes stdin as containerd's CloseIO asks: the process reads EOF.
    pub fn close_stdin(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.drain();
        }
    }

    /// Waits for the copies from a terminal to drain, then lets a logger finish.
    pub fn finish(&mut self) {
        self.stdin = None;
        for copy in self.copies.drain(..) {
            let _ = copy.join();
        }
        if let Some(mut logger) = self.logger.take() {
            // The logger is the shim's child; the shim's reaper collects it.
            let _ = logger.stdin.take();
        }
    }

    /// Resizes the pty of a terminal process.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        let Some(console) = &self.console else { return Err("the process has no terminal".into()) };
        let size = libc::winsize { ws_row: height as u16, ws_col: width as u16, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize struct.
        if unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(format!("cannot resize the terminal: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Opens what a non-terminal process writes to and reads from; returns the stdio to hand
/// to berth (the process inherits it) and what the shim keeps.
pub fn open(spec: &StdioSpec, id: &str, namespace: &str) -> Result<(CallIo, ProcessIo), String> {
    let mut kept = ProcessIo::default();
    let stdin = if spec.stdin.is_empty() {
        Stdio::null()
    } else {
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
        kept.stdin = Some(StdinForward::open(&spec.stdin, File::from(writer), true)?);
        Stdio::from(File::from(reader))
    };
    if spec.stdout.starts_with("binary://") {
        let (stdout, stderr, logger) = start_logger(&spec.stdout, id, namespace)?;
        kept.logger = Some(logger);
        return Ok((CallIo { stdin, stdout: Stdio::from(stdout), stderr: Stdio::from(stderr) }, kept));
    }
    let stdout = open_output(&spec.stdout)?;
    let stderr = if spec.stderr == spec.stdout {
        stdout.as_ref().map(|f| f.try_clone()).transpose().map_err(|e| e.to_string())?
    } else {
        open_output(&spec.stderr)?
    };
    let to_stdio = |f: Option<File>| f.map(Stdio::from).unwrap_or_else(Stdio::null);
    Ok((CallIo { stdin, stdout: to_stdio(stdout), stderr: to_stdio(stderr) }, kept))
}

/// containerd's stdin fifo forwarded into a process's stdin pipe or pty master. The fifo is
/// read without blocking, only when the serving loop sees data (or its writer leave); a
/// pipe is written without blocking too, so a process that does not read cannot stall the
/// shim: what it has not taken waits in `pending`.
pub struct StdinForward {
    fifo: File,
    to: File,
    pending: Vec<u8>,
}

impl StdinForward {
    /// Opens the fifo (no writer needed yet). `nonblocking_to` for a pipe of the shim's own;
    /// a pty master is shared with the terminal copy and stays blocking.
    pub fn open(fifo: &str, to: File, nonblocking_to: bool) -> Result<StdinForward, String> {
        let fifo = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .map_err(|e| format!("cannot open stdin fifo {fifo}: {e}"))?;
        if nonblocking_to {
            set_nonblocking(to.as_raw_fd(), true)?;
        }
        Ok(StdinForward { fifo, to, pending: Vec::new() })
    }

    /// The descriptor the loop waits on and for what: the fifo's data, or room in the pipe.
    pub fn interest(&self) -> (RawFd, libc::c_short) {
        if self.pending.is_empty() {
            (self.fifo.as_raw_fd(), libc::POLLIN)
        } else {
            (self.to.as_raw_fd(), libc::POLLOUT)
        }
    }

    /// Moves what is ready; false once stdin is finished (the fifo's writers left, or the
    /// process closed its end).
    pub fn pump(&mut self) -> bool {
        if self.pending.is_empty() {
            let mut buf = [0u8; 32 * 1024];
            match self.fifo.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => return matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted),
            }
        }
        match self.to.write(&self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
                true
            }
            Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted),
        }
    }

    /// Delivers what containerd already wrote to the fifo (CloseIO comes after the last
    /// write), waiting for the process to take it.
    fn drain(&mut self) {
        let _ = set_nonblocking(self.to.as_raw_fd(), false);
        let mut buf = [0u8; 32 * 1024];
        loop {
            if self.to.write_all(&self.pending).is_err() {
                return;
            }
            self.pending.clear();
            match self.fifo.read(&mut buf) {
                Ok(n @ 1..) => self.pending.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
    }
}

fn set_nonblocking(fd: RawFd, on: bool) -> Result<(), String> {
    // SAFETY: fcntl on a descriptor this process holds.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(format!("cannot configure the stdin pipe: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A fifo path (containerd holds its read end) or a `file://` path, opened for writing.
fn open_output(target: &str) -> Result<Option<File>, String> {
    if target.is_empty() {
        return Ok(None);
    }
    if let Some(path) = target.strip_prefix("file://") {
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open log file {path}: {e}"))?;
        return Ok(Some(file));
    }
    let path = target.strip_prefix("fifo://").unwrap_or(target);
    OpenOptions::new().write(true).open(path).map(Some).map_err(|e| format!("cannot open fifo {path}: {e}"))
}

/// Starts a `binary://path?key=value` logger with containerd's protocol: the process's
/// stdout and stderr on fds 3 and 4, a readiness pipe on fd 5 that it closes when ready.
fn start_logger(uri: &str, id: &str, namespace: &str) -> Result<(File, File, Child), String> {
    let rest = uri.strip_prefix("binary://").unwrap_or(uri);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let mut command = Command::new(path);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        command.arg(format!("--{}", decode(key))).arg(decode(value));
    }
    command
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::server::unblock_signals_in_child(&mut command);
    let fds = [out_read.as_raw_fd(), err_read.as_raw_fd(), ready_write.as_raw_fd()];
    // SAFETY: only dup2 between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            for (target, fd) in (3..).zip(fds) {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| format!("cannot start logger {path}: {e}"))?;
    drop((out_read, err_read, ready_write));
    let mut ready = File::from(ready_read);
    let mut byte = [0u8; 1];
    let _ = ready.read(&mut byte); // EOF once the logger has closed fd 5
    Ok((File::from(out_write), File::from(err_write), child))
}

/// Percent-decoding for logger query strings.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A console socket the shim listens on; berth sends the pty master over it. It lives in a
/// private directory under the temporary directory (bundle paths can exceed a socket
/// path's 108 bytes).
pub struct ConsoleSocket {
    pub path: PathBuf,
    dir: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn listen() -> Result<ConsoleSocket, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-pty-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        Ok(ConsoleSocket { path, dir, listener })
    }

    /// Accepts berth's connection and takes the pty master (call after create or exec).
    pub fn receive(self) -> Result<File, String> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        self.listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stream = self.listener.accept().map_err(|e| format!("berth sent no terminal: {e}"))?.0;
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| e.to_string())?;
        for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    // SAFETY: SCM_RIGHTS gave this process a new descriptor.
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        Err("the console socket message carried no pty master".into())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects a terminal's pty master to containerd's fifos: stdin into the master and
/// the master out to stdout.
pub fn attach_console(io: &mut ProcessIo, master: File, spec: &StdioSpec) -> Result<(), String> {
    if !spec.stdin.is_empty() {
        io.stdin = Some(StdinForward::open(&spec.stdin, master.try_clone().map_err(|e| e.to_string())?, false)?);
    }
    if let Some(stdout) = open_output(&spec.stdout)? {
        let from_master = master.try_clone().map_err(|e| e.to_string())?;
        io.copies.push(std::thread::spawn(move || copy(from_master, stdout)));
    }
    io.console = Some(master);
    Ok(())
}

fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 32 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}
