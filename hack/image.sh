#!/usr/bin/env bash
# Builds the slurmlab image (and the pod sandbox image the node needs) without any base
# image or outside registry, and pushes both to the local registry of hack/node-up.sh:
#   - `cargo build --release` (the command the Containerfile runs, same Cargo.lock)
#   - hack/image/oci.py writes an OCI layout from what the Containerfile's runtime stage
#     declares (binary path, USER, ENTRYPOINT, CMD; one description for both builds) on
#     a distroless-style base: the binary's shared libraries, CA certificates, a non-root
#     user, /tmp
#   - skopeo pushes it; the tag is the manifest's digest, so a new build is a new tag.
# Prints the image reference and writes $SLURMLAB_STATE/image.env.
LOG_TAG=image
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=hack/node.sh
. "$HACK_DIR/node.sh"
apt_install skopeo gcc libc6-dev
WORK=$SLURMLAB_STATE/image
rm -rf "$WORK"; mkdir -p "$WORK"
curl -fsS "http://$REGISTRY/v2/" >/dev/null || die "no registry at $REGISTRY (hack/node-up.sh)"

push() { # LAYOUT NAME: push LAYOUT as NAME:TAG, TAG from its digest; prints NAME:TAG
  local layout=$1 name=$2 digest tag
  digest=$(jq -r '.manifests[0].digest' "$layout/index.json")
  tag=${3:-sha-${digest:7:16}}
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://$REGISTRY/$name:$tag" >&2
  echo "$REGISTRY/$name:$tag"
}

gcc -static -Os -s -o "$WORK/pause" "$HACK_DIR/image/pause.c"
python3 "$HACK_DIR/image/oci.py" pause "$WORK/pause" "$WORK/oci-pause" >/dev/null
# The tag containerd's pinned sandbox image names (hack/node-up.sh).
push "$WORK/oci-pause" pause 3.10 >/dev/null

log "cargo build --release --bin slurmlab"
(cd "$REPO_DIR" && cargo build --release --locked --quiet --bin slurmlab)
# Stripped, as the Containerfile does.
strip -o "$WORK/slurmlab" "$CARGO_TARGET_DIR/release/slurmlab"
read -r digest size raw < <(python3 "$HACK_DIR/image/oci.py" slurmlab "$REPO_DIR/Containerfile" \
  "$WORK/slurmlab" "$WORK/oci-slurmlab")
ref=$(push "$WORK/oci-slurmlab" slurmlab)
cat >"$SLURMLAB_STATE/image.env" <<ENV
SLURMLAB_IMAGE=$ref
SLURMLAB_IMAGE_REPOSITORY=${ref%:*}
SLURMLAB_IMAGE_TAG=${ref##*:}
SLURMLAB_IMAGE_BYTES=$size
ENV
log "pushed $ref ($digest): $((size / 1024)) KiB compressed, $((raw / 1024)) KiB unpacked"
echo "$ref"
