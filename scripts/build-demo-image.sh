#!/usr/bin/env bash
# Build the procslice demo app image (images/demo) locally with `podman build` from
# the base image (no registry is reachable) and save it, compressed, where
# procslice_podman's image_archive can ship it: .cache/images/procslice-demo.tar.gz.
# Rebuilt only when its recipe changes: the recipe hash (this script, the
# Containerfile, the app and the base image's id) is the image's label and the
# archive's name sidecar; an up-to-date archive is left alone.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${PROCSLICE_DEMO_IMAGE:-localhost/procslice-demo:1}
base=${PROCSLICE_BASE_IMAGE:-localhost/procslice-base:bookworm}
archive=${PROCSLICE_DEMO_ARCHIVE:-$here/.cache/images/procslice-demo.tar.gz}

base_id=$(podman image inspect --format '{{ .Id }}' "$base" 2>/dev/null) || {
  echo "base image $base is missing: run scripts/build-base-image.sh (make image) first" >&2
  exit 1
}
recipe_hash=$( (cat "$here/scripts/build-demo-image.sh" "$here/images/demo/Containerfile" \
  "$here/images/demo/app.py"; echo "$base_id") | sha256sum | cut -c1-16)

current=$(podman image inspect --format '{{ index .Labels "procslice.recipe" }}' "$image" 2>/dev/null || true)
if [ "$current" = "$recipe_hash" ] && [ -s "$archive" ] && [ "$(cat "$archive.recipe" 2>/dev/null)" = "$recipe_hash" ]; then
  echo "demo image $image is up to date (recipe $recipe_hash): $archive"
  exit 0
fi

start=$(date +%s)
if [ "$current" != "$recipe_hash" ]; then
  echo "building demo image $image (recipe $recipe_hash)..."
  podman build --quiet --pull=never --build-arg "BASE=$base" \
    --label "procslice.recipe=$recipe_hash" --tag "$image" "$here/images/demo" >/dev/null
  # Drop the build stage's intermediate layers (the base image stays).
  podman image prune --force >/dev/null
fi
mkdir -p "$(dirname "$archive")"
tmp=$(mktemp "$archive.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# docker-archive: `podman load` reads it on every podman version, compressed or not;
# its manifest.json names the image id, which procslice_podman compares before loading.
podman save --quiet --format docker-archive "$image" | gzip -9n >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$archive"
echo "$recipe_hash" >"$archive.recipe"
echo "demo image $image saved to $archive ($(du -h "$archive" | cut -f1)) in $(( $(date +%s) - start ))s"
