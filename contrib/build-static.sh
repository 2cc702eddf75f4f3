#!/usr/bin/env bash
# Builds one statically linked lpmx-job (glibc, crt-static) for grid worker nodes, where
# nothing is installed and no loader or C library of a known version can be assumed.
#
#   bash contrib/build-static.sh
#
# Prints the executable's path, then one line `SHA256  PATH` (as sha256sum prints it: the
# value integrations/grid/bootstrap.sh checks). Honours CARGO_TARGET_DIR and CARGO.
#
# Why glibc crt-static and not musl: only the x86_64-unknown-linux-gnu target is installed
# here. The explicit --target matters: with it, RUSTFLAGS apply to the target only, so build
# scripts and proc-macros stay dynamic executables of the build host (crt-static ones would
# fail to load proc-macros). glibc's static NSS caveat: getpwuid/getaddrinfo would dlopen
# NSS modules; see integrations/grid/README.md for what that means here.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=x86_64-unknown-linux-gnu
CARGO=${CARGO:-cargo}

die() {
    echo "build-static.sh: error: $*" >&2
    exit 1
}

command -v "$CARGO" >/dev/null 2>&1 || die "cargo not found on PATH ($PATH) on $(hostname)"

log=$(mktemp "${TMPDIR:-/tmp}/lpmx-build-static.XXXXXX")
trap 'rm -f "$log"' EXIT

# Appended, so flags a caller set (e.g. -C target-cpu) still apply.
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
if ! (cd "$REPO" && "$CARGO" build --release --locked --target "$TARGET" --bin lpmx-job \
    --message-format=json-render-diagnostics >"$log"); then
    die "cargo build --release --target $TARGET failed in $REPO on $(hostname)"
fi

# cargo's own report names the executable, wherever the target directory is.
bin=$(grep '"reason":"compiler-artifact"' "$log" | grep '"name":"lpmx-job","src_path"' |
    grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    die "cargo reported no lpmx-job executable for $TARGET (in $REPO on $(hostname))"
fi

# A dynamic executable has a PT_INTERP program header; `ldd` (always there with glibc) tells.
ldd_out=$(ldd "$bin" 2>&1 || true)
case $ldd_out in
*"statically linked"* | *"not a dynamic executable"*) ;;
*) die "$bin is not statically linked on $(hostname); ldd says: $ldd_out" ;;
esac
"$bin" --version >/dev/null || die "$bin does not run on $(hostname)"

echo "static lpmx-job: $bin"
sha256sum "$bin"
