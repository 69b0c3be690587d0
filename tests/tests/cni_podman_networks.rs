//! podman (Debian's 4.3, CNI backend) on the networks it generates itself, served by
//! berth's plugins alone: `cni_plugin_dirs` is an installed berth lib/cni (bridge,
//! host-local, loopback, portmap, firewall, tuning, all links to berth-cni). On its default
//! `podman` network and on a `podman network create` network, a container publishing
//! `-p HOST:80` answers a test host (a namespace of its own), and a second container reaches
//! the first; `podman rm` frees every address, rule and veth. All inside a private network
//! and mount namespace the test creates (`unshare -n -m`), with private storage.

use std::path::Path;
use std::process::Command;

use berth_tests::fixtures::debian_rootfs_tar;
use berth_tests::private_namespaces;
use berth_tests::privilege::{have_program, missing, require_root};

const INSIDE: &str = "BERTH_CNI_PODMAN_NETWORKS_INSIDE";
const TEST: &str = "podman_default_and_created_networks_on_berths_plugins_alone";

/// The plugins `make install` links under lib/cni.
const PLUGINS: [&str; 6] = ["bridge", "host-local", "loopback", "portmap", "firewall", "tuning"];

#[test]
fn podman_default_and_created_networks_on_berths_plugins_alone() {
    if std::env::var_os(INSIDE).is_none() {
        if !require_root(TEST) {
            return;
        }
        if !have_program("podman") {
            missing(TEST, "podman (make deps installs it)");
            return;
        }
        debian_rootfs_tar(); // built outside: debootstrap needs the network
    }
    // Short: podman refuses a runroot over 50 characters.
    private_namespaces::run(TEST, INSIDE, "bcpn", Some("berth-cni-podman-networks"), run_inside);
}

/// The part that runs in the private namespaces; `dir` is the test's private directory.
fn run_inside(dir: &Path) {
    // berth installed as `make install PREFIX=dir/prefix` lays it out.
    let prefix = dir.join("prefix");
    let lib_cni = prefix.join("lib/cni");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::create_dir_all(&lib_cni).unwrap();
    std::os::unix::fs::symlink(berth_tests::bins::bin("berth-cni"), prefix.join("bin/berth-cni")).unwrap();
    for plugin in PLUGINS {
        std::os::unix::fs::symlink("../../bin/berth-cni", lib_cni.join(plugin)).unwrap();
    }
    let cgroup_parent = std::env::var("BERTH_CGROUP_PARENT").unwrap();
    let script = format!(
        r#"set -e
        D={d}; mkdir -p $D/net.d $D/www; echo hello-from-berth > $D/www/index.html
        # Private /run (netns, tuning's dataDir, the firewall's records) and /var/lib
        # (host-local's default store, libcni's result cache): nothing of the machine's is touched.
        mount -t tmpfs tmpfs /run; mkdir /run/netns; ip link set lo up
        mount -t tmpfs tmpfs /var/lib
        # The test host: a namespace reaching this one over a veth, as another machine would.
        ip netns add testhost
        ip link add th0 type veth peer name eth0 netns testhost
        ip addr add 192.168.200.1/24 dev th0; ip link set th0 up
        ip -n testhost addr add 192.168.200.2/24 dev eth0; ip -n testhost link set eth0 up; ip -n testhost link set lo up
        ip -n testhost route add default via 192.168.200.1
        printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nevents_logfile_path = "%s/events.log"\n[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["%s"]\nnetwork_config_dir = "%s/net.d"\n' $D {lib_cni} $D > $D/containers.conf
        export CONTAINERS_CONF=$D/containers.conf
        P="podman --root $D/root --runroot $D/runroot --tmpdir $D/tmp --storage-driver overlay"
        cleanup() {{ $P rm -a -f -t 0 >/dev/null 2>&1; $P network rm -f berthnet >/dev/null 2>&1; $P rmi -a -f >/dev/null 2>&1; grep " $D" /proc/self/mountinfo | cut -d' ' -f5 | sort -r | xargs -r -n1 umount -l; }}
        trap cleanup EXIT
        $P import {tar} localhost/berth-cni-debian >/dev/null
        $P network create berthnet >/dev/null
        echo "created-plugins=$(grep -o '"type": *"[a-z-]*"' $D/net.d/berthnet.conflist | sed 's/.*"\([a-z-]*\)"$/\1/' | tr '\n' ' ')"
        RUN="$P run --cgroup-parent /{cgroup_parent} -v /bin/busybox:/bin/busybox:ro"
        for net in podman:8080 berthnet:8081; do
          N=${{net%%:*}}; PORT=${{net#*:}}
          $RUN -d --network $N --name server-$N -p $PORT:80 -v $D/www:/www:ro localhost/berth-cni-debian /bin/busybox httpd -f -p 80 -h /www >/dev/null
          IP=$($P inspect server-$N --format "{{{{(index .NetworkSettings.Networks \"$N\").IPAddress}}}}")
          echo "$N-server=${{IP%.*}}.x"
          echo "$N-published=$(ip netns exec testhost timeout 5 busybox wget -qO- http://192.168.200.1:$PORT/index.html)"
          echo "$N-neighbour=$($RUN --rm --network $N localhost/berth-cni-debian timeout 5 /bin/busybox wget -qO- http://$IP:80/index.html)"
          echo "$N-firewall-rules=$(iptables-save -t filter | grep -c " $IP/32 " || true)"
        done
        $P rm -f -t 0 server-podman server-berthnet >/dev/null
        echo "addresses-left=$(ls /var/lib/cni/networks/* | grep -c '^10\.' || true)"
        echo "iptables-left=$(iptables-save | grep -E -c '10\.(88|89)\.|CNI-DN-|CNI-[0-9a-f]{{24}}' || true)"
        echo "nft-left=$(nft list ruleset | grep -E -c '10\.(88|89)\.|dport 808' || true)"
        echo "veths-left=$(ip -o link show type veth | grep -v -c '^[0-9]*: th0@' || true)""#,
        d = dir.display(),
        lib_cni = lib_cni.display(),
        tar = debian_rootfs_tar().display(),
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "created-plugins=bridge host-local portmap firewall tuning ",
            "podman-server=10.88.0.x",
            "podman-published=hello-from-berth",
            "podman-neighbour=hello-from-berth",
            "podman-firewall-rules=2",
            "berthnet-server=10.89.0.x",
            "berthnet-published=hello-from-berth",
            "berthnet-neighbour=hello-from-berth",
            "berthnet-firewall-rules=2",
            "addresses-left=0",
            "iptables-left=0",
            "nft-left=0",
            "veths-left=0"
        ],
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
