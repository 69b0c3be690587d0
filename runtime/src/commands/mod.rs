//! One module per berth command: each loads what it needs, calls libcontainer, and adds
//! context to the error. What several commands share lives in the library below them
//! (`bundle`, `lifecycle`, `store`, ...), never in another command's module.

pub mod checkpoint;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod stop;
pub mod update;
