#!/usr/bin/env bash
# Build the Debian 12 systemd base image for test hosts, locally, with debootstrap
# (no container registry is reachable). Rebuilt only when its recipe changes: the
# recipe hash is stored as an image label and compared on every call.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${PROCSLICE_BASE_IMAGE:-localhost/procslice-base:bookworm}
recipe_hash=$(cat "$here/scripts/build-base-image.sh" "$here/images/base/packages.txt" | sha256sum | cut -c1-16)

current=$(podman image inspect --format '{{ index .Labels "procslice.recipe" }}' "$image" 2>/dev/null || true)
if [ "$current" = "$recipe_hash" ]; then
  echo "base image $image is up to date (recipe $recipe_hash)"
  exit 0
fi

echo "building base image $image (recipe $recipe_hash) with debootstrap..."
work=$(mktemp -d /var/tmp/procslice-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
include=$(grep -v '^#' "$here/images/base/packages.txt" | paste -sd, -)
debootstrap --variant=minbase --include="$include" bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2; echo "debootstrap failed" >&2; exit 1; }
# Trim what a test host never needs; keep apt lists out of the image.
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
# No getty on a console nobody reads; sshd host keys are made per host at first boot.
rm -f "$work/rootfs/etc/ssh/ssh_host_"*
ln -sf /dev/null "$work/rootfs/etc/systemd/system/getty@tty1.service"
ln -sf /dev/null "$work/rootfs/etc/systemd/system/console-getty.service"
cat >"$work/rootfs/etc/systemd/system/ssh-keygen-host.service" <<'UNIT'
[Unit]
Description=Generate sshd host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/ssh-keygen-host.service "$work/rootfs/etc/systemd/system/multi-user.target.wants/ssh-keygen-host.service"
echo 'deb http://deb.debian.org/debian bookworm main' >"$work/rootfs/etc/apt/sources.list"
echo "debootstrap took $(( $(date +%s) - start ))s"
tar -C "$work/rootfs" -c . | podman import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'LABEL procslice.recipe='"$recipe_hash" \
  --change 'ENV container=podman' \
  - "$image" >/dev/null
echo "base image $image built in $(( $(date +%s) - start ))s"
