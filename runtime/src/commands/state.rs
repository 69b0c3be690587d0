//! `state`: prints a container's state in runc's JSON shape.

use anyhow::Result;

use crate::state::StateJson;
use crate::store::Store;

pub fn state(store: &Store, id: &str) -> Result<()> {
    let (container, record) = store.load(id)?;
    let state = StateJson::new(&container, &record, String::new());
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}
