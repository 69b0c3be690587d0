//! `create`: sets up a container from a bundle; its process waits for `start`.

use anyhow::Result;

use crate::cli::CreateArgs;
use crate::store::Store;

pub fn create(store: &Store, args: &CreateArgs) -> Result<()> {
    let bundle = crate::bundle::prepare(store, args)?;
    let console_socket = args.console_socket.as_ref().map(crate::bundle::absolute);
    crate::lifecycle::create(store, args, &bundle, true, console_socket).map(|_| ())
}
