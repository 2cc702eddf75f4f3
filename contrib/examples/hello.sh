#!/usr/bin/env bash
# The README's main job: make a tiny image from busybox-static (no registry, no internet) as
# an OCI image layout, then run a container of it with lpmx-job, rootless.
#
#   cargo build --release && bash contrib/examples/hello.sh
#
# LPMX_JOB=path/to/lpmx-job runs a prebuilt binary instead of this checkout's build. The
# image stays in LPMX_HELLO_DIR (default ~/lpmx-hello/layout) and in your cache (LPMX_CACHE,
# else ~/.cache/lpmx), so the commands it prints at the end work on it.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
lpmx=${LPMX_JOB:-$here/target/release/lpmx-job}
[ -x "$lpmx" ] || lpmx=$here/target/debug/lpmx-job
[ -x "$lpmx" ] || { echo "hello.sh: build lpmx-job first: cargo build --release" >&2; exit 1; }

static() { # ldd fails on a static binary, saying so
    [ -x "$1" ] || return 1
    local out
    out=$(LC_ALL=C ldd "$1" 2>&1 || true)
    [[ $out == *"not a dynamic executable"* ]]
}
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ! static "$busybox"; then
    if static /bin/busybox; then
        busybox=/bin/busybox
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "hello.sh: installing busybox-static" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
        busybox=/bin/busybox
    else
        echo "hello.sh: needs a statically linked busybox (Debian: apt-get install busybox-static)" >&2
        exit 1
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/lpmx-hello.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
keep=${LPMX_HELLO_DIR:-$HOME/lpmx-hello/layout}

# The image's one layer: busybox and a few applets, an /etc with a root entry.
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in sh echo cat id ls uname env true; do ln -s busybox "$root/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
chmod 1777 "$root/tmp"

# An OCI image layout by hand: a gzip layer, a config, a manifest, an index.
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
blob() { # FILE -> prints "DIGEST SIZE" and stores it under its digest
    local d s
    d=$(sha256sum "$1" | cut -d' ' -f1)
    s=$(stat -c %s "$1")
    mv "$1" "$layout/blobs/sha256/$d"
    echo "$d $s"
}
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n "$work/layer.tar"
read -r layer_digest layer_size < <(blob "$work/layer.tar.gz")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh","-c","echo hello from a rootless container of $(uname -m)"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" >"$work/config.json"
read -r config_digest config_size < <(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"hello"}}]}' \
    "$manifest_digest" "$manifest_size" >"$layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
chmod -R a+rX "$work"
# Kept for the user to try more commands on: replaced whole, never half-written.
mkdir -p "$(dirname "$keep")"
rm -rf "$keep.new"
mv "$layout" "$keep.new"
rm -rf "$keep"
mv "$keep.new" "$keep"
layout=$keep

"$lpmx" doctor -q
set -x
"$lpmx" run "oci:$layout:hello"
"$lpmx" run "oci:$layout:hello" id
{ set +x; } 2>/dev/null
cat <<EOF

The image is in $layout and in your cache. Try next:
  $lpmx run oci:$layout:hello sh -c 'echo \$0 in \$(pwd); ls /bin'
  $lpmx images
  $lpmx expose oci:$layout:hello uname --as hello-uname && ~/.local/bin/hello-uname -a
EOF
