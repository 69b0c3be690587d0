//! The link's original settings, saved at ADD for DEL to put back, in the reference's file
//! (`DATADIR/CONTAINERID_IFNAME.json`, its keys `mac`, `promisc`, `mtu`, `allmulti`, and
//! `txQLen` of later versions), so either plugin restores what the other changed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CniError, CniResult};
use crate::netlink::route::{Link, LinkSettings};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "is_zero")]
    mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allmulti: Option<bool>,
    #[serde(rename = "txQLen", default, skip_serializing_if = "Option::is_none")]
    txqlen: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub fn file(data_dir: &str, container_id: &str, ifname: &str) -> PathBuf {
    Path::new(data_dir).join(format!("{container_id}_{ifname}.json"))
}

/// Saves the values `link` has now for the settings `changing` will change.
pub fn save(path: &Path, link: &Link, changing: &LinkSettings) -> CniResult<()> {
    let saved = Saved {
        mac: if changing.mac.is_some() { link.mac.clone() } else { String::new() },
        promisc: changing.promiscuous.map(|_| link.promiscuous),
        mtu: if changing.mtu.is_some() { link.mtu } else { 0 },
        allmulti: changing.allmulti.map(|_| link.allmulti),
        txqlen: changing.txqlen.map(|_| link.txqlen),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CniError::io(format!("cannot create tuning's dataDir {}", dir.display()), e))?;
    }
    let text = serde_json::to_string_pretty(&saved).expect("the saved settings are plain JSON");
    std::fs::write(path, text)
        .map_err(|e| CniError::io(format!("cannot save the link's settings in {}", path.display()), e))
}

/// The settings saved at `path`, to put back; None when nothing was saved (or the file is
/// unreadable, which the reference treats the same).
pub fn load(path: &Path) -> Option<LinkSettings> {
    let saved: Saved = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    Some(LinkSettings {
        mac: (!saved.mac.is_empty()).then(|| super::config::parse_mac(&saved.mac).ok()).flatten(),
        mtu: (saved.mtu != 0).then_some(saved.mtu),
        txqlen: saved.txqlen,
        promiscuous: saved.promisc,
        allmulti: saved.allmulti,
    })
}
