//! Running a CNI plugin binary: the `CNI_*` environment from `Args`, the config on stdin,
//! its exit code and printed JSON back. Used to delegate to IPAM plugins (and by tests and
//! the bench to drive plugins as a runtime does).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::skel::Args;

/// Runs `plugin` for `args.command`; returns its exit code and stdout as JSON (Null when it
/// printed nothing, or the text as a string when it is not JSON).
pub fn run_plugin(plugin: &Path, args: &Args, conf: &Value) -> std::io::Result<(i32, Value)> {
    let cni_args: Vec<String> = args.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", &args.command)
        .env("CNI_CONTAINERID", &args.container_id)
        .env("CNI_NETNS", &args.netns)
        .env("CNI_IFNAME", &args.ifname)
        .env("CNI_ARGS", cni_args.join(";"))
        .env("CNI_PATH", args.path.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    child.stdin.take().expect("stdin is piped").write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()))
    };
    Ok((out.status.code().unwrap_or(-1), value))
}
