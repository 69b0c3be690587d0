//! `berth-image volume create|ls|inspect|rm|prune`: the CLI's definitions and one function
//! each over `volumes`, printing what Docker's `volume` commands print.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};

use crate::store::Store;
use crate::volumes;

#[derive(clap::Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a named volume (a random name when none is given); prints its name.
    Create {
        name: Option<String>,
        /// A label KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List volumes (DRIVER and VOLUME NAME, or JSON with --json).
    Ls {
        /// Print a JSON array of the volumes, as `inspect` shows each.
        #[arg(long)]
        json: bool,
    },
    /// Print volumes as a JSON array: Name, Driver, Mountpoint, CreatedAt, Labels, Scope.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes; refused for a volume a bundle still mounts.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the anonymous volumes no bundle mounts (named ones too with --all).
    Prune {
        #[arg(short, long)]
        all: bool,
    },
}

pub fn run(store: &Store, command: &VolumeCommand, out: &mut impl Write) -> Result<()> {
    match command {
        VolumeCommand::Create { name, labels } => {
            let labels = labels
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                    (k.to_string(), v.to_string())
                })
                .collect::<BTreeMap<_, _>>();
            let locked = store.lock()?;
            // As Docker: creating a volume that exists is not an error.
            let name = match volumes::create(&locked, name.as_deref(), labels, false)? {
                Some(volume) => volume.name,
                None => name.clone().unwrap_or_default(),
            };
            writeln!(out, "{name}")?;
        }
        VolumeCommand::Ls { json } => {
            let all = volumes::list(store)?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
            } else {
                writeln!(out, "DRIVER\tVOLUME NAME")?;
                for volume in all {
                    writeln!(out, "{}\t{}", volume.driver, volume.name)?;
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let found = names.iter().map(|n| volumes::get(store, n)).collect::<Result<Vec<_>>>()?;
            writeln!(out, "{}", serde_json::to_string_pretty(&found)?)?;
        }
        VolumeCommand::Rm { names } => {
            let locked = store.lock()?;
            for name in names {
                volumes::remove(&locked, name).with_context(|| format!("cannot remove volume {name}"))?;
                writeln!(out, "{name}")?;
            }
        }
        VolumeCommand::Prune { all } => {
            let locked = store.lock()?;
            for name in volumes::prune(&locked, *all)? {
                writeln!(out, "removed {name}")?;
            }
        }
    }
    Ok(())
}
