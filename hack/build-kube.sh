#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager v1.20.2 from Debian bookworm's
# `kubernetes` source package and caches them in $SLURMLAB_CACHE/bin. About 4 minutes
# per binary and ~1.3 GB RSS once; a no-op afterwards.
#
# Why from source: it is the only way to get a real API server from the package
# registries we can reach. Why 1.20: the newest Debian source with a complete vendor/.
LOG_TAG=build-kube
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"

WANT=()
for b in kube-apiserver kube-controller-manager; do
  [ -x "$SLURMLAB_CACHE/bin/$b" ] || WANT+=("$b")
done
[ ${#WANT[@]} -eq 0 ] && exit 0

apt_install golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev make
SRC=$SLURMLAB_CACHE/src/kubernetes
mkdir -p "$SRC" "$SLURMLAB_CACHE/bin"

# A private deb-src list so the host's apt configuration is left alone.
APT=$SRC/apt
mkdir -p "$APT/lists/partial"
echo "deb-src http://deb.debian.org/debian bookworm main" >"$APT/sources.list"
aptopts=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$APT/lists")
if ! compgen -G "$SRC/kubernetes_*.orig.tar.gz" >/dev/null; then
  log "downloading the kubernetes source package"
  apt-get "${aptopts[@]}" update -qq >&2
  (cd "$SRC" && apt-get "${aptopts[@]}" source --download-only kubernetes >&2)
fi
ORIG=$(compgen -G "$SRC/kubernetes_*.orig.tar.gz" | head -n1)
TREE=$SRC/tree
rm -rf "$TREE"; mkdir -p "$TREE"
log "unpacking $(basename "$ORIG")"
tar -xzf "$ORIG" -C "$TREE" --strip-components=1

# The vendored reflect2 v1.0.1 crashes under Go >= 1.18 (SIGSEGV in mapiterinit on the
# first custom resource write); Debian's v1.0.2 fixes it.
R2=$TREE/vendor/github.com/modern-go/reflect2
rm -rf "$R2"; mkdir -p "$R2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2/. "$R2/"
find "$R2" -name '*_test.go' -delete

WHAT=$(printf 'cmd/%s ' "${WANT[@]}")
log "make WHAT=\"${WHAT% }\" (about 4 minutes per binary)"
(cd "$TREE" && make WHAT="${WHAT% }" >&2)
for b in "${WANT[@]}"; do install -m 0755 "$TREE/_output/bin/$b" "$SLURMLAB_CACHE/bin/$b"; done
rm -rf "$TREE"   # 1+ GB of objects; the tarball stays for a rebuild
log "built ${WANT[*]} into $SLURMLAB_CACHE/bin"
