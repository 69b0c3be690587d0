#!/bin/sh
# make demo: Docker's everyday container features from berth's own parts, with no daemon.
# Builds a small web image from Debian's busybox-static, imports it with berth-image, makes a
# network with berth-cni, runs two containers on it with a published port and a named
# volume, fetches the page through the port and by name, shows df, stops one with its
# grace period, replaces it on the same volume, and removes everything again.
#
# It runs inside a private network and mount namespace it makes itself (`unshare -n -m`,
# a tmpfs over /run): the machine's own network, firewall and /etc/cni are never touched,
# and every directory it uses lives under one temporary directory on that tmpfs.
# BERTH_BIN_DIR names the directory of berth, berth-image and berth-cni (default
# target/release). tests/tests/demo.rs runs this script and checks its output.
set -eu

if [ "${BERTH_DEMO_INSIDE:-}" != 1 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "make demo needs root: it makes network namespaces, mounts and cgroups" >&2
		exit 1
	fi
	bin_dir=$(cd "${BERTH_BIN_DIR:-target/release}" && pwd)
	for program in berth berth-image berth-cni; do
		if [ ! -x "$bin_dir/$program" ]; then
			echo "$bin_dir/$program is missing; build it first (make demo runs cargo build --release)" >&2
			exit 1
		fi
	done
	for tool in unshare ip jq tar gzip sha256sum /bin/busybox; do
		if ! command -v "$tool" >/dev/null; then
			echo "make demo needs $tool; make deps installs it" >&2
			exit 1
		fi
	done
	echo "== a private network and mount namespace for the whole demo (unshare -n -m)"
	BERTH_DEMO_INSIDE=1 BERTH_BIN_DIR="$bin_dir" exec unshare -n -m -- sh "$0"
fi

# --- inside the private namespaces from here on ---------------------------------------

bin_dir=$BERTH_BIN_DIR
mount -t tmpfs -o mode=0755 berth-demo /run
mkdir /run/netns
ip link set lo up
work=$(mktemp -d /run/berth-demo.XXXXXX)
cd "$work"
mkdir -p cni/net.d cni/lib cni/state bundles
for plugin in bridge host-local loopback portmap firewall tuning; do
	ln -s "$bin_dir/berth-cni" "cni/lib/$plugin"
done

# Container ids carry this run's pid: berth's cgroups are the machine's, shared with any
# other run going on.
run=$$
web1="web-1-$run"
web2="web-2-$run"
client="client-$run"

# fd 3 is the demo's output, also while a command's own output is being captured.
exec 3>&1
say() { printf '%s\n' "$*" >&3; }
step() { printf '\n== %s\n' "$*" >&3; }
# Runs a command and prints its output indented, so it reads apart from the steps; fails
# as the command fails (sh has no pipefail, so no pipe into sed).
shown() {
	if "$@" >"$work/output" 2>&1; then
		sed 's/^/   | /' "$work/output" >&3
	else
		status=$?
		sed 's/^/   | /' "$work/output" >&3
		return $status
	fi
}

# The three programs, each with its private directories under $work. They print the
# command as a user types it; the private-directory flags are left out of the print.
berth() {
	say "\$ berth $*"
	"$bin_dir/berth" --root "$work/berth" "$@"
}
berth_image() {
	say "\$ berth-image $*"
	"$bin_dir/berth-image" --store "$work/store" "$@"
}
berth_cni() {
	say "\$ berth-cni $*"
	"$bin_dir/berth-cni" "$@" --conf-dir "$work/cni/net.d" --bin-dir "$work/cni/lib" --state-dir "$work/cni/state"
}
unpack() {
	image=$1 bundle=$2
	shift 2
	say "\$ berth-image unpack $image $bundle $*"
	"$bin_dir/berth-image" --store "$work/store" unpack "$image" "$bundle" \
		--cni-conf-dir "$work/cni/net.d" --cni-bin-dir "$work/cni/lib" --cni-state-dir "$work/cni/state" \
		--berth-cni "$bin_dir/berth-cni" "$@"
}
# Starts a bundle detached, its output in logs/ID.
run_detached() {
	mkdir -p logs
	berth run -d -b "$1" "$2" </dev/null >"logs/$2" 2>&1
}

# Removes everything the demo made, whatever step it reached (quietly: on the normal path
# the last step has already removed each piece, printing it).
cleaned=""
cleanup() {
	[ -z "$cleaned" ] || return 0
	cleaned=1
	for id in "$web1" "$web2" "$client"; do
		"$bin_dir/berth" --root "$work/berth" delete --force "$id" 2>/dev/null || true
	done
	for bundle in bundles/*; do
		[ -d "$bundle" ] || continue
		"$bin_dir/berth-image" --store "$work/store" release --volumes "$bundle" 2>/dev/null || true
	done
	"$bin_dir/berth-image" --store "$work/store" volume rm site >/dev/null 2>&1 || true
	"$bin_dir/berth-cni" network rm demo --conf-dir "$work/cni/net.d" --bin-dir "$work/cni/lib" \
		--state-dir "$work/cni/state" >/dev/null 2>&1 || true
	ip netns del testhost 2>/dev/null || true
	cd /
	# A bundle a failed release left mounted must not keep its directory from going.
	awk -v work="$work/" 'index($5, work) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r point; do umount -l "$point" 2>/dev/null || true; done
	rm -rf "$work"
}
trap 'status=$?; cleanup; [ $status = 0 ] || echo "make demo FAILED (exit $status); everything it made is removed" >&2; exit $status' EXIT
trap 'exit 130' INT TERM

# Fetches URL from the test host, retrying while the server comes up.
fetch_from_test_host() {
	for _ in $(seq 50); do
		if page=$(ip netns exec testhost timeout 5 busybox wget -qO- "$1" 2>/dev/null); then
			printf '%s\n' "$page"
			return 0
		fi
		sleep 0.1
	done
	echo "the test host could not fetch $1" >&2
	return 1
}
# Fetches URL inside container ID (with its own wget), retrying while the server comes up.
fetch_in() {
	id=$1 url=$2
	for _ in $(seq 50); do
		if page=$("$bin_dir/berth" --root "$work/berth" exec "$id" timeout 5 wget -qO- "$url" 2>/dev/null); then
			printf '%s\n' "$page"
			return 0
		fi
		sleep 0.1
	done
	echo "container $id could not fetch $url" >&2
	return 1
}

step "a web image from Debian's busybox-static, written as an OCI image layout (tar, gzip, sha256sum)"
rootfs=image/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" \
	"$rootfs/usr/local/bin" "$rootfs/srv/www"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/srv/www:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\n' >"$rootfs/etc/group"
echo "hello from the berth demo image" >"$rootfs/srv/www/index.html"
cat >"$rootfs/usr/local/bin/serve" <<'EOF'
#!/bin/sh
# The demo image's entrypoint: serves /srv/www on port 80 and leaves at once on SIGTERM
# (as PID 1 it gets SIGTERM only because it installs a handler).
httpd -f -p 80 -h /srv/www &
server=$!
trap 'echo "serve: SIGTERM, stopping httpd"; kill $server; exit 0' TERM
echo "serve: httpd on port 80 as $(hostname)"
wait $server
EOF
chmod 0755 "$rootfs/usr/local/bin/serve"
layout=image/layout
mkdir -p "$layout/blobs/sha256"
# Writes stdin as a blob of the layout; prints "DIGEST SIZE".
put_blob() {
	cat >image/blob
	hex=$(sha256sum image/blob | cut -d' ' -f1)
	mv image/blob "$layout/blobs/sha256/$hex"
	echo "sha256:$hex $(stat -c %s "$layout/blobs/sha256/$hex")"
}
tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf image/layer.tar .
diff_id="sha256:$(sha256sum image/layer.tar | cut -d' ' -f1)"
set -- $(gzip -n -c image/layer.tar | put_blob)
layer_digest=$1 layer_size=$2
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
set -- $(printf '%s' '{"architecture":"'"$arch"'","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["/usr/local/bin/serve"],"ExposedPorts":{"80/tcp":{}},"WorkingDir":"/srv/www"},"rootfs":{"type":"layers","diff_ids":["'"$diff_id"'"]}}' | put_blob)
config_digest=$1 config_size=$2
set -- $(printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'"$config_digest"'","size":'"$config_size"'},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"'"$layer_digest"'","size":'"$layer_size"'}]}' | put_blob)
manifest_digest=$1 manifest_size=$2
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'"$manifest_digest"'","size":'"$manifest_size"',"annotations":{"org.opencontainers.image.ref.name":"demo/web:1"}}]}' >"$layout/index.json"
say "one layer: busybox and its applets, /srv/www/index.html, /usr/local/bin/serve (entrypoint, httpd on port 80)"
say "layer $layer_digest ($layer_size bytes gzip), manifest $manifest_digest"

step "import the layout into berth-image's store"
say "# docker: docker load"
shown berth_image import image/layout
shown berth_image list

step "a network: berth-cni writes a bridge + portmap + firewall + tuning conflist, as podman does"
say "# docker: docker network create demo"
shown berth_cni network create demo
shown berth_cni network ls

step "a test host: a network namespace of its own, linked to this one (192.0.2.2 -> 192.0.2.1)"
ip netns add testhost
ip link add th0 type veth peer name eth0 netns testhost
ip addr add 192.0.2.1/24 dev th0
ip link set th0 up
ip -n testhost addr add 192.0.2.2/24 dev eth0
ip -n testhost link set eth0 up
ip -n testhost link set lo up
say "testhost: eth0 $(ip -n testhost -4 -o addr show dev eth0 | awk '{print $4}')"

step "two containers on the network: web publishes 8080:80 and keeps its site in the named volume 'site'"
say "# docker: docker run -d --network demo --name web --hostname web-1 -p 8080:80 -v site:/srv/www demo/web:1"
say "#         docker run -d --network demo --name client --hostname client demo/web:1"
shown unpack demo/web:1 bundles/web-1 --network demo --name web --hostname web-1 -p 8080:80 -v site:/srv/www
shown unpack demo/web:1 bundles/client --network demo --name client --hostname client
say "the volume 'site' was empty, so unpack filled it from the image's /srv/www, as Docker does:"
shown ls store/volumes/site/_data
say "web-1's config.json: the hooks that attach it when a runtime creates it, and the volume's mount"
shown jq -c '.hooks.createRuntime[0].args, .hooks.poststop[0].args, (.mounts[] | select(.destination == "/srv/www"))' \
	bundles/web-1/config.json
run_detached bundles/web-1 "$web1"
run_detached bundles/client "$client"
shown berth list
berth_cni network inspect demo >network.json
say "members of demo (name, address, published ports):"
shown jq -r '.containers[] | "\(.name)\t\(.ips[0].address)\t\([.portMappings[] | "\(.hostPort)->\(.containerPort)/\(.protocol)"] | join(" "))"' network.json

step "the page through the published port, from the test host"
say "\$ ip netns exec testhost wget -qO- http://192.0.2.1:8080/"
page=$(fetch_from_test_host http://192.0.2.1:8080/)
say "through the port: $page"

step "the page by name, from the other container (its /etc/hosts is kept by the network's hook)"
say "# docker: docker exec client wget -qO- http://web/"
say "\$ berth exec $client wget -qO- http://web/"
page=$(fetch_in "$client" http://web/)
say "by name: $page"
say "client's /etc/hosts block for the network:"
shown sed -n '/# berth-cni demo begin/,/# berth-cni demo end/p' bundles/client/hosts

step "a note into the named volume with berth-image cp, while web-1 runs"
echo "written while web-1 ran" >note.txt
say "# docker: docker cp note.txt web:/srv/www/note.txt"
shown berth_image cp note.txt bundles/web-1:/srv/www/note.txt
note=$(fetch_from_test_host http://192.0.2.1:8080/note.txt)
say "note through the port: $note"

step "disk usage: images, bundles (own writes, virtual size) and volumes"
say "# docker: docker system df -v"
shown berth_image df

step "stop web-1 with a 2 s grace period: SIGTERM, then SIGKILL if it has not left"
say "# docker: docker stop -t 2 web && docker rm web"
started=$(date +%s.%N)
shown berth stop -t 2 "$web1"
stopped=$(date +%s.%N)
status=$("$bin_dir/berth" --root "$work/berth" state "$web1" | jq -r .status)
say "web-1 $status after $(awk "BEGIN { printf \"%.2f\", $stopped - $started }") s: its entrypoint left on SIGTERM, inside the grace period"
say "web-1's log:"
shown cat "logs/$web1"
shown berth delete "$web1"
shown berth_image release bundles/web-1
shown berth_image volume ls

step "replace it: a new bundle web-2, same name, same port, same volume"
say "# docker: docker run -d --network demo --name web --hostname web-2 -p 8080:80 -v site:/srv/www demo/web:1"
shown unpack demo/web:1 bundles/web-2 --network demo --name web --hostname web-2 -p 8080:80 -v site:/srv/www
run_detached bundles/web-2 "$web2"
page=$(fetch_from_test_host http://192.0.2.1:8080/)
say "page through the port: $page"
note=$(fetch_from_test_host http://192.0.2.1:8080/note.txt)
say "kept in the volume: $note"
note=$(fetch_in "$client" http://web/note.txt)
say "by name from client: $note"
say "client's /etc/hosts block now (web's new address):"
shown sed -n '/# berth-cni demo begin/,/# berth-cni demo end/p' bundles/client/hosts
say "web-2's log:"
shown cat "logs/$web2"

step "remove everything: containers, bundles (with their anonymous volumes), the volume, the network"
say "# docker: docker rm -f web client && docker volume rm site && docker network rm demo"
shown berth delete --force "$web2"
shown berth delete --force "$client"
shown berth_image release --volumes bundles/web-2
shown berth_image release --volumes bundles/client
shown berth_image volume rm site
shown berth_cni network rm demo
shown berth_image volume ls
shown berth_cni network ls
ip netns del testhost
say "test host removed; the private namespaces go when this script ends"
cleanup
trap - EXIT
echo
echo "make demo: done"
