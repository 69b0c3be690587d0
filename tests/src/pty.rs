//! Runs a command with its stdio on a new pseudo-terminal, as a user at a terminal would.

use std::io::Read;
use std::process::{Command, Stdio};

/// Runs `command` on a pty of `rows` x `cols`; returns what it printed there and its exit code.
pub fn run_on_a_pty(mut command: Command, rows: u16, cols: u16) -> (String, Option<i32>) {
    let size = nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = command
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // The command holds copies of the slave until dropped; the master reads EIO only after.
    drop(command);
    let mut master = std::fs::File::from(pty.master);
    let mut output = Vec::new();
    // EIO once the command, the last holder of the slave, has exited.
    let _ = master.read_to_end(&mut output);
    (String::from_utf8_lossy(&output).into_owned(), child.wait().unwrap().code())
}
