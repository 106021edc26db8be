# shellcheck shell=bash
# Cached Debian chroots (sourced after lib.sh by slurm-up.sh and node-up.sh): built once
# with debootstrap from a suite's own packages, kept in $SLURMLAB_CACHE, and mounted per
# run. Every mount is appended to $MOUNTS (set by the caller) so the matching down script
# undoes exactly what was done.

# chroot_mount DST MOUNT-ARGS...: mount once, and remember it.
chroot_mount() {
  local dst=$1; shift
  mkdir -p "$dst"
  mountpoint -q "$dst" && return 0
  mount "$@" "$dst"
  echo "$dst" >>"${MOUNTS:?}"
}

# chroot_runtime ROOT: /proc, /sys and /dev inside the chroot.
chroot_runtime() {
  chroot_mount "$1/proc" -t proc proc
  chroot_mount "$1/sys" -t sysfs sysfs
  chroot_mount "$1/dev" --bind /dev
  chroot_mount "$1/dev/pts" --bind /dev/pts
}

# chroot_ensure ROOT SUITE PKG...: debootstrap SUITE into ROOT once and install the
# packages. The marker holds the package list, so adding a package installs it next run.
chroot_ensure() {
  local root=$1 suite=$2; shift 2
  local mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  if [ "$(cat "$root/.slurm-ready" 2>/dev/null)" != "$*" ]; then
    apt_install debootstrap
    if [ ! -x "$root/usr/bin/apt-get" ]; then
      log "debootstrap $suite -> $root (about a minute)"
      rm -rf "$root"
      debootstrap --variant=minbase "$suite" "$root" "$mirror" >&2
    fi
    # Maintainer scripts must never start services inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # sid's Release carries Valid-Until; a mirror snapshot older than the clock makes
    # `apt-get update` fail with "Release file ... is expired". Stable suites have none.
    if grep -qs '^Valid-Until:' "$root"/var/lib/apt/lists/*Release; then
      echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99no-check-valid-until"
    fi
    chroot_runtime "$root"
    log "installing into the $suite chroot: $*"
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
    chroot "$root" apt-get clean
    echo "$*" >"$root/.slurm-ready"
  fi
  chroot_runtime "$root"
  chmod 1777 "$root/tmp"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
}

# chroot_unmount_all: undo every recorded mount, innermost first.
chroot_unmount_all() {
  [ -s "${MOUNTS:?}" ] || return 0
  tac "$MOUNTS" | while read -r m; do
    mountpoint -q "$m" && { umount -R "$m" 2>/dev/null || umount -R -l "$m"; }
  done
  rm -f "$MOUNTS"
}
