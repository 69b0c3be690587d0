//! loopback inside a private network namespace the test creates (`unshare -n -m`, a tmpfs
//! on /run, the "container" a namespace inside it): ADD brings lo up and reports it, CHECK
//! sees it, DEL takes it down and succeeds again, and also once the namespace is gone.

use std::process::Command;

#[test]
fn loopback_up_check_down_in_a_private_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the loopback test needs root (CI runs as root)");
        eprintln!("skipping: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("berth-cni-lo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("loopback");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth-cni"), &plugin).unwrap();
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
