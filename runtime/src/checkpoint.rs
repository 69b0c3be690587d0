//! CRIU for checkpoint and restore: whether `criu check` passes on this host, and why not.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

/// Runs `criu check`; on failure returns criu's own reason as the error.
pub fn criu_check(criu: Option<&Path>) -> Result<()> {
    let criu = criu.unwrap_or(Path::new("criu"));
    let output = match Command::new(criu).arg("check").output() {
        Ok(output) => output,
        Err(e) => {
            bail!("checkpoint and restore need CRIU, and {} cannot run: {e} (install Debian's criu)", criu.display())
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    let reason = said.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    bail!("checkpoint and restore need CRIU, and `criu check` fails on this host: {reason}");
}
