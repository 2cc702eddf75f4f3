# shellcheck shell=bash
# Step 5: fixture images built with real tools (busybox-static, umoci, GNU tar,
# skopeo) into the OCI layout $WORK/fixtures/oci, pushed to the plain HTTP
# registry. Sourced; needs REG_HTTP REG_TLS REG_AUTH REG_CA REG_CERT_DIR.
#
# Images (all also tagged in the OCI layout under the names in brackets):
#   lpmx/one:latest       [one]      busybox, 1 layer
#   lpmx/layers3:latest   [layers3]  the same base layer + 3 layers (whiteouts)
#   lpmx/multi:latest     [multi]    OCI index: linux/amd64, linux/arm64/v8, linux/ppc64le
#   lpmx/one-v2s2:latest             `one` as Docker schema 2
#   $WORK/fixtures/one.docker.tar    `one` as docker-archive (lpmx/one:latest)
# Also: $WORK/fixtures/fixtures.json (digests as served by the registry) and
#       $WORK/fixtures/rootfs/{one,layers3} (reference rootfs unpacked by umoci).

BUSYBOX_APPLETS=(sh ls cat id env echo true false sleep pwd touch mkdir rm stat readlink test kill wc head)
OCI_INDEX_MT=application/vnd.oci.image.index.v1+json
OCI_MANIFEST_MT=application/vnd.oci.image.manifest.v1+json
DOCKER_MANIFEST_MT=application/vnd.docker.distribution.manifest.v2+json

# populate_base ROOTFS -- the busybox userland shared by every fixture.
populate_base() {
    local r=$1 a
    install -d -m 755 "$r/bin" "$r/etc"
    install -d -m 1777 "$r/tmp"
    chmod 1777 "$r/tmp"
    install -m 755 /bin/busybox "$r/bin/busybox"
    for a in "${BUSYBOX_APPLETS[@]}"; do
        ln -s busybox "$r/bin/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
    printf 'root:x:0:\n' >"$r/etc/group"
    chmod 644 "$r/etc/passwd" "$r/etc/group"
}

# Descriptor helpers on the OCI layout.
oci_manifest_digest() { # TAG -> sha256:...
    jq -r --arg t "$1" '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)][0].digest // empty' "$OCI/index.json"
}
oci_blob() { # DIGEST -> path
    echo "$OCI/blobs/sha256/${1#sha256:}"
}
oci_manifest_file() { # TAG -> path of the manifest blob
    local d
    d=$(oci_manifest_digest "$1")
    [ -n "$d" ] || die "tag $1 not found in $OCI/index.json"
    oci_blob "$d"
}
# oci_put_blob FILE -> prints "sha256:HEX SIZE"; stores the blob.
oci_put_blob() {
    local hex size
    hex=$(sha256_of "$1")
    size=$(stat -c %s "$1")
    cp "$1" "$OCI/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}

# oci_patch_config TAG JQ_FILTER -- rewrites the config blob of TAG (umoci has
# no flag for e.g. the platform variant), then its manifest and index entry.
oci_patch_config() {
    local tag=$1 filter=$2 mf cfg tmp d s md ms
    mf=$(oci_manifest_file "$tag")
    cfg=$(oci_blob "$(jq -r .config.digest "$mf")")
    tmp=$WORK/tmp.json
    jq -c "$filter" "$cfg" >"$tmp"
    read -r d s < <(oci_put_blob "$tmp")
    jq -c --arg d "$d" --argjson s "$s" '.config.digest = $d | .config.size = $s' "$mf" >"$tmp"
    read -r md ms < <(oci_put_blob "$tmp")
    jq --arg t "$tag" --arg d "$md" --argjson s "$ms" \
        '.manifests |= map(if .annotations["org.opencontainers.image.ref.name"] == $t then .digest = $d | .size = $s else . end)' \
        "$OCI/index.json" >"$tmp"
    mv "$tmp" "$OCI/index.json"
}

# layer_of TAG N -> path of the N-th (0-based) layer blob of TAG
layer_of() {
    oci_blob "$(jq -r --argjson n "$2" '.layers[$n].digest' "$(oci_manifest_file "$1")")"
}

# expect_in_layer BLOB ERE DESCRIPTION -- fail unless `tar -tzvf BLOB` has a matching line.
expect_in_layer() {
    local listing
    listing=$(tar -tzvf "$1")
    if ! grep -Eq -- "$2" <<<"$listing"; then
        echo "---- tar -tzvf $1 ----" >&2
        echo "$listing" >&2
        die "fixture check failed: $3 (no line matching /$2/)"
    fi
}

push() { # SRC DEST [skopeo copy options...]
    local src=$1 dst=$2
    shift 2
    quiet skopeo --insecure-policy copy --quiet --dest-tls-verify=false "$@" "$src" "$dst"
}

build_fixtures() {
    local F=$WORK/fixtures B=$WORK/fixtures/build
    OCI=$F/oci
    mkdir -p "$F" "$B"
    quiet umoci init --layout "$OCI"

    # --- base layer (shared by one and layers3: same blob digest) ---
    quiet umoci new --image "$OCI:base"
    quiet umoci unpack --rootless --image "$OCI:base" "$B/base"
    populate_base "$B/base/rootfs"
    quiet umoci repack --image "$OCI:base" "$B/base"

    # --- lpmx/one ---
    quiet umoci config --image "$OCI:base" --tag one \
        --config.cmd /bin/sh --config.cmd -c --config.cmd "echo hello from one" \
        --config.env PATH=/usr/bin:/bin --config.env FIXTURE=one \
        --config.workingdir / --config.label org.lpmx.fixture=one \
        --history.created_by "lpmx test fixture one"

    # --- lpmx/mounts: base + every default mount point (as images built for ch-run
    # have), so that `run` can use the image tree itself as the root ---
    quiet umoci unpack --rootless --image "$OCI:base" "$B/mounts"
    install -d -m 755 "$B/mounts/rootfs/proc" "$B/mounts/rootfs/sys" "$B/mounts/rootfs/dev" \
        "$B/mounts/rootfs/opt"
    : >"$B/mounts/rootfs/etc/hosts"
    : >"$B/mounts/rootfs/etc/resolv.conf"
    chmod 644 "$B/mounts/rootfs/etc/hosts" "$B/mounts/rootfs/etc/resolv.conf"
    quiet umoci repack --image "$OCI:mounts" "$B/mounts"
    quiet umoci config --image "$OCI:mounts" \
        --config.cmd /bin/sh --config.env PATH=/usr/bin:/bin --config.env FIXTURE=mounts \
        --config.workingdir / --history.created_by "lpmx test fixture mounts"

    # --- lpmx/layers3: base + L1 (files, hardlink, symlinks) + L2 (delete,
    # override) + L3 (opaque dir, hand-made tar) ---
    local r=$B/l1/rootfs
    quiet umoci unpack --rootless --image "$OCI:base" "$B/l1"
    printf 'gone\n' >"$r/etc/gone.txt"
    install -d -m 755 "$r/data" "$r/data/old"
    printf 'a\n' >"$r/data/old/a.txt"
    printf 'b\n' >"$r/data/old/b.txt"
    printf 'v1\n' >"$r/data/keep.txt"
    printf 'hard\n' >"$r/data/hard1"
    ln "$r/data/hard1" "$r/data/hard2"
    ln -s keep.txt "$r/data/rel"
    ln -s /data/keep.txt "$r/data/abs"
    quiet umoci repack --image "$OCI:layers3" "$B/l1"

    # umoci 0.4.7 does not move a bundle forward after repack: unpack anew.
    r=$B/l2/rootfs
    quiet umoci unpack --rootless --image "$OCI:layers3" "$B/l2"
    rm "$r/etc/gone.txt"
    printf 'v2\n' >"$r/data/keep.txt"
    touch -d '2001-01-01 00:00:00' "$r/data/keep.txt"
    quiet umoci repack --image "$OCI:layers3" "$B/l2"

    # umoci never writes opaque whiteouts: build layer 3 by hand.
    local s=$B/l3
    install -d -m 755 "$s/data" "$s/data/old"
    : >"$s/data/old/.wh..wh..opq"
    printf 'new\n' >"$s/data/old/new.txt"
    chmod 644 "$s/data/old/.wh..wh..opq" "$s/data/old/new.txt"
    tar --numeric-owner --owner=0 --group=0 --no-recursion --format=gnu \
        -C "$s" -cf "$B/l3.tar" data/ data/old/ data/old/.wh..wh..opq data/old/new.txt
    quiet umoci raw add-layer --image "$OCI:layers3" \
        --history.created_by "lpmx test fixture: opaque whiteout of /data/old" "$B/l3.tar"
    quiet umoci config --image "$OCI:layers3" \
        --config.cmd /bin/cat --config.cmd /data/keep.txt \
        --config.env PATH=/usr/bin:/bin --config.env FIXTURE=layers3 \
        --config.workingdir / --config.label org.lpmx.fixture=layers3 \
        --history.created_by "lpmx test fixture layers3"
    check_layers3

    # --- lpmx/multi: one single-layer image per platform + a hand-written index ---
    local arch
    for arch in amd64 arm64 ppc64le; do
        quiet umoci new --image "$OCI:multi-$arch"
        quiet umoci unpack --rootless --image "$OCI:multi-$arch" "$B/multi-$arch"
        populate_base "$B/multi-$arch/rootfs"
        printf '%s\n' "$arch" >"$B/multi-$arch/rootfs/arch"
        chmod 644 "$B/multi-$arch/rootfs/arch"
        quiet umoci repack --image "$OCI:multi-$arch" "$B/multi-$arch"
        quiet umoci config --image "$OCI:multi-$arch" --architecture "$arch" --os linux \
            --config.cmd /bin/cat --config.cmd /arch \
            --config.env PATH=/usr/bin:/bin --config.env "FIXTURE=multi-$arch" \
            --config.workingdir / --config.label org.lpmx.fixture=multi \
            --history.created_by "lpmx test fixture multi $arch"
    done
    oci_patch_config multi-arm64 '.variant = "v8"'
    write_multi_index

    # --- push ---
    push "oci:$OCI:one" "docker://$REG_HTTP/lpmx/one:latest"
    push "oci:$OCI:layers3" "docker://$REG_HTTP/lpmx/layers3:latest"
    push "oci:$OCI:mounts" "docker://$REG_HTTP/lpmx/mounts:latest"
    push "oci:$OCI:multi" "docker://$REG_HTTP/lpmx/multi:latest" --all
    push "oci:$OCI:one" "docker://$REG_HTTP/lpmx/one-v2s2:latest" --format v2s2
    rm -f "$F/one.docker.tar"
    quiet skopeo --insecure-policy copy --quiet "oci:$OCI:one" "docker-archive:$F/one.docker.tar:lpmx/one:latest"

    # Reference root filesystems as unpacked by umoci (for comparisons).
    mkdir -p "$F/rootfs"
    quiet umoci unpack --rootless --image "$OCI:one" "$B/ref-one"
    quiet umoci unpack --rootless --image "$OCI:layers3" "$B/ref-layers3"
    mv "$B/ref-one/rootfs" "$F/rootfs/one"
    mv "$B/ref-layers3/rootfs" "$F/rootfs/layers3"
    rm -rf "$B"

    check_registry_fixtures
    write_fixtures_json
    chmod -R a+rX "$F"
}

check_layers3() {
    local mf n
    mf=$(oci_manifest_file layers3)
    n=$(jq '.layers | length' "$mf")
    [ "$n" = 4 ] || die "layers3 has $n layers, want 4 (base + 3)"
    [ "$(jq -r '.layers[0].digest' "$mf")" = "$(jq -r '.layers[0].digest' "$(oci_manifest_file one)")" ] ||
        die "layers3 does not share its base layer with one"
    local l1 l2 l3
    l1=$(layer_of layers3 1)
    l2=$(layer_of layers3 2)
    l3=$(layer_of layers3 3)
    expect_in_layer "$l1" '^h.* data/hard2 link to data/hard1$' "layer 1 hardlink"
    expect_in_layer "$l1" '^l.* data/rel -> keep\.txt$' "layer 1 relative symlink"
    expect_in_layer "$l1" '^l.* data/abs -> /data/keep\.txt$' "layer 1 absolute symlink"
    expect_in_layer "$l1" ' etc/gone\.txt$' "layer 1 etc/gone.txt"
    expect_in_layer "$l1" ' data/old/a\.txt$' "layer 1 data/old/a.txt"
    expect_in_layer "$l2" ' etc/\.wh\.gone\.txt$' "layer 2 whiteout of etc/gone.txt"
    expect_in_layer "$l2" '^-.* data/keep\.txt$' "layer 2 data/keep.txt override"
    expect_in_layer "$l3" ' data/old/\.wh\.\.wh\.\.opq$' "layer 3 opaque whiteout"
    expect_in_layer "$l3" ' data/old/new\.txt$' "layer 3 data/old/new.txt"
    expect_in_layer "$l3" '^-.* 0/0 ' "layer 3 numeric owner 0/0"
    info "layers3: whiteout etc/.wh.gone.txt and opaque data/old/.wh..wh..opq present"
}

write_multi_index() {
    local arch entries='[]' d s
    for arch in amd64 arm64 ppc64le; do
        d=$(oci_manifest_digest "multi-$arch")
        s=$(stat -c %s "$(oci_blob "$d")")
        entries=$(jq -c --arg d "$d" --argjson s "$s" --arg a "$arch" --arg mt "$OCI_MANIFEST_MT" '
            . + [{mediaType: $mt, digest: $d, size: $s,
                  platform: ({architecture: $a, os: "linux"} + (if $a == "arm64" then {variant: "v8"} else {} end))}]' <<<"$entries")
    done
    jq -nc --arg mt "$OCI_INDEX_MT" --argjson m "$entries" \
        '{schemaVersion: 2, mediaType: $mt, manifests: $m}' >"$WORK/index.json"
    read -r d s < <(oci_put_blob "$WORK/index.json")
    rm -f "$WORK/index.json"
    jq --arg mt "$OCI_INDEX_MT" --arg d "$d" --argjson s "$s" \
        '.manifests += [{mediaType: $mt, digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": "multi"}}]' \
        "$OCI/index.json" >"$WORK/tmp.json"
    mv "$WORK/tmp.json" "$OCI/index.json"
}

# reg_get BASEURL PATH ACCEPT OUT [auth] -- GET against a registry, fail
# unless 200. The response Content-Type is left in $REG_CT.
reg_get() {
    local base=$1 path=$2 accept=$3 out=$4 auth=${5:-} code ctf=$WORK/ct.txt
    if [ -n "$auth" ]; then
        code=$(HTTP_CT_OUT=$ctf HTTP_CA=$REG_CA HTTP_ACCEPT=$accept HTTP_USER=$REG_USER HTTP_PASSWORD=$REG_PASSWORD http_get "$base$path" "$out")
    else
        code=$(HTTP_CT_OUT=$ctf HTTP_CA=$REG_CA HTTP_ACCEPT=$accept http_get "$base$path" "$out")
    fi
    [ "$code" = 200 ] || die "GET $base$path returned HTTP $code"
    REG_CT=$(cat "$ctf")
    rm -f "$ctf"
}

check_registry_fixtures() {
    local t=$WORK/check.json mt
    # multi: an OCI index with three platforms
    reg_get "http://$REG_HTTP" /v2/lpmx/multi/manifests/latest "$OCI_INDEX_MT" "$t"
    mt=$(jq -r .mediaType "$t")
    [ "$mt" = "$OCI_INDEX_MT" ] || die "lpmx/multi has mediaType $mt, want $OCI_INDEX_MT"
    [ "$REG_CT" = "$OCI_INDEX_MT" ] || die "lpmx/multi served as $REG_CT, want $OCI_INDEX_MT"
    [ "$(jq '.manifests | length' "$t")" = 3 ] || die "lpmx/multi index does not have 3 manifests"
    [ "$(jq -r '[.manifests[].platform | .architecture + (if .variant then "/" + .variant else "" end)] | sort | join(",")' "$t")" = "amd64,arm64/v8,ppc64le" ] ||
        die "lpmx/multi platforms wrong: $(jq -c '[.manifests[].platform]' "$t")"
    # one-v2s2: Docker schema 2
    reg_get "http://$REG_HTTP" /v2/lpmx/one-v2s2/manifests/latest "$DOCKER_MANIFEST_MT" "$t"
    mt=$(jq -r .mediaType "$t")
    [ "$mt" = "$DOCKER_MANIFEST_MT" ] || die "lpmx/one-v2s2 has mediaType $mt, want $DOCKER_MANIFEST_MT"
    [ "$REG_CT" = "$DOCKER_MANIFEST_MT" ] || die "lpmx/one-v2s2 served as $REG_CT, want $DOCKER_MANIFEST_MT"
    # one / layers3: OCI manifests (umoci writes no "mediaType" field in the
    # manifest: the registry's Content-Type says what it is), also reachable
    # over TLS and TLS+auth
    local repo
    for repo in one layers3; do
        reg_get "http://$REG_HTTP" "/v2/lpmx/$repo/manifests/latest" "$OCI_MANIFEST_MT" "$t"
        [ "$REG_CT" = "$OCI_MANIFEST_MT" ] || die "lpmx/$repo served as $REG_CT, want $OCI_MANIFEST_MT"
        reg_get "https://$REG_TLS" "/v2/lpmx/$repo/manifests/latest" "$OCI_MANIFEST_MT" "$t"
        reg_get "https://$REG_AUTH" "/v2/lpmx/$repo/manifests/latest" "$OCI_MANIFEST_MT" "$t" auth
    done
    # skopeo reads them back through each registry
    local out
    out=$(skopeo inspect --tls-verify=false "docker://$REG_HTTP/lpmx/one:latest" 2>&1) || die "skopeo inspect lpmx/one: $out"
    [ "$(jq -r '.Labels["org.lpmx.fixture"]' <<<"$out")" = one ] || die "lpmx/one label missing: $out"
    out=$(skopeo inspect --cert-dir "$REG_CERT_DIR" "docker://$REG_TLS/lpmx/layers3:latest" 2>&1) || die "skopeo inspect over TLS: $out"
    [ "$(jq '.Layers | length' <<<"$out")" = 4 ] || die "lpmx/layers3 over TLS: not 4 layers"
    out=$(skopeo inspect --cert-dir "$REG_CERT_DIR" --creds "$REG_USER:$REG_PASSWORD" --override-arch arm64 --override-variant v8 \
        "docker://$REG_AUTH/lpmx/multi:latest" 2>&1) || die "skopeo inspect over TLS+auth: $out"
    [ "$(jq -r .Architecture <<<"$out")" = arm64 ] || die "lpmx/multi arm64 entry: $out"
    if skopeo inspect --cert-dir "$REG_CERT_DIR" "docker://$REG_AUTH/lpmx/one:latest" >/dev/null 2>&1; then
        die "auth registry served lpmx/one without credentials"
    fi
    # The access log records blob GETs in Apache combined format.
    local cfg
    cfg=$(jq -r .config.digest "$(oci_manifest_file one)")
    reg_get "http://$REG_HTTP" "/v2/lpmx/one/blobs/$cfg" "*/*" "$t"
    grep -q "\"GET /v2/lpmx/one/blobs/$cfg HTTP/1.1\" 200 " "$WORK/logs/registry-http.log" ||
        die "no access-log line for the blob GET in $WORK/logs/registry-http.log"
    rm -f "$t"
    info "registry fixtures verified (multi index, v2s2, TLS, auth, access log)"
}

# fixtures.json: what the registry serves, for tests to compare against.
write_fixtures_json() {
    local t=$WORK/fx.json out=$WORK/fixtures/fixtures.json all='{}' repo mt body d
    for repo in one layers3 multi one-v2s2; do
        case $repo in
        multi) mt=$OCI_INDEX_MT ;;
        one-v2s2) mt=$DOCKER_MANIFEST_MT ;;
        *) mt=$OCI_MANIFEST_MT ;;
        esac
        reg_get "http://$REG_HTTP" "/v2/lpmx/$repo/manifests/latest" "$mt" "$t"
        d=sha256:$(sha256_of "$t")
        body=$(jq -c --arg r "lpmx/$repo" --arg d "$d" --arg ct "$REG_CT" '{repo: $r, tag: "latest", digest: $d, mediaType: $ct,
            config: (.config.digest // null), layers: ([.layers[]?.digest]),
            manifests: ([.manifests[]? | {digest, platform}])}' "$t")
        all=$(jq -c --arg k "$repo" --argjson v "$body" '. + {($k): $v}' <<<"$all")
    done
    jq . <<<"$all" >"$out"
    rm -f "$t"
}
