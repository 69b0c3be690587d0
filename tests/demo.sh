#!/bin/sh
# make demo: runs a busybox container with berth that shows its own hostname, that it is
# pid 1, and its memory limit; everything it makes is removed on exit.
set -eu

bin_dir=${BERTH_BIN_DIR:-target/release}
berth="$bin_dir/berth"
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
root="$work/state"
id="berth-demo-$$"
cleanup() {
	"$berth" --root "$root" delete --force "$id" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== a busybox bundle from Debian's busybox-static"
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/proc" "$work/bundle/rootfs/sys" "$work/bundle/rootfs/dev"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for applet in sh hostname cat echo; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done

echo "== berth spec, then a hostname, a 64 MiB memory limit and the cgroup filesystem"
"$berth" spec --bundle "$work/bundle"
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
	limit_file=/sys/fs/cgroup/memory.max
else
	limit_file=/sys/fs/cgroup/memory/memory.limit_in_bytes
fi
jq --arg limit_file "$limit_file" --arg cg "/berth-demo-$$" '
	.process.terminal = false
	| .process.args = ["sh", "-c", "echo \"hostname: $(hostname)\"; echo \"my pid:   $$\"; echo \"memory:   $(cat " + $limit_file + ") bytes\""]
	| .hostname = "berth-demo"
	| .mounts += [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]}]
	| .linux.cgroupsPath = $cg
	| .linux.resources.memory = {"limit": 67108864}' \
	"$work/bundle/config.json" > "$work/config.json"
mv "$work/config.json" "$work/bundle/config.json"

echo "== berth run"
"$berth" --root "$root" run --bundle "$work/bundle" "$id"
echo "== done; the container, its cgroup and the bundle are removed"
