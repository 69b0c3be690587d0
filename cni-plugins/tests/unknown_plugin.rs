//! berth-cni run under a name that is none of its plugins (as a runtime runs a CNI `type`
//! it looks up by file name) answers with a CNI error on stdout and a nonzero exit.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn an_unknown_plugin_name_gets_a_cni_error_naming_the_plugins() {
    let dir = std::env::temp_dir().join(format!("berth-cni-unknown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("macvlan");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth-cni"), &link).unwrap();
    let mut child = Command::new(&link)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"0.4.0","name":"n","type":"macvlan","master":"eth0"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_ne!(out.status.code(), Some(0));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is no CNI error ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!((&error["cniVersion"], &error["code"]), (&"0.4.0".into(), &4.into()), "{error}");
    let msg = error["msg"].as_str().unwrap();
    assert!(msg.contains("\"macvlan\""), "{msg}");
    for plugin in berth_cni::PLUGINS {
        assert!(msg.contains(plugin), "{plugin} missing from {msg}");
    }
}
