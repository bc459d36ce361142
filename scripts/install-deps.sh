#!/usr/bin/env bash
# Install the Debian packages procslice's controller needs (idempotent, quiet when
# everything is there). Run as root on Debian 12.
set -euo pipefail
# prometheus: its promtool checks and tests the alert rules (dashboards/), and its server
# binary scrapes the fleet for its tests and make show (scripts/prometheus_local.py)
packages=(podman runc debootstrap uidmap openssh-client wrk rsync make curl iptables prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "debian packages: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "debian packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's prometheus.service, which it starts on install, is not wanted on the
# controller: scripts/prometheus_local.py runs the binary with its own configuration.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null \
   && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
