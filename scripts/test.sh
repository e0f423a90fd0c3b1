#!/usr/bin/env bash
# Runs Skiff's whole test suite on a fresh Debian machine with Rust: installs what the tests
# need (as root, via apt), checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build artefacts live outside the checkout so repeated runs on one machine are fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/skiff-target}"
export CARGO_TERM_COLOR=never
# CI builds once from a clean checkout: incremental state would only take disk space.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# A shared machine's disk fills up: when less than 15 GiB is free, drop the target directory's
# incremental state and then the test binaries (dependencies stay, they are the slow part).
free_gib() { df -P --block-size=1G "$(dirname "$CARGO_TARGET_DIR")" | awk 'NR==2 {print $4}'; }
if [ -d "$CARGO_TARGET_DIR" ] && [ "$(free_gib)" -lt 15 ]; then
  echo "low on disk ($(free_gib) GiB free): pruning $CARGO_TARGET_DIR"
  rm -rf "$CARGO_TARGET_DIR"/debug/incremental
  if [ "$(free_gib)" -lt 15 ]; then
    find "$CARGO_TARGET_DIR"/debug/deps -maxdepth 1 -type f -perm -u+x -delete
  fi
fi

# scripts/nginx-image.sh (examples/nginx.yaml's image) fetches Debian's nginx package with
# `apt-get download`, which needs package lists that know it.
if ! apt-cache show nginx >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
fi
need_pkgs=()
command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
# Image tests: a real registry on loopback, and busybox-static to build test images from.
command -v docker-registry >/dev/null 2>&1 || need_pkgs+=(docker-registry)
test -x /bin/busybox || need_pkgs+=(busybox-static)
# Agent tests bring up loopback in the namespaces they make.
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
# hostPort is programmed with nftables' `nft`.
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
# Container tests: the conformance suite runs on the built-in runtime and on runc.
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
# The cgroup v2 VM test (containers.rs): qemu without its GUI and firmware extras (it boots
# Debian's kernel directly, fetched by the test itself with `apt-get download`).
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: qemu-system-x86"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need_pkgs[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "warning: missing ${need_pkgs[*]} and cannot apt-get install them" >&2
  fi
fi

# The kubectl suite runs the real kubectl binaries shipped beside `kubectl` (1.27 … 1.33).
kdir="$(dirname "$(readlink -f "$(command -v kubectl)")")"
for v in 1.27 1.33; do
  [ -x "$kdir/kubectl.$v" ] || { echo "kubectl.$v not found in $kdir: the kubectl suite needs it" >&2; exit 1; }
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads="${SKIFF_TEST_THREADS:-4}"
