//! Terminals for foreground `run` and `exec` without a console socket: berth receives the
//! pty master on a socket of its own and proxies it to its stdio, in raw mode when stdin
//! is a terminal, passing window size changes on.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

/// A console socket berth listens on itself; the pty master arrives on it during create.
pub struct ConsoleReceiver {
    dir: PathBuf,
    socket: PathBuf,
    accepted: JoinHandle<Result<OwnedFd>>,
}

impl ConsoleReceiver {
    /// Listens on a fresh socket in a private directory under `parent`.
    pub fn listen(parent: &Path, id: &str) -> Result<ConsoleReceiver> {
        let dir = parent.join(format!(".console-{id}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let socket = dir.join("console.sock");
        let listener = UnixListener::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
        let accepted = std::thread::spawn(move || receive_master(&listener));
        Ok(ConsoleReceiver { dir, socket, accepted })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The pty master, once create has sent it; removes the socket directory.
    pub fn receive(self) -> Result<OwnedFd> {
        let master = self.accepted.join().map_err(|_| anyhow::anyhow!("the console receiver thread panicked"))?;
        let _ = std::fs::remove_dir_all(&self.dir);
        master
    }

    /// Removes the socket directory when create failed before sending anything.
    pub fn abandon(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn receive_master(listener: &UnixListener) -> Result<OwnedFd> {
    let (stream, _) = listener.accept().context("no connection on the console socket")?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .context("cannot receive the pty master")?;
    for cmsg in msg.cmsgs().context("cannot read the console socket message")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS hands this process a new descriptor it now owns.
                let master = unsafe { OwnedFd::from_raw_fd(fd) };
                // At once: an exec'd process may already be running and asking for its size.
                copy_window_size(master.as_raw_fd());
                return Ok(master);
            }
        }
    }
    bail!("the console socket message carried no pty master")
}

/// Copies stdin to the pty master and the master to stdout until the process is done.
pub struct Proxy {
    master: File,
    saved: Option<Termios>,
    output: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(master: OwnedFd) -> Result<Proxy> {
        let master = File::from(master);
        let stdin = std::io::stdin();
        let saved = match termios::tcgetattr(stdin.as_fd()) {
            Ok(saved) => {
                let mut raw = saved.clone();
                termios::cfmakeraw(&mut raw);
                termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                    .context("cannot put the terminal in raw mode")?;
                Some(saved)
            }
            Err(_) => None, // stdin is not a terminal: copy bytes as they come
        };
        let proxy_in = master.try_clone().context("cannot duplicate the pty master")?;
        std::thread::spawn(move || copy(std::io::stdin().lock(), proxy_in));
        let from_master = master.try_clone().context("cannot duplicate the pty master")?;
        let output = std::thread::spawn(move || copy(from_master, std::io::stdout().lock()));
        let proxy = Proxy { master, saved, output: Some(output) };
        proxy.resize();
        Ok(proxy)
    }

    /// Gives the pty the window size of berth's own terminal, if it has one.
    pub fn resize(&self) {
        copy_window_size(self.master.as_raw_fd());
    }

    /// Waits for the output to drain (the master reads EIO once the process has exited);
    /// dropping the proxy then restores the terminal.
    pub fn finish(mut self) {
        if let Some(output) = self.output.take() {
            let _ = output.join();
        }
    }
}

impl Drop for Proxy {
    /// Restores berth's terminal on every path, failures included.
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Sets the pty behind `master` to the window size of berth's stdin, if that is a terminal.
fn copy_window_size(master: std::os::fd::RawFd) {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ and TIOCSWINSZ read and write one winsize struct.
    unsafe {
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut size) == 0 {
            libc::ioctl(master, libc::TIOCSWINSZ, &size);
        }
    }
}

fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).and_then(|_| to.flush()).is_err() {
            break;
        }
    }
}
