# shellcheck shell=bash
# Variables set here (BENCH_HOME, WORK, SHORT, REG_PID...) are used by the scripts that source it.
# shellcheck disable=SC2034
# What the scripts of contrib/bench share: the ordinary bench user, the temporary work area
# with its cleanup, and (run.sh, srun.sh, bridge.sh) the busybox image, the TLS registry that
# serves it and the wait for a quiet machine. Sourced after the script has set BENCH_USER and
# defined log and die.

# Creates BENCH_USER (with a subordinate id range for rootless podman) and sets BENCH_HOME.
bench_user() {
    if ! id "$BENCH_USER" >/dev/null 2>&1; then
        log "creating user $BENCH_USER"
        useradd -m -s /bin/bash "$BENCH_USER"
    fi
    BENCH_HOME=$(getent passwd "$BENCH_USER" | cut -d: -f6)
    # useradd adds a subordinate id range only if the files already exist.
    local f start
    for f in /etc/subuid /etc/subgid; do
        touch "$f"
        grep -q "^$BENCH_USER:" "$f" && continue
        start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
        echo "$BENCH_USER:$start:65536" >>"$f"
    done
}

# Makes WORK and SHORT (podman refuses a --runroot longer than 50 characters, so those live
# under a short path starting with SHORT_PREFIX) and removes them at exit, with the registry
# (REG_PID) and the rootless podman pause process. CLEANUP_NOTE, if set, is logged first.
bench_workdirs() {  # SHORT_PREFIX
    WORK=$(mktemp -d /var/tmp/lpmx-bench-run.XXXXXX)
    chmod 755 "$WORK"
    SHORT=$(mktemp -d "$1.XXXXXX")
    chmod 755 "$SHORT"
    REG_PID=
    PAUSE_PIDFILE=$WORK/xdg-run/libpod/tmp/pause.pid
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# A script with services of its own (srun.sh: Slurm) defines bench_stop_services: it runs
# first.
bench_cleanup() {
    local rc=$?
    set +e
    if declare -F bench_stop_services >/dev/null; then bench_stop_services; fi
    if [ -n "$REG_PID" ]; then
        kill -TERM "$REG_PID" 2>/dev/null
        wait "$REG_PID" 2>/dev/null
    fi
    # Rootless podman leaves a pause process holding its user namespace; end that one only.
    if [ -f "$PAUSE_PIDFILE" ]; then
        kill -TERM "$(cat "$PAUSE_PIDFILE")" 2>/dev/null
    fi
    [ -z "${CLEANUP_NOTE:-}" ] || log "$CLEANUP_NOTE"
    rm -rf "$WORK" "$SHORT"
    exit "$rc"
}

# Runs a set-up command quietly; its output only matters when it fails.
q() { "$@" >/dev/null 2>&1 || die "failed: $*"; }

# True when FILE is a statically linked executable (ldd fails on one, saying so).
static_bin() {
    local o
    [ -x "$1" ] || return 1
    o=$(LC_ALL=C ldd "$1" 2>&1 || true)
    [[ $o == *"not a dynamic executable"* ]]
}

# The busybox image: busybox-static alone in one layer, with what ch-run binds over
# (/etc/passwd, /etc/group, /etc/hosts, /etc/resolv.conf) and the mount-point directories,
# as the OCI layout IMGDIR/layout, tag "bb". Sets LAYOUT, MANIFEST_DIGEST, LAYER_BYTES.
bench_busybox_image() {  # IMGDIR
    local imgdir=$1 r=$1/rootfs a
    LAYOUT=$imgdir/layout
    static_bin /bin/busybox || die "/bin/busybox is not the static one (busybox-static): the image needs it"
    mkdir -p "$r"/{bin,etc,proc,sys,dev,tmp,home,root,mnt,run,var/tmp,usr/bin}
    cp /bin/busybox "$r/bin/busybox"
    for a in sh true sleep echo cat id ls env ps uname; do ln -s busybox "$r/bin/$a"; done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
    echo 'root:x:0:' >"$r/etc/group"
    : >"$r/etc/hosts"; : >"$r/etc/resolv.conf"
    chmod 1777 "$r/tmp" "$r/var/tmp"
    tar -C "$r" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$imgdir/layer.tar" .
    q umoci init --layout "$LAYOUT"
    q umoci new --image "$LAYOUT:bb"
    q umoci raw add-layer --image "$LAYOUT:bb" --history.created_by "busybox-static" "$imgdir/layer.tar"
    q umoci config --image "$LAYOUT:bb" --config.cmd /bin/sh \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    q umoci gc --layout "$LAYOUT"
    rm -rf "$r" "$imgdir/layer.tar"
    chmod -R a+rX "$imgdir"
    MANIFEST_DIGEST=$(jq -r '.manifests[0].digest' "$LAYOUT/index.json")
    LAYER_BYTES=$(jq '[.layers[].size] | add' "$LAYOUT/blobs/sha256/${MANIFEST_DIGEST#sha256:}")
}

# docker-registry on a free loopback port with TLS: a private CA and a server certificate it
# signs (rustls refuses a self-signed CA used as the server certificate). Stopped by
# bench_cleanup. Sets CERTS (ca.pem, and ca.d/ for skopeo and podman), REG (127.0.0.1:PORT),
# REG_PID and REG_LOG (its access log shows whether a timed call reached the registry).
bench_registry() {  # [no-access-log]
    local port _
    CERTS=$WORK/certs
    mkdir -p "$CERTS/ca.d" "$WORK/registry" "$WORK/logs"
    q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" \
        -subj "/CN=lpmx bench CA" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
    q openssl req -newkey rsa:2048 -nodes -keyout "$CERTS/server.key" -out "$CERTS/server.csr" -subj "/CN=127.0.0.1"
    printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
        extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1,DNS:localhost >"$CERTS/server.ext"
    q openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
        -CAcreateserial -days 2 -out "$CERTS/server.pem" -extfile "$CERTS/server.ext"
    cp "$CERTS/ca.pem" "$CERTS/ca.d/ca.crt"     # containers-style cert dir for skopeo and podman
    chmod 644 "$CERTS/ca.pem" "$CERTS/ca.d/ca.crt"
    port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    REG=127.0.0.1:$port
    local access=()
    [ "${1:-}" = no-access-log ] && access=('  accesslog:' '    disabled: true')
    printf '%s\n' 'version: 0.1' 'log:' '  level: warn' "${access[@]}" 'storage:' '  filesystem:' \
        "    rootdirectory: $WORK/registry/storage" 'http:' "  addr: $REG" '  tls:' \
        "    certificate: $CERTS/server.pem" "    key: $CERTS/server.key" >"$WORK/registry/config.yml"
    REG_LOG=$WORK/logs/registry.log
    docker-registry serve "$WORK/registry/config.yml" </dev/null >"$REG_LOG" 2>&1 &
    REG_PID=$!
    for _ in $(seq 1 100); do
        kill -0 "$REG_PID" 2>/dev/null ||
            { cat "$REG_LOG" >&2; die "docker-registry on $REG exited (config $WORK/registry/config.yml)"; }
        [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CERTS/ca.pem" "https://$REG/v2/")" = 200 ] && return 0
        sleep 0.1
    done
    die "docker-registry did not answer on https://$REG/v2/ within 10s (log $REG_LOG)"
}

# Installs, with apt-get, the package of each CMD:PACKAGE whose command is missing, plus
# busybox-static when /bin/busybox is not the static one (the bench images use it).
bench_install() {  # CMD:PACKAGE...
    local pc need=()
    for pc in "$@"; do
        command -v "${pc%%:*}" >/dev/null 2>&1 || need+=("${pc#*:}")
    done
    static_bin /bin/busybox || need+=(busybox-static)
    if [ "${#need[@]}" -gt 0 ]; then
        log "installing: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# The bench user's own area under WORK: U (its cwd and TMPDIR), XDG_RUNTIME_DIR, and a
# copy of LPMX_BIN it can run, as LPMX. Extra directories to hand over may follow.
bench_user_area() {  # [DIR...]
    U=$WORK/u
    mkdir -p "$U/tmp" "$U/cwd" "$WORK/xdg-run" "$WORK/bin" "$WORK/logs"
    chown "$BENCH_USER:" "$U" "$U/tmp" "$U/cwd" "$WORK/xdg-run" "$@"
    chmod 700 "$WORK/xdg-run"
    install -m 755 "$LPMX_BIN" "$WORK/bin/lpmx-job"
    LPMX=$WORK/bin/lpmx-job
}

# Pushes the layout's tag bb to the registry as REPO:latest and writes an lpmx-job config
# naming the CA into CFG (owned by the bench user). Sets IMAGE.
bench_push() {  # REPO CFG
    IMAGE=$REG/$1:latest
    log "registry on https://$REG; pushing $IMAGE"
    skopeo copy -q --dest-cert-dir "$CERTS/ca.d" "oci:$LAYOUT:bb" "docker://$IMAGE" >"$WORK/logs/push.log" 2>&1 ||
        { cat "$WORK/logs/push.log" >&2; die "pushing oci:$LAYOUT:bb to $IMAGE failed"; }
    printf 'registries:\n  "%s":\n    ca: %s\n' "$REG" "$CERTS/ca.pem" >"$2"
    chown "$BENCH_USER:" "$2"
}

# The machine may be shared (someone's build or test suite). While this script sleeps, any
# busy CPU is someone else's: wait (up to QUIET_MAX s, default 300) for a 5 s window under
# 10 % busy. Sets OTHER_BUSY (% busy in the last window) and waited (s).
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
bench_wait_quiet() {
    local b0 t0 b1 t1 max=${QUIET_MAX:-300}
    waited=0
    while :; do
        read -r b0 t0 < <(busy_jiffies); sleep 5; read -r b1 t1 < <(busy_jiffies)
        OTHER_BUSY=$(( (b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
        [ "$OTHER_BUSY" -lt 10 ] && break
        if [ "$waited" -ge "$max" ]; then
            log "the machine is still ${OTHER_BUSY}% busy with other work after ${waited}s; measuring anyway"
            break
        fi
        [ "$waited" -gt 0 ] || log "other work keeps the CPUs ${OTHER_BUSY}% busy; waiting up to ${max}s for quiet"
        waited=$((waited + 5))
    done
}

# Busy CPU-seconds of the whole machine since BUSY_BEFORE (busy jiffies from busy_jiffies).
busy_seconds_since() {  # BUSY_BEFORE
    awk -v b="$1" -v hz="$(getconf CLK_TCK)" '/^cpu /{printf "%.0f", ($2+$3+$4+$7+$8-b)/hz}' /proc/stat
}

# One line about the machine, for the reports.
bench_machine() {
    printf '%s CPUs (%s), %s RAM, kernel %s, %s' "$(nproc)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
        "$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)" "$(uname -r)" \
        "$(sed -n 's/^PRETTY_NAME="\(.*\)"$/\1/p' /etc/os-release)"
}
