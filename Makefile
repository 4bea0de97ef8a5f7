# Slate. Recipes are one line each; the logic lives in Rust (image/, tests/).
# Every binary is built once, static (glibc, crt-static), for the image and
# for the host alike, so tests and the image share one build of the deps.

TARGET   := x86_64-unknown-linux-gnu
BIN      := target/$(TARGET)/release
CARGO    := RUSTFLAGS="-C target-feature=+crt-static" cargo
CARGOFLAGS := --release --target $(TARGET) --locked
KERNEL   ?= cloud
# Debian packages whose programs form the extension layer (extensions.cpio);
# `make image EXTENSIONS=` builds without one.
EXTENSIONS ?= containerd,runc,etcd-server,containernetworking-plugins

# Debian packages the build, the image and the tests need.
DEBS := build-essential pkg-config clang libclang-dev libblkid-dev \
	squashfs-tools cpio zstd xz-utils xorriso mtools dosfstools grub-common grub-pc-bin grub-efi-amd64-bin \
	kmod qemu-system-x86 ovmf busybox-static iproute2 dnsmasq-base nftables tcpdump chrony openssl haproxy \
	protobuf-compiler libprotobuf-dev etcd-client containerd iperf3 \
	python3-grpcio python3-yaml

.PHONY: deps build image run cluster test unit-test qemu-test bench fuzz lint fmt clean

deps:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS)
	# kubectl reads the kubeconfigs in the tests (offline). Debian's is
	# kubernetes-client; a machine with another kubectl keeps its own.
	command -v kubectl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client

build:
	$(CARGO) build $(CARGOFLAGS) --workspace --bins

image: build
	$(BIN)/slate-image --kernel $(KERNEL) --bin-dir $(BIN) --out _out --debian-extensions $(EXTENSIONS)

run: image
	$(BIN)/slate-run

# N control-plane nodes on one private LAN (`make cluster NODES=3`).
NODES ?= 3
cluster: image
	NODES=$(NODES) $(BIN)/slate-cluster

test: image unit-test qemu-test

unit-test:
	$(CARGO) test $(CARGOFLAGS) --workspace

qemu-test:
	$(CARGO) test $(CARGOFLAGS) -p slate-tests --test qemu_boot --test qemu_config --test qemu_cluster --test qemu_join --test qemu_extensions --test qemu_faults --test qemu_mesh --test qemu_install -- --include-ignored --test-threads 1

bench: image
	$(BIN)/slate-bench

# Fuzz the parsers of untrusted input for FUZZ_SECONDS each (needs the
# nightly toolchain and `cargo install cargo-fuzz`; see docs/fuzzing.md).
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && for t in dhcp_reply dhcp6_reply machine_config kernel_cmdline discovery_record boot_records; do cargo +nightly fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done
	cd mesh/fuzz && for t in mesh_datagram mesh_offload; do cargo +nightly fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

lint:
	cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	rm -rf _out target
