#!/usr/bin/env bash
# Build the lab's base image with debootstrap: Debian bookworm with systemd as PID 1 and
# what Ansible needs on a managed host. No container registry is needed (or reachable).
# Usage: scripts/lab-base-image.sh [--force]
set -euo pipefail

image=${LAB_BASE_IMAGE:-payments-lab/debian:bookworm}
if [ "${1:-}" != "--force" ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "Base image $image exists"
  exit 0
fi

# Use the Debian mirror this machine's apt already uses.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$( (grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) | grep -oE 'https?://[^ ]+' | head -n 1)
fi
if [ -z "$mirror" ]; then
  echo "No Debian mirror in this machine's apt sources; set DEBIAN_MIRROR to one" >&2
  exit 1
fi

root=$(mktemp -d /var/tmp/payments-lab-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "Bootstrapping Debian bookworm from $mirror into $root"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,gnupg \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"

# Containers have no consoles or udev to wait for; these units only slow boot or fail.
for unit in getty.target systemd-udevd.service systemd-udev-trigger.service \
  systemd-remount-fs.service systemd-firstboot.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# apt inside the lab hosts uses the same mirror, over plain HTTP through Docker's NAT.
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
echo "deb $mirror bookworm-updates main" >>"$root/etc/apt/sources.list"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

tar -C "$root" -c . | docker import \
  -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
  - "$image" >/dev/null
echo "Built $image"
