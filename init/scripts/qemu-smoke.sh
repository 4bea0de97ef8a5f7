#!/bin/sh
# Manual smoke test of both stages under QEMU (TCG), with busybox scripts as
# fake daemons: machined asks PID 1 to power off after 6 s, networkd ignores
# SIGTERM (exercises the grace period), apid crash-loops (backoff).
# Usage: init/scripts/qemu-smoke.sh KERNEL_ROOT   (dir with boot/vmlinuz-* and lib/modules/*)
# Needs: a static busybox at /usr/bin/busybox, mksquashfs, cpio, qemu-system-x86_64.
set -eu
KROOT=${1:?usage: $0 KERNEL_ROOT (e.g. _out/cache/linux-image-...)}
VMLINUZ=$(ls "$KROOT"/boot/vmlinuz-* | head -n1)
K=$(basename "$VMLINUZ" | sed 's/^vmlinuz-//')
KM=$KROOT/lib/modules/$K
REPO=$(cd "$(dirname "$0")/../.." && pwd)
(cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p slate-init --target x86_64-unknown-linux-gnu)
BIN=$REPO/target/x86_64-unknown-linux-gnu/release/init
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/sq/sbin" "$W/sq/usr/bin" "$W/ir"
for d in dev proc sys run tmp var etc mnt; do mkdir -p "$W/sq/$d"; done
cp "$BIN" "$W/sq/sbin/init"; cp /usr/bin/busybox "$W/sq/usr/bin/busybox"
B=/usr/bin/busybox
printf '#!%s sh\necho "machined: up as $$ PATH=$PATH RUST_LOG=${RUST_LOG-unset}"\n%s sleep 1000 &\n%s sleep 6\n%s kill -TERM 1\nexec %s sleep 1000\n' $B $B $B $B $B > "$W/sq/usr/bin/machined"
printf '#!%s sh\ntrap "" TERM\n%s cut -d" " -f5,9 /proc/self/mountinfo\nwhile true; do %s sleep 1; done\n' $B $B $B > "$W/sq/usr/bin/networkd"
printf '#!%s sh\necho "apid: crashing"\nexit 1\n' $B > "$W/sq/usr/bin/apid"
chmod 755 "$W"/sq/usr/bin/*
mksquashfs "$W/sq" "$W/ir/rootfs.sqsh" -comp zstd -noappend -all-root -quiet >/dev/null
for d in dev proc sys run tmp newroot; do mkdir -p "$W/ir/$d"; done
: > "$W/ir/lib-list"
for m in kernel/drivers/block/loop.ko kernel/fs/squashfs/squashfs.ko; do
  mkdir -p "$W/ir/lib/modules/$K/$(dirname $m)"; cp "$KM/$m" "$W/ir/lib/modules/$K/$m"
  echo "/lib/modules/$K/$m" >> "$W/ir/lib-list"
done
mv "$W/ir/lib-list" "$W/ir/lib/modules/slate-stage1.list"
cp "$BIN" "$W/ir/init"
mknod "$W/ir/dev/console" c 5 1; mknod "$W/ir/dev/null" c 1 3
(cd "$W/ir" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initramfs.gz"
timeout 180 qemu-system-x86_64 -machine q35 -m 512 -smp 1 -nographic -no-reboot \
  -kernel "$VMLINUZ" -initrd "$W/initramfs.gz" -append "console=ttyS0 quiet panic=-1 slate.debug"
