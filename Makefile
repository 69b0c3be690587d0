# berth: the one place that installs, builds, tests, demos and benches the stack.

PREFIX ?= /usr/local
CARGO ?= cargo
RELEASE_DIR := target/release

# Debian packages the build, the tests and the bench need; `make deps` installs the missing ones.
DEB_PACKAGES := build-essential pkg-config libseccomp-dev busybox-static runc jq iproute2 \
	util-linux procps criu podman conmon debootstrap containerd umoci skopeo pigz python3 \
	containernetworking-plugins docker-registry iptables nftables protobuf-compiler curl

.PHONY: all deps build release musl-target release-berth release-shim test install demo bench clean

all: build

# youki's libcontainer and libcgroups as crates.io publishes them, each with berth's patch
# (patches/CRATE-VERSION.patch says why) applied in a copy that Cargo.toml's
# [patch.crates-io] points to. A crate comes from cargo's download cache, or from crates.io
# when cargo has not fetched it (it cannot before the copies exist) or its copy does not
# check, and is checked against the checksum crates.io lists for it. It is unpacked with
# fresh file times, so that cargo rebuilds what a changed patch touches or stops touching.
PATCHED_CRATES := target-patched
SHA256_libcontainer-0.7.0 := 2c28770cf8fb3acca0d168a10f5d9f8333d304af0b2ff5654029822d222d19f0
SHA256_libcgroups-0.7.0 := d85e8f0bca12f0d04fdd8f14858022018cd1667b4f971d6b09058fe90323e19d
PATCHED := $(PATCHED_CRATES)/libcontainer-0.7.0/.patched $(PATCHED_CRATES)/libcgroups-0.7.0/.patched

$(PATCHED_CRATES)/%/.patched: patches/%.patch
	rm -rf $(PATCHED_CRATES)/$* && mkdir -p $(PATCHED_CRATES)
	@[ -n "$(SHA256_$*)" ] || { echo "make: no SHA256_$* in the Makefile for patches/$*.patch" >&2; exit 1; }
	@stem=$*; crate=$$(ls $${CARGO_HOME:-$$HOME/.cargo}/registry/cache/*/$*.crate 2>/dev/null | head -n 1); \
	if [ -z "$$crate" ] || ! echo "$(SHA256_$*)  $$crate" | sha256sum --check --quiet - >/dev/null 2>&1; then \
		crate=$(PATCHED_CRATES)/$*.crate; \
		echo "downloading $* from crates.io"; \
		curl -sSfL -o $$crate https://static.crates.io/crates/$${stem%-*}/$*.crate || \
			{ echo "make: cannot download $*.crate from static.crates.io" >&2; exit 1; }; \
		echo "$(SHA256_$*)  $$crate" | sha256sum --check --quiet - || \
			{ echo "make: $$crate from static.crates.io is not the published $*" >&2; exit 1; }; \
	fi; \
	tar --touch -xzf $$crate -C $(PATCHED_CRATES)
	patch --quiet --directory=$(PATCHED_CRATES)/$* -p1 < patches/$*.patch
	touch $@

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: $(PATCHED)
	$(CARGO) build --workspace

# berth and berth-cni run once per call, so their start counts. Both are linked static
# against musl: glibc's start-up (static or not) reads the CPU's cache sizes through some 60
# cpuid instructions, each a trap to the hypervisor on a VM (~0.6 ms of every berth call and
# of a bridge ADD here, see README's benches); musl reads none. The target is added through
# rustup when missing; where that cannot be, both are linked static against glibc, which at
# least spares the dynamic loader. The other binaries, the debug build and the dependencies
# stay as they are; the musl builds replace cargo's links in target/release.
# The shim is linked the same way (containerd runs its `start` and `delete` subcommands once
# per container), static-pie against glibc where musl cannot be had.
# berth is linked not position-independent, as Debian's runc is (no relocations at each
# start), with the release-small profile (optimized for size, one codegen unit) so its
# processes map less code (see README's runtime bench). It takes libseccomp from Debian's
# libseccomp.a (libseccomp-dev), which libseccomp-sys finds through these variables; for the
# musl link the archive is copied to a directory of its own, so that the linker does not
# find glibc's libc.a next to it.
SECCOMP_LIBDIR := $(shell pkg-config --variable=libdir libseccomp)
SECCOMP_STATIC := LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$(SECCOMP_LIBDIR)
SECCOMP_MUSL_DIR := $(CURDIR)/target/libseccomp-static
MUSL := $(shell uname -m)-unknown-linux-musl
HAVE_MUSL = [ -d "$$(rustc --print target-libdir --target $(MUSL) 2>/dev/null)" ]

# $(call static_release,NAME,COST): the package and binary NAME linked static against musl
# into target/release, else static-pie against glibc, COST slower.
define static_release
	@if $(HAVE_MUSL); then \
		echo "$(CARGO) build --release -p $(1) --bin $(1) --target $(MUSL)" && \
		$(CARGO) build --release -p $(1) --bin $(1) --target $(MUSL) && \
		ln -f target/$(MUSL)/release/$(1) $(RELEASE_DIR)/$(1); \
	else \
		echo "make release: no Rust target $(MUSL): $(1) linked static against glibc, $(2)" >&2; \
		$(CARGO) rustc --release -p $(1) --bin $(1) -- -C target-feature=+crt-static; \
	fi
endef

release: $(PATCHED)
	$(CARGO) build --workspace --release
	$(MAKE) release-berth release-shim
	$(call static_release,berth-cni,~0.7 ms slower per CNI call on a VM)

# The Rust musl target, added through rustup when it is missing and rustup is there.
musl-target:
	@$(HAVE_MUSL) || ! command -v rustup >/dev/null || rustup target add $(MUSL) || true

# berth alone as `make release` links it (into target/release/berth).
release-berth: $(PATCHED) musl-target
	mkdir -p $(RELEASE_DIR)
	@if $(HAVE_MUSL); then \
		mkdir -p $(SECCOMP_MUSL_DIR) && cp $(SECCOMP_LIBDIR)/libseccomp.a $(SECCOMP_MUSL_DIR)/ && \
		echo "$(CARGO) rustc --target $(MUSL) --profile release-small -p berth --bin berth" && \
		LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$(SECCOMP_MUSL_DIR) \
			$(CARGO) rustc --target $(MUSL) --profile release-small -p berth --bin berth -- -C relocation-model=static && \
		ln -f target/$(MUSL)/release-small/berth $(RELEASE_DIR)/berth; \
	else \
		echo "make release: no Rust target $(MUSL): berth linked static against glibc, ~0.6 ms slower per call on a VM" >&2; \
		$(SECCOMP_STATIC) $(CARGO) rustc --profile release-small -p berth --bin berth -- \
			-C target-feature=+crt-static -C relocation-model=static && \
		ln -f target/release-small/berth $(RELEASE_DIR)/berth; \
	fi

# The shim alone as `make release` links it.
release-shim: $(PATCHED) musl-target
	mkdir -p $(RELEASE_DIR)
	$(call static_release,containerd-shim-berth-v2,~0.45 ms slower per start on a VM)

# The runtime's and the shim's tests run twice: against the debug build, and against berth
# and the shim as `make release` links them, which is what `make install` installs (another
# C library is another program: glibc and musl number the real-time signals differently,
# for one).
RELEASE_TESTS := runtime_security runtime_lifecycle runtime_no_hang runtime_stop runtime_errors \
	runtime_callers runtime_operations runtime_container runtime_cgroups runtime_hooks \
	runtime_mount_options runtime_podman shim_containerd kubernetes_cri
RELEASE_TESTS_DIR := target/release-tests

test: deps $(PATCHED)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace
	$(CARGO) test --workspace -- --test-threads=2
	$(MAKE) release-berth release-shim
	rm -rf $(RELEASE_TESTS_DIR) && mkdir -p $(RELEASE_TESTS_DIR)
	for bin in berth containerd-shim-berth-v2; do ln -s ../release/$$bin $(RELEASE_TESTS_DIR)/$$bin; done
	for bin in berth-image berth-cni; do ln -s ../debug/$$bin $(RELEASE_TESTS_DIR)/$$bin; done
	BERTH_BIN_DIR=$(CURDIR)/$(RELEASE_TESTS_DIR) $(CARGO) test -p berth-tests \
		$(addprefix --test ,$(RELEASE_TESTS)) -- --test-threads=2

install: release
	install -d $(PREFIX)/bin
	install -m 0755 $(RELEASE_DIR)/berth $(PREFIX)/bin/berth
	install -m 0755 $(RELEASE_DIR)/containerd-shim-berth-v2 $(PREFIX)/bin/containerd-shim-berth-v2
	install -m 0755 $(RELEASE_DIR)/berth-image $(PREFIX)/bin/berth-image
	install -m 0755 $(RELEASE_DIR)/berth-cni $(PREFIX)/bin/berth-cni
	install -d $(PREFIX)/lib/cni
	for plugin in bridge host-local loopback portmap firewall tuning; do ln -sf ../../bin/berth-cni $(PREFIX)/lib/cni/$$plugin; done

demo: deps release
	BERTH_BIN_DIR=$(CURDIR)/$(RELEASE_DIR) sh tests/demo.sh

bench: deps release
	BERTH_BIN_DIR=$(CURDIR)/$(RELEASE_DIR) $(RELEASE_DIR)/berth-bench $(SECTIONS)

clean:
	$(CARGO) clean
	rm -rf $(PATCHED_CRATES)
