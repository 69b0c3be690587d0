//! `ps`: the processes of a container, as ps(1) rows or a JSON array of pids.

use std::process::Command;

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;

use crate::cli::{ListFormat, PsArgs};
use crate::store::Store;

pub fn ps(store: &Store, args: &PsArgs) -> Result<()> {
    let (container, _) = store.load(&args.id)?;
    let pids: Vec<i32> = crate::cgroups::manager(&container)?
        .get_all_pids()
        .with_context(|| format!("cannot list the processes of container {}", args.id))?
        .iter()
        .map(|pid| pid.as_raw())
        .collect();
    if args.format == ListFormat::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let ps_args: Vec<String> = if args.ps_args.is_empty() { vec!["-ef".into()] } else { args.ps_args.clone() };
    let output = Command::new("ps").args(&ps_args).output().context("cannot run ps")?;
    if !output.status.success() {
        bail!("ps {} failed: {}", ps_args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_column = header
        .split_whitespace()
        .position(|name| name == "PID")
        .with_context(|| format!("ps {} printed no PID column", ps_args.join(" ")))?;
    println!("{header}");
    for line in lines {
        let pid = line.split_whitespace().nth(pid_column).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|pid| pids.contains(&pid)) {
            println!("{line}");
        }
    }
    Ok(())
}
