//! loopback inside a private network namespace the test creates (`unshare -n -m`, a tmpfs
//! on /run, the "container" a namespace inside it): ADD brings lo up and reports it, CHECK
//! sees it, DEL takes it down and succeeds again, and also once the namespace is gone; a
//! common key of the wrong type is refused, unknown keys are ignored.

use std::process::Command;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the loopback test needs root (CI runs as root)");
        eprintln!("skipping: needs root");
        return false;
    }
    true
}

/// berth-cni linked as `loopback` in a directory of the test's own (`tag` tells tests apart).
fn plugin_dir(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("berth-cni-lo-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("loopback");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth-cni"), &plugin).unwrap();
    (dir, plugin)
}

#[test]
fn loopback_up_check_down_in_a_private_namespace() {
    if !is_root() {
        return;
    }
    let (dir, plugin) = plugin_dir("updown");
    let script = format!(
        r#"mount -t tmpfs tmpfs /run; mkdir /run/netns; ip netns add c1
        conf='{{"cniVersion":"1.0.0","name":"lo-net","type":"loopback"}}'
        run() {{ echo "$conf" | CNI_COMMAND=$1 CNI_CONTAINERID=c1 CNI_NETNS=$2 CNI_IFNAME=lo CNI_PATH=/nowhere {plugin}; echo " rc=$?"; }}
        ip -n c1 -o link show lo | grep -q 'state DOWN' && echo before=down
        run ADD /run/netns/c1
        ip -n c1 -o link show lo | grep -q '<LOOPBACK,UP' && echo after-add=up
        run CHECK /run/netns/c1
        run DEL /run/netns/c1
        ip -n c1 -o link show lo | grep -q 'state DOWN' && echo after-del=down
        run DEL /run/netns/c1
        ip netns del c1
        run DEL /run/netns/c1"#,
        plugin = plugin.display()
    );
    let out = Command::new("unshare").args(["-n", "-m", "sh", "-c", &script]).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"before=down"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let added: serde_json::Value = serde_json::from_str(lines[1]).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(added["interfaces"][0]["name"], "lo");
    assert_eq!(added["interfaces"][0]["sandbox"], "/run/netns/c1");
    assert_eq!(added["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(added["ips"][0]["interface"], 0);
    // ADD, CHECK, DEL, DEL again, DEL with the namespace gone: all succeed.
    assert_eq!(&lines[2..], [" rc=0", "after-add=up", " rc=0", " rc=0", "after-del=down", " rc=0", " rc=0"], "{text}");
}

#[test]
fn a_wrong_type_is_refused_and_unknown_keys_ignored() {
    if !is_root() {
        return;
    }
    let (dir, plugin) = plugin_dir("keys");
    let script = format!(
        r#"mount -t tmpfs tmpfs /run; mkdir /run/netns; ip netns add c1
        run() {{ echo "$1" | CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/run/netns/c1 CNI_IFNAME=lo CNI_PATH=/nowhere {plugin}; echo " rc=$?"; }}
        run '{{"cniVersion":"1.0.0","name":5,"type":"loopback"}}'
        ip -n c1 -o link show lo | grep -q 'state DOWN' && echo refused=down
        run '{{"cniVersion":"1.0.0","name":"lo-net","type":"loopback","someday":{{"x":[1]}},"ipam":{{}}}}'
        ip -n c1 -o link show lo | grep -q '<LOOPBACK,UP' && echo unknown=up
        ip netns del c1"#,
        plugin = plugin.display()
    );
    let out = Command::new("unshare").args(["-n", "-m", "sh", "-c", &script]).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let refused: serde_json::Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(refused["code"], 7, "{refused}");
    assert_eq!(refused["msg"], "invalid network config: \"name\": invalid type: integer `5`, expected a string");
    assert_eq!(lines[1..3], [" rc=1", "refused=down"], "{text}");
    let added: serde_json::Value = serde_json::from_str(lines[3]).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(added["interfaces"][0]["name"], "lo", "{text}");
    assert_eq!(lines[4..], [" rc=0", "unknown=up"], "{text}");
}
