//! CNI errors: the spec's codes and the error JSON written on stdout.

use serde::{Deserialize, Serialize};

/// The spec's well-known error codes.
pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNSUPPORTED_FIELD: u32 = 2;
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENVIRONMENT: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODING_FAILURE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN_LATER: u32 = 11;
pub const NOT_AVAILABLE: u32 = 50;
/// What the reference plugins answer for a failure without a code of its own.
pub const INTERNAL: u32 = 999;
/// berth's own: an address range has no free address left.
pub const NO_ADDRESS_LEFT: u32 = 100;
/// berth's own: a host port another attachment publishes already.
pub const PORT_TAKEN: u32 = 101;

/// An error as plugins print it (and as a delegated plugin's is read back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(default = "internal")]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

fn internal() -> u32 {
    INTERNAL
}

/// The error JSON: the error under the config's version.
#[derive(Serialize)]
struct Printed<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(flatten)]
    error: &'a CniError,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> CniError {
        CniError::new(IO_FAILURE, format!("{what}: {e}"))
    }

    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        serde_json::to_value(Printed { cni_version, error: self }).expect("an error's JSON has string keys only")
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}

pub type CniResult<T> = Result<T, CniError>;

/// A netlink request the kernel refused or that could not be sent: an I/O failure, with
/// what was being done.
impl From<crate::netlink::NetlinkError> for CniError {
    fn from(e: crate::netlink::NetlinkError) -> CniError {
        CniError::new(IO_FAILURE, e.message)
    }
}
