//! `list`: the containers under the root, as a table, JSON or bare ids.

use std::io::Write;

use anyhow::Result;

use crate::cli::{ListArgs, ListFormat};
use crate::state::StateJson;
use crate::store::Store;

pub fn list(store: &Store, args: &ListArgs) -> Result<()> {
    let ids = store.ids()?;
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for id in ids {
            writeln!(out, "{id}")?;
        }
        return Ok(());
    }
    // A container removed while listing is skipped, as runc does.
    let states: Vec<StateJson> = ids
        .iter()
        .filter_map(|id| store.load(id).ok())
        .map(|(container, record)| {
            let owner = owner_name(container.creator().is_some().then_some(container.state.creator).flatten());
            StateJson::new(&container, &record, owner)
        })
        .collect();
    match args.format {
        ListFormat::Json => writeln!(out, "{}", serde_json::to_string(&states)?)?,
        ListFormat::Table => {
            let rows: Vec<[String; 6]> = states
                .iter()
                .map(|s| {
                    [
                        s.id.clone(),
                        s.pid.to_string(),
                        s.status.to_string(),
                        s.bundle.display().to_string(),
                        s.created.clone(),
                        s.owner.clone(),
                    ]
                })
                .collect();
            write_table(&mut out, ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"], &rows)?;
        }
    }
    Ok(())
}

/// The user name of a uid from /etc/passwd, else the number.
fn owner_name(uid: Option<u32>) -> String {
    let Some(uid) = uid else { return String::new() };
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("#{uid}"))
}

/// Columns padded to their widest cell and separated by spaces, like runc's tabwriter.
fn write_table(out: &mut impl Write, header: [&str; 6], rows: &[[String; 6]]) -> Result<()> {
    let mut widths = header.map(|h| h.len());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| -> String {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("   ").trim_end().to_string()
    };
    writeln!(out, "{}", line(header))?;
    for row in rows {
        writeln!(out, "{}", line(row.each_ref().map(|s| s.as_str())))?;
    }
    Ok(())
}
