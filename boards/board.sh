#!/bin/bash
# Emulated ARM boards: a Debian ARM root run under qemu-user, with its own OpenSSH server on 127.0.0.1.
#
#   boards/board.sh start ARCH   build the root once (cached), start its sshd, write .boards/ARCH/devices.yaml
#   boards/board.sh stop ARCH    stop the board, unmount it, forget what it wrote
#   boards/board.sh build ARCH   only build the root
#
# ARCH: arm64 (Debian 12 bookworm, like 64-bit Raspberry Pi OS) or armhf (Debian 11 bullseye, like 32-bit Pi OS).
# The root is cached in ${OFAKIT_BOARD_CACHE:-~/.cache/ofakit/boards}/ARCH/root and built atomically (in
# root.partial, renamed to root when complete), so a half-built root is never reused. Every start is a fresh board,
# as a newly flashed Pi: the cached root is the lower layer of an overlay mount whose upper layer (everything the
# board writes: a venv, apt packages) is discarded by stop. The board's sshd runs chrooted under qemu with /proc and
# /dev mounted but not /sys (with /sys, onnxruntime segfaults on import under qemu: it parses the host's CPU).
# Needs root, binfmt_misc (registered from qemu-user-static's /usr/lib/binfmt.d entries) and a Debian mirror.
# Exit status 3: this machine cannot build or run a board (not root, no binfmt_misc, no overlayfs, no mirror).
set -euo pipefail

usage() { echo "usage: $0 build|start|stop arm64|armhf" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1 arch=$2
case $arch in
  arm64) suite=bookworm qemu=aarch64 backend=onnxruntime ;;
  armhf) suite=bullseye qemu=arm backend=tflite ;;      # PyPI has no onnxruntime for 32-bit ARM
  *) usage ;;
esac
mirror=${OFAKIT_BOARD_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${OFAKIT_BOARD_CACHE:-$HOME/.cache/ofakit/boards}/$arch
root=$cache/root            # the pristine, cached root
layer=$cache/layer          # what the running board wrote (overlay upper + work dirs)
board=$cache/board          # the running board: overlay of $layer on $root
state=$here/.boards/$arch
pidfile=/run/ofakit-sshd.pid

step_start=0
step() { step_start=$(date +%s.%N); echo "board $arch: $*" >&2; }
took() { echo "board $arch: $1 took $(echo "$(date +%s.%N) $step_start" | awk '{printf "%.1f", $1 - $2}') s" >&2; }
die() { echo "board $arch: $*" >&2; exit 1; }
cannot() { echo "board $arch: cannot run here: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || cannot "needs root (chroot, mount, binfmt_misc)"

need_binfmt() {
  local bf=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-$qemu.conf
  [ -e $bf/register ] || mount -t binfmt_misc binfmt_misc $bf 2>/dev/null || cannot "cannot mount binfmt_misc at $bf"
  if ! [ -e $bf/qemu-$qemu ]; then
    [ -r "$conf" ] || die "$conf missing: install qemu-user-static"
    grep '^:' "$conf" > $bf/register 2>/dev/null || cannot "cannot register qemu-$qemu with binfmt_misc"
  fi
  grep -qx enabled $bf/qemu-$qemu || cannot "binfmt_misc entry qemu-$qemu is disabled"
}

umount_under() {  # unmount everything mounted at or under $1, deepest first
  local dir m
  [ -d "$1" ] || return 0
  dir=$(readlink -f "$1")
  for m in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" || true
  done
}

build() {
  [ -e "$root/.ofakit-complete" ] && return 0
  command -v debootstrap >/dev/null || die "debootstrap missing: install debootstrap"
  need_binfmt
  local part=$cache/root.partial
  umount_under "$part"
  rm -rf "$part"
  mkdir -p "$cache"
  step "debootstrap $suite ($arch) into $part"
  if ! debootstrap --arch="$arch" --variant=minbase --include=python3,python3-venv,openssh-server,ca-certificates \
      "$suite" "$part" "$mirror" >"$cache/debootstrap.log" 2>&1; then
    grep -q "Failure trying to run\|Couldn't download\|Failed getting release file" "$cache/debootstrap.log" \
      && cannot "debootstrap cannot fetch from $mirror (see $cache/debootstrap.log)"
    die "debootstrap failed, see $cache/debootstrap.log"
  fi
  took "debootstrap"
  step "configure user pi and sshd"
  # A fresh Pi: user pi with key login only ('*' = no password but not locked; sshd refuses a '!' account).
  chroot "$part" useradd -m -s /bin/bash pi
  chroot "$part" usermod -p '*' pi
  install -d -m 700 "$part/home/pi/.ssh"
  chroot "$part" chown pi:pi /home/pi/.ssh
  rm -f "$part"/etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N '' -C "ofakit-board-$arch" -f "$part/etc/ssh/ssh_host_ed25519_key"
  cat > "$part/etc/ssh/sshd_config" <<CONF
# ofakit emulated board: key login for pi only (port and listen address are given on the command line)
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile $pidfile
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
AllowUsers pi
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
  # The board reaches the same package index as this machine: same CA bundle (networks that intercept TLS).
  cp /etc/ssl/certs/ca-certificates.crt "$part/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$part/etc/pip.conf"
  chroot "$part" apt-get clean
  took "configure"
  touch "$part/.ofakit-complete"
  mv "$part" "$root"
}

board_pids() {  # processes whose root directory is the running board (its sshd and every session under it)
  local real p
  [ -d "$board" ] || return 0
  real=$(readlink -f "$board")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$real" ] && echo "${p#/proc/}"
  done
  return 0
}

running() { [ -s "$board$pidfile" ] && kill -0 "$(cat "$board$pidfile")" 2>/dev/null; }

start() {
  build
  need_binfmt
  if running && [ -s "$state/devices.yaml" ]; then
    echo "board $arch: already running ($state/devices.yaml)" >&2
    return 0
  fi
  stop 2>/dev/null
  step "start a fresh board"
  mkdir -p "$layer/upper" "$layer/work" "$board" "$state"
  mount -t overlay "ofakit-board-$arch" -o "lowerdir=$root,upperdir=$layer/upper,workdir=$layer/work" "$board" \
    || cannot "cannot mount an overlay filesystem on $board"
  mount -t proc proc "$board/proc"
  mount --rbind /dev "$board/dev"
  cp /etc/resolv.conf "$board/etc/resolv.conf"
  mkdir -p "$board/run/sshd"
  ssh-keygen -q -t ed25519 -N '' -C "ofakit-board-$arch" -f "$state/id_ed25519.new" <<<y >/dev/null
  mv "$state/id_ed25519.new" "$state/id_ed25519"
  mv "$state/id_ed25519.new.pub" "$state/id_ed25519.pub"
  install -m 600 "$state/id_ed25519.pub" "$board/home/pi/.ssh/authorized_keys"
  chroot "$board" chown pi:pi /home/pi/.ssh/authorized_keys
  local port i
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  chroot "$board" /usr/sbin/sshd -p "$port" -o ListenAddress=127.0.0.1 -E /var/log/ofakit-sshd.log \
    || die "sshd failed to start, see $board/var/log/ofakit-sshd.log"
  for i in $(seq 600); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null && break
    [ "$i" = 600 ] && die "sshd does not answer on 127.0.0.1:$port, see $board/var/log/ofakit-sshd.log"
    sleep 0.2
  done
  cat > "$state/devices.yaml.tmp" <<YAML
# Emulated $arch board (Debian $suite under qemu-user) started by boards/board.sh; stop it: make board-$arch-stop
devices:
  $arch:
    host: 127.0.0.1
    port: $port
    user: pi
    key_file: $state/id_ed25519
    backend: $backend
    tags: [emulated]
YAML
  mv "$state/devices.yaml.tmp" "$state/devices.yaml"
  took "start sshd on 127.0.0.1:$port"
}

stop() {
  local pids i
  pids=$(board_pids)
  if [ -n "$pids" ]; then
    kill $pids 2>/dev/null || true
    for i in $(seq 50); do [ -z "$(board_pids)" ] && break; sleep 0.2; done
    pids=$(board_pids)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  fi
  if [ -f "$board/var/log/ofakit-sshd.log" ]; then   # kept for a look after the board is gone
    mkdir -p "$state"
    cp "$board/var/log/ofakit-sshd.log" "$state/sshd.log"
  fi
  umount_under "$board"
  rm -rf "$layer"
  rm -f "$state/devices.yaml"
  echo "board $arch: stopped" >&2
}

case $cmd in
  build) build ;;
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
