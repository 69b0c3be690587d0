//! podman (Debian's) with its CNI backend pointed at berth-cni's plugins and a network
//! config the test writes runs two containers on one network that reach each other, all
//! inside a private network namespace the test creates (`unshare -n -m`), with private
//! storage; removing the containers frees their addresses and masquerade rules (counted in
//! both backends, nftables and iptables).

use std::path::Path;
use std::process::Command;

use berth_tests::fixtures::debian_rootfs_tar;
use berth_tests::private_namespaces;
use berth_tests::privilege::{have_program, missing, require_root};

const INSIDE: &str = "BERTH_CNI_PODMAN_INSIDE";
const TEST: &str = "podman_containers_reach_each_other_through_berths_bridge";

#[test]
fn podman_containers_reach_each_other_through_berths_bridge() {
    if std::env::var_os(INSIDE).is_none() {
        if !require_root(TEST) {
            return;
        }
        if !have_program("podman") || !Path::new("/usr/lib/cni/portmap").exists() {
            missing(TEST, "podman and containernetworking-plugins (make deps installs them)");
            return;
        }
        debian_rootfs_tar(); // built outside: debootstrap needs the network
    }
    // Short: podman refuses a runroot over 50 characters.
    private_namespaces::run(TEST, INSIDE, "bcpod", Some("berth-cni-podman"), run_inside);
}

/// The part that runs in the private namespaces; `dir` is the test's private directory.
fn run_inside(dir: &Path) {
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for kind in ["bridge", "host-local", "loopback"] {
        std::os::unix::fs::symlink(berth_tests::bins::bin("berth-cni"), bin.join(kind)).unwrap();
    }
    for kind in ["portmap", "firewall", "tuning"] {
        std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(kind), bin.join(kind)).unwrap();
    }
    let cgroup_parent = std::env::var("BERTH_CGROUP_PARENT").unwrap();
    let script = format!(
        r#"set -e
        D={d}; mkdir -p $D/net.d $D/www; echo hello-from-berth > $D/www/index.html
        mount -t tmpfs tmpfs /run; mkdir /run/netns; ip link set lo up
        # podman's CNI library caches results in a fixed /var/lib/cni: private too.
        mount -t tmpfs tmpfs /var/lib
        printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nevents_logfile_path = "%s/events.log"\n[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["%s"]\nnetwork_config_dir = "%s/net.d"\n' $D {bin} $D > $D/containers.conf
        printf '{{"cniVersion":"1.0.0","name":"berthnet","plugins":[{{"type":"bridge","bridge":"br-berth","isGateway":true,"ipMasq":true,"ipam":{{"type":"host-local","dataDir":"%s/ipam","ranges":[[{{"subnet":"10.77.0.0/24"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}}]}}' $D > $D/net.d/berthnet.conflist
        export CONTAINERS_CONF=$D/containers.conf
        P="podman --root $D/root --runroot $D/runroot --tmpdir $D/tmp --storage-driver overlay"
        cleanup() {{ $P rm -a -f -t 0 >/dev/null 2>&1; $P rmi -a -f >/dev/null 2>&1; grep " $D" /proc/self/mountinfo | cut -d' ' -f5 | sort -r | xargs -r -n1 umount -l; }}
        trap cleanup EXIT
        # Masquerade rules in each backend: berth's default nftables table, and iptables.
        nft_rules() {{ nft list table inet cni_plugins_masquerade 2>/dev/null | grep -c ' masquerade comment ' || true; }}
        iptables_rules() {{ iptables-save -t nat | grep -c 'CNI-' || true; }}
        $P import {tar} localhost/berth-cni-debian >/dev/null
        RUN="$P run --network berthnet --cgroup-parent /{cgroup_parent} -v /bin/busybox:/bin/busybox:ro"
        $RUN -d --name server -v $D/www:/www:ro localhost/berth-cni-debian /bin/busybox httpd -f -p 8080 -h /www >/dev/null
        IP=$($P inspect server --format '{{{{.NetworkSettings.Networks.berthnet.IPAddress}}}}')
        echo "server=$IP"
        echo "masquerade-rules-running=nftables:$(nft_rules) iptables:$(iptables_rules)"
        echo "client=$($RUN --rm localhost/berth-cni-debian timeout 5 /bin/busybox wget -qO- http://$IP:8080/index.html)"
        $P rm -f -t 0 server >/dev/null
        echo "addresses-left=$(ls $D/ipam/berthnet | grep -c '^10\.' || true)"
        echo "masquerade-rules-left=nftables:$(nft_rules) iptables:$(iptables_rules)"
        echo "veths-left=$(ip -o link | grep -c veth || true)""#,
        d = dir.display(),
        bin = bin.display(),
        tar = debian_rootfs_tar().display(),
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("server=10.77.0."), "{text}");
    // The running server's rule is counted where the default backend puts it, so the
    // zeros after removal are a count that can fail.
    assert_eq!(
        &lines[1..],
        [
            "masquerade-rules-running=nftables:1 iptables:0",
            "client=hello-from-berth",
            "addresses-left=0",
            "masquerade-rules-left=nftables:0 iptables:0",
            "veths-left=0"
        ],
        "{text}"
    );
}
