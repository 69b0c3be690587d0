//! One module per berth command: each loads what it needs, calls libcontainer, and adds
//! context to the error.

pub mod create;
pub mod delete;
pub mod kill;
pub mod list;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
