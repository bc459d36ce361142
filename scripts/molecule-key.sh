#!/bin/sh
# The SSH key the role scenarios' test hosts authorise for root (molecule's dependency
# step runs this before create): /var/tmp/procslice-molecule/id_ed25519, made once.
# The podman driver creates each host with the public key mounted as
# /root/.ssh/authorized_keys and sshd started at boot; ansible then reaches it over SSH
# on a port published on 127.0.0.1 (pipelining, one connection kept open), as
# deploy.yml reaches servers, instead of a podman exec and a copy for every task.
set -eu
dir=/var/tmp/procslice-molecule
mkdir -p "$dir"
chmod 0700 "$dir"
if [ ! -s "$dir/id_ed25519" ] || [ ! -s "$dir/id_ed25519.pub" ]; then
  rm -f "$dir/id_ed25519" "$dir/id_ed25519.pub"
  ssh-keygen -q -t ed25519 -N '' -C procslice-molecule -f "$dir/id_ed25519"
fi
