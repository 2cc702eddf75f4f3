#!/usr/bin/env bash
# Cold-pull benchmark: lpmx-job against Charliecloud, skopeo+umoci and rootless podman.
#
# Run as root:   bash contrib/bench/pull.sh          (ROUNDS=N to change the round count)
# See contrib/bench/README.md for what is measured and how to read the table.
#
# Environment:
#   ROUNDS=3             rounds; every tool pulls once per round into an empty store
#   LPMX_BIN=PATH        lpmx-job binary (default /tmp/bench-target/release/lpmx-job,
#                        built with CARGO_TARGET_DIR=/tmp/bench-target cargo build --release)
#   BENCH_CACHE=DIR      where the built image is kept between runs (/var/tmp/lpmx-bench)
#   BENCH_USER=NAME      the ordinary user every measured command runs as (lpmxbench)
#   RESULTS=FILE         markdown output (contrib/bench/results-pull.md)
#   TOOLS="lpmx charliecloud skopeo-umoci podman"   subset / order of tools
#   DIAG=0               skip the decompression / extraction diagnostics
#   PERF=0               skip the perf profile among the diagnostics
#   SETTLE=35            seconds of quiet before measuring (see "Settle" below)
#   QUIET_MAX=300        longest wait for other work on the machine to stop
#   LPMX_REV=TEXT        what LPMX_BIN was built from, for the report (default: git HEAD of
#                        this checkout, flagged if src/ has uncommitted changes)
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-3}
BENCH_CACHE=${BENCH_CACHE:-/var/tmp/lpmx-bench}
BENCH_USER=${BENCH_USER:-lpmxbench}
LPMX_BIN=${LPMX_BIN:-/tmp/bench-target/release/lpmx-job}
RESULTS=${RESULTS:-$HERE/results-pull.md}
TOOLS=${TOOLS:-lpmx charliecloud skopeo-umoci podman}
DIAG=${DIAG:-1}
# Only the system's own tools: no pyenv python, no /usr/local git (which would switch
# ch-image's build cache on and make its pull depend on this machine's extras).
SYS_PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH=$SYS_PATH

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages, creates $BENCH_USER and runs tools as that user)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[ -x "$LPMX_BIN" ] || die "no lpmx-job at $LPMX_BIN; build it: CARGO_TARGET_DIR=/tmp/bench-target cargo build --release --manifest-path $REPO/Cargo.toml"

# ---------------------------------------------------------------- 1. packages, user
need_pkgs=()
for pc in docker-registry:docker-registry skopeo:skopeo umoci:umoci ch-image:charliecloud \
    podman:podman newuidmap:uidmap mmdebstrap:mmdebstrap openssl:openssl \
    python3:python3 jq:jq curl:curl; do
    command -v "${pc%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pc#*:}")
done
[ -x /usr/bin/time ] || need_pkgs+=(time)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
# ch-image imports these; the charliecloud package pulls them in, but check anyway.
/usr/bin/python3 -c 'import lark, requests' 2>/dev/null || need_pkgs+=(python3-lark python3-requests)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing: ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if ! command -v hyperfine >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null 2>&1 || true
fi

# shellcheck source=contrib/bench/common.sh
source "$HERE/common.sh"
bench_user
CLEANUP_NOTE="removing the temporary stores (about 150,000 files: can take minutes here)"
bench_workdirs /tmp/lpb

U=$WORK/u               # everything the bench user writes lives under here
mkdir -p "$U" "$WORK/xdg-run" "$WORK/bin" "$WORK/logs"
chown "$BENCH_USER:" "$U" "$WORK/xdg-run" "$SHORT"
chmod 700 "$WORK/xdg-run"
install -m 755 "$LPMX_BIN" "$WORK/bin/lpmx-job"

# Run as the bench user with a clean environment. Extra VAR=value pairs go before the command.
AS_USER=(runuser -u "$BENCH_USER" -- env -i
    HOME="$BENCH_HOME" USER="$BENCH_USER" LOGNAME="$BENCH_USER"
    PATH="$WORK/bin:$SYS_PATH" LANG=C.UTF-8
    XDG_RUNTIME_DIR="$WORK/xdg-run" TMPDIR="$U/tmp")
as_user() { "${AS_USER[@]}" "$@"; }

# ---------------------------------------------------------------- 2. the image
IMG=$BENCH_CACHE/oci        # OCI layout, tag "mpi"
META=$BENCH_CACHE/meta.env
build_image() {
    local b=$BENCH_CACHE/build
    rm -rf "$b" "$IMG" "$META"
    mkdir -p "$b/rootfs"
    log "mmdebstrap: bookworm minbase + openmpi-bin libopenmpi3 python3"
    local t0=$SECONDS
    mmdebstrap --quiet --variant=minbase --include=openmpi-bin,libopenmpi3,python3 \
        bookworm "$b/rootfs.tar" >"$b/mmdebstrap.log" 2>&1 ||
        { tail -20 "$b/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    log "mmdebstrap took $((SECONDS - t0)) s; splitting into 3 layers"
    tar -C "$b/rootfs" --numeric-owner -xpf "$b/rootfs.tar"
    # Device nodes are not what registry images carry (and rootless unpackers cannot make them).
    find "$b/rootfs/dev" -mindepth 1 -delete
    local common=(--numeric-owner --sort=name --format=pax "--pax-option=delete=atime,delete=ctime")
    tar -C "$b/rootfs" "${common[@]}" --anchored --exclude=./usr/lib --exclude=./usr/share \
        -cf "$b/layer1.tar" .
    tar -C "$b/rootfs" "${common[@]}" -cf "$b/layer2.tar" ./usr/lib
    tar -C "$b/rootfs" "${common[@]}" -cf "$b/layer3.tar" ./usr/share
    umoci init --layout "$IMG"
    umoci new --image "$IMG:mpi"
    local i
    for i in 1 2 3; do
        umoci raw add-layer --image "$IMG:mpi" --history.created_by "bench layer $i" "$b/layer$i.tar"
    done
    umoci config --image "$IMG:mpi" --config.cmd /bin/bash \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    umoci gc --layout "$IMG"
    {
        echo "IMG_FILES=$(find "$b/rootfs" | wc -l)"
        echo "IMG_UNCOMPRESSED=$(( $(stat -c %s "$b/layer1.tar") + $(stat -c %s "$b/layer2.tar") + $(stat -c %s "$b/layer3.tar") ))"
        echo "IMG_BUILT=$(date -u +%FT%TZ)"
    } >"$META"
    rm -rf "$b"
}
if [ -f "$META" ] && [ -f "$IMG/index.json" ]; then
    log "reusing the image in $IMG"
else
    build_image
fi
# shellcheck disable=SC1090  # sets IMG_FILES IMG_UNCOMPRESSED IMG_BUILT
. "$META"
manifest_blob() {
    local d
    d=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="mpi") | .digest' "$IMG/index.json")
    echo "$IMG/blobs/sha256/${d#sha256:}"
}
MANIFEST=$(manifest_blob)
IMG_COMPRESSED=$(jq '[.layers[].size] | add' "$MANIFEST")
IMG_LAYERS=$(jq -r '[.layers[].size | tostring] | join(" ")' "$MANIFEST")
LARGEST_LAYER=$(jq -r '.layers | max_by(.size) | .digest' "$MANIFEST")
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
# shellcheck disable=SC2153
log "image: 3 layers, $(mib "$IMG_COMPRESSED") MiB compressed ($IMG_LAYERS bytes), $(mib "$IMG_UNCOMPRESSED") MiB as tar, $IMG_FILES paths"

# ---------------------------------------------------------------- 3. registry (TLS)
# A CA and a leaf signed by it (rustls refuses a self-signed CA used as the server cert);
# no access log, which no figure here reads.
bench_registry no-access-log
IMAGE=$REG/bench/mpi:latest
log "registry on https://$REG; pushing $IMAGE"
skopeo copy -q --dest-cert-dir "$CERTS/ca.d" "oci:$IMG:mpi" "docker://$IMAGE" >"$WORK/logs/push.log" 2>&1 ||
    { cat "$WORK/logs/push.log" >&2; die "push failed"; }

cat >"$U/lpmx-config.yml" <<EOF
registries:
  "$REG":
    ca: $CERTS/ca.pem
EOF
chown "$BENCH_USER:" "$U/lpmx-config.yml"

# ---------------------------------------------------------------- 4. measurements
# Podman: native overlay works rootless on kernels >= 5.13 without fuse-overlayfs; probe it.
PODMAN_DRIVER=overlay
podman_global() {  # ROOT RUNROOT
    echo "--root $1 --runroot $2 --storage-driver $PODMAN_DRIVER --cgroup-manager cgroupfs --events-backend file"
}
probe_dir=$U/podman-probe
mkdir -p "$U/tmp"; chown "$BENCH_USER:" "$U/tmp"
# shellcheck disable=SC2046
if ! as_user podman $(podman_global "$probe_dir/root" "$SHORT/probe") info >"$WORK/logs/podman-probe.log" 2>&1; then
    PODMAN_DRIVER=vfs
    log "podman rootless overlay failed (see below); using vfs"
    tail -5 "$WORK/logs/podman-probe.log" >&2
fi
rm -rf "$probe_dir" "$SHORT/probe"
if [ -f "$PAUSE_PIDFILE" ]; then kill -TERM "$(cat "$PAUSE_PIDFILE")" 2>/dev/null || true; fi

# The exact command line of each tool; STORE is the empty directory of that run.
tool_cmd() {  # TOOL STORE
    local s=$2
    case $1 in
    lpmx) echo "env LPMX_CONFIG=$U/lpmx-config.yml lpmx-job --cache $s/cache pull $IMAGE" ;;
    charliecloud) echo "env REQUESTS_CA_BUNDLE=$CERTS/ca.pem ch-image --no-cache --storage $s/ch pull $IMAGE" ;;
    skopeo-umoci) echo "sh -c 'skopeo copy --src-cert-dir $CERTS/ca.d docker://$IMAGE oci:$s/oci:latest && umoci unpack --rootless --image $s/oci:latest $s/bundle'" ;;
    podman) echo "podman $(podman_global "$s/root" "$SHORT/${s##*/}") pull --cert-dir $CERTS/ca.d $IMAGE" ;;
    esac
}
tool_label() {
    case $1 in
    lpmx) echo "lpmx-job" ;;
    charliecloud) echo "Charliecloud ch-image" ;;
    skopeo-umoci) echo "skopeo copy + umoci unpack" ;;
    podman) echo "podman rootless ($PODMAN_DRIVER)" ;;
    esac
}

declare -A TIMES=() RSS=() USR=() SYS=() FAILS=()
# fresh_dir NAME: a new empty directory under $U owned by the bench user. Nothing is deleted
# until the script exits: see "settle" below.
fresh_dir() {
    mkdir "$U/$1" && chown "$BENCH_USER:" "$U/$1" && echo "$U/$1"
}
# last_lines LOG: the last two non-empty lines of a failed run's output, on one line.
last_lines() {
    grep -v '^Command exited' "$1" | grep -v '^$' | tail -n 2 | tr '\n' ' ' | cut -c1-300
    return 0
}
# run_one TOOL KEY TAG [STORE]: time one pull of TOOL as the bench user and file the figures
# under KEY. Without STORE, a fresh empty directory is made.
run_one() {
    local tool=$1 key=$2 tag=$3 s=${4:-} cmd tf lf t m cu cs p missing
    [ -n "$s" ] || s=$(fresh_dir "run-$tool-$tag")
    cmd=$(tool_cmd "$tool" "$s")
    tf=$U/time-$tool-$tag; lf=$WORK/logs/$tool-$tag.log
    sync
    # GNU time inside runuser: it times the tool alone; %M is the peak RSS (KiB) of the
    # largest process of the tool's tree.
    if as_user /usr/bin/time -f '%e %M %U %S' -o "$tf" sh -c "exec $cmd" >"$lf" 2>&1; then
        read -r t m cu cs < <(tail -n1 "$tf")
        # "Usable as a tree": one file from each of the three layers must be there.
        missing=
        for p in usr/bin/mpirun usr/lib/os-release usr/share/openmpi/amca-param-sets; do
            find "$s" -path "*/$p" -print -quit | grep -q . || missing+=" /$p"
        done
        if [ -n "$missing" ]; then
            FAILS[$key]+="$tag: exited 0 after ${t}s but the tree lacks$missing|"
            log "  $key $tag: exited 0 but the tree lacks$missing"
            return
        fi
        TIMES[$key]+="$t "; RSS[$key]+="$m "; USR[$key]+="$cu "; SYS[$key]+="$cs "
        log "  $key $tag: ${t}s (user ${cu}s, sys ${cs}s), peak RSS ${m} KiB"
    else
        FAILS[$key]+="$tag: $(last_lines "$lf")|"
        log "  $key $tag FAILED (log kept as /var/tmp/lpmx-bench-fail-$tool-$tag.log):"
        tail -n 5 "$lf" >&2
        cp "$lf" "/var/tmp/lpmx-bench-fail-$tool-$tag.log" 2>/dev/null || true
    fi
}

# Settle. This machine's root file system is ext4 *without a journal*; there, allocating an
# inode skips every inode of the group deleted in the last ~30 s (recently_deleted() in
# fs/ext4/ialloc.c), and each skip is a buffer-cache lookup. Seen here once: lpmx-job pulling
# right after a pulled tree was deleted took 9.9 s (10.4 s sys), 40 s later 1.9 s (2.1 s sys),
# with perf putting over half the samples in recently_deleted()/find_get_block_common(). It
# is not reproducible on demand (it depends on the block groups the new tree lands in), but
# a benchmark that deletes each store before the next tool runs risks measuring it. So
# nothing is deleted while measuring (every run gets a new directory, all removed at exit),
# and measuring starts only once earlier deletions are older than that.
SETTLE=${SETTLE:-35}
log "settling ${SETTLE}s so that earlier deletions (set-up, a previous run) do not tax inode allocation"
sleep "$SETTLE"
# The machine may be shared (someone's build or test suite). While this script sleeps, any
# busy CPU is someone else's: wait (up to QUIET_MAX s) for a 5 s window under 10 % busy.
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
QUIET_MAX=${QUIET_MAX:-300}
waited=0
while :; do
    read -r b0 t0 < <(busy_jiffies); sleep 5; read -r b1 t1 < <(busy_jiffies)
    OTHER_BUSY=$(( (b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
    [ "$OTHER_BUSY" -lt 10 ] && break
    if [ "$waited" -ge "$QUIET_MAX" ]; then
        log "the machine is still ${OTHER_BUSY}% busy with other work after ${waited}s; measuring anyway"
        break
    fi
    [ "$waited" -gt 0 ] || log "other work keeps the CPUs ${OTHER_BUSY}% busy; waiting up to ${QUIET_MAX}s for quiet"
    waited=$((waited + 5))
done
BUSY_BEFORE=$(busy_jiffies | cut -d' ' -f1)
reg_jiffies() { awk '{print $14 + $15}' "/proc/$REG_PID/stat"; }
REG_BEFORE=$(reg_jiffies)

read -r -a tools <<<"$TOOLS"
LAST_LPMX=
START=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    # Rotate the order every round so no tool always runs first (or after the same tool).
    for ((k = 0; k < ${#tools[@]}; k++)); do
        t=${tools[$(((k + r - 1) % ${#tools[@]}))]}
        run_one "$t" "$t" "round$r"
        if [ "$t" = lpmx ]; then LAST_LPMX=$U/run-lpmx-round$r; fi
    done
done

# Warm: the same tag again, into the cache that the last cold lpmx pull filled.
WARM_STORE=${LAST_LPMX:-}
if [ -n "$WARM_STORE" ] && [ -d "$WARM_STORE/cache" ] && [ -n "${TIMES[lpmx]:-}" ]; then
    for ((r = 1; r <= ROUNDS; r++)); do
        run_one lpmx lpmx-warm "warm$r" "$WARM_STORE"
    done
fi
BENCH_SECONDS=$((SECONDS - START))
# CPU-seconds the whole machine was busy while measuring, to compare with the tools' own
# (the registry's share is in there too).
BUSY_SECONDS=$(awk -v b="$BUSY_BEFORE" -v hz="$(getconf CLK_TCK)" '/^cpu /{printf "%.0f", ($2+$3+$4+$7+$8-b)/hz}' /proc/stat)
REG_CPU=$(awk -v a="$REG_BEFORE" -v b="$(reg_jiffies)" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.0f", (b-a)/hz}')
TOOLS_CPU=$(for k in "${!USR[@]}"; do echo "${USR[$k]} ${SYS[$k]}"; done | tr ' ' '\n' | awk '{s+=$1} END{printf "%.0f", s}')

# ---------------------------------------------------------------- diagnostics
DIAG_LINES=()
if [ "$DIAG" = 1 ]; then
    log "diagnostics"
    dtime() {  # one run of "$1" as the bench user, output discarded
        sync
        as_user /usr/bin/time -f '%e %U %S' -o "$U/dt" sh -c "$1" >/dev/null 2>"$WORK/logs/diag.err" || { echo "failed: $(tail -n1 "$WORK/logs/diag.err")"; return; }
        tail -n1 "$U/dt" | awk '{printf "%s s wall (user %s s, sys %s s)", $1, $2, $3}'
    }
    layout=$(fresh_dir layout)
    cp -a "$IMG/." "$layout/"; chown -R "$BENCH_USER:" "$layout"
    cat "$layout"/blobs/sha256/* >/dev/null
    big=$layout/blobs/sha256/${LARGEST_LAYER#sha256:}
    mapfile -t blobs < <(jq -r '.layers[].digest | sub("sha256:"; "")' "$MANIFEST")
    nfiles=$(gzip -dc "$big" | tar -tf - | wc -l)
    g=$(dtime "gzip -dc $big > /dev/null")
    p=$(dtime "python3 -c 'import zlib; d=zlib.decompressobj(31); f=open(\"$big\",\"rb\")
while (b:=f.read(1<<20)): d.decompress(b)'")
    h=$(dtime "sha256sum $big")
    d=$(fresh_dir tar-all)
    xz=$(dtime "for b in ${blobs[*]}; do tar -C $d --no-same-owner -xzf $layout/blobs/sha256/\$b || exit 1; done")
    d=$(fresh_dir lpmx-oci-j3)
    lo=$(dtime "lpmx-job --cache $d/cache pull oci:$layout:mpi")
    d=$(fresh_dir lpmx-oci-j1)
    lo1=$(dtime "lpmx-job --cache $d/cache pull --jobs 1 oci:$layout:mpi")
    # Per-layer timings that lpmx-job logs itself (-v), pulling from the registry again.
    d=$(fresh_dir lpmx-verbose)
    sync
    as_user env LPMX_CONFIG="$U/lpmx-config.yml" lpmx-job -v --cache "$d/cache" pull "$IMAGE" \
        >"$WORK/logs/lpmx-verbose.log" 2>&1 || true
    mapfile -t VERBOSE_LINES < <(grep -E 'done|fetching' "$WORK/logs/lpmx-verbose.log" | sed "s#$WORK#\$WORK#g" | head -n 12)
    # A kernel profile of one pull (software clock: no PMU in most VMs), self time by symbol.
    PERF_LINES=()
    if [ "${PERF:-1}" = 1 ] && command -v perf >/dev/null 2>&1; then
        d=$(fresh_dir lpmx-perf)
        sync
        if perf record -q -e cpu-clock -g -o "$WORK/perf.data" -- "${AS_USER[@]}" \
            lpmx-job --cache "$d/cache" pull "oci:$layout:mpi" >"$WORK/logs/perf.log" 2>&1; then
            mapfile -t PERF_LINES < <(perf report -i "$WORK/perf.data" --no-children --sort dso,sym \
                --stdio -g none --percent-limit 1.5 2>/dev/null | grep '%' | grep -v '^#' | head -n 12 |
                sed 's/^ *//; s/  */ /g')
        fi
    fi
    DIAG_LINES+=("| largest layer | $(mib "$(stat -c %s "$big")") MiB gzip, $nfiles tar members |")
    DIAG_LINES+=("| \`gzip -dc\` of it to /dev/null | $g |")
    DIAG_LINES+=("| Python zlib (same zlib as ch-image's tarfile) decompress of it | $p |")
    DIAG_LINES+=("| \`sha256sum\` of it | $h |")
    DIAG_LINES+=("| GNU \`tar -xzf\` of the 3 layers in turn into one tree (local files) | $xz |")
    DIAG_LINES+=("| \`lpmx-job pull oci:LAYOUT\` whole image, no network, \`--jobs 3\` (default) | $lo |")
    DIAG_LINES+=("| \`lpmx-job pull --jobs 1 oci:LAYOUT\` whole image, no network | $lo1 |")
fi

# ---------------------------------------------------------------- 5. table
median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk '{a[NR]=$1} END{if(NR==0){print ""; exit} if(NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{if(NR) printf "%s–%s", lo, hi}'; }
count() { tr ' ' '\n' | grep -vc '^$' || true; }
LPMX_MED=$(median <<<"${TIMES[lpmx]:-}")
row() {  # KEY LABEL
    local key=$1 label=$2 med rng n ratio rssmed fail note=""
    med=$(median <<<"${TIMES[$key]:-}"); rng=$(minmax <<<"${TIMES[$key]:-}"); n=$(count <<<"${TIMES[$key]:-}")
    rssmed=$(median <<<"${RSS[$key]:-}")
    fail=${FAILS[$key]:-}
    fail=${fail%|}
    [ -z "$fail" ] || note="FAILED ${fail//|/; }"
    if [ -z "$med" ]; then
        echo "| $label | failed | – | – | – | – | ${note:-did not run} |"
        return
    fi
    if [ "$key" = lpmx ]; then
        ratio="1.00× (baseline)"
    elif [ -n "$LPMX_MED" ]; then
        ratio=$(awk -v a="$med" -v b="$LPMX_MED" 'BEGIN{printf "%.2f×", a/b}')
    else
        ratio="– (no lpmx-job figure)"
    fi
    if [ "$key" = lpmx-warm ]; then ratio="–"; fi
    echo "| $label | $med | $rng ($n runs) | $ratio | $(median <<<"${USR[$key]}") / $(median <<<"${SYS[$key]}") | $(awk -v k="$rssmed" 'BEGIN{printf "%.0f", k/1024}') | $note |"
}
ver() { "$@" 2>&1 | head -n1 | tr -d '\r'; }
FS_DEV=$(df --output=source "$WORK" | tail -n1)
FS_TYPE=$(df --output=fstype "$WORK" | tail -n1)
FS_NOTE=$FS_TYPE
if [ "$FS_TYPE" = ext4 ] && [ -d /proc/fs/jbd2 ]; then
    # A journalled ext4 has a jbd2 entry named after its device (vda-8).
    if compgen -G "/proc/fs/jbd2/${FS_DEV##*/}-*" >/dev/null; then FS_NOTE="ext4 with journal"
    else FS_NOTE="ext4 without journal (no /proc/fs/jbd2 entry)"; fi
fi
{
    echo "# Cold-pull benchmark: lpmx-job vs peers"
    echo
    echo "Generated by \`contrib/bench/pull.sh\` on $(date -u '+%F %T UTC')."
    echo
    echo "- Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(sed -n 's/^PRETTY_NAME="\(.*\)"$/\1/p' /etc/os-release); stores on $FS_NOTE ($(findmnt -no OPTIONS --target "$WORK" 2>/dev/null | cut -c1-60))"
    echo "- Image: \`bench/mpi:latest\` = Debian bookworm minbase + openmpi-bin, libopenmpi3, python3; 3 gzip layers, **$(mib "$IMG_COMPRESSED") MiB compressed** (layers: $(for b in $IMG_LAYERS; do printf '%s ' "$(mib "$b")"; done | sed 's/ $//; s/ / + /g') MiB, sum of manifest sizes), $(mib "$IMG_UNCOMPRESSED") MiB of tar, $IMG_FILES paths"
    echo "- Registry: docker-registry ($(ver docker-registry --version | awk '{print $NF}')) on https://127.0.0.1 (loopback, TLS with a private CA that every tool verifies)"
    echo "- Rounds: $ROUNDS; each tool pulls into an empty store every round, tools interleaved (order rotated per round), \`sync\` before each run, nothing deleted while measuring (after a ${SETTLE}s settle); all as the ordinary user \`$BENCH_USER\`. Measuring took ${BENCH_SECONDS}s."
    echo "- Other load: CPUs ${OTHER_BUSY}% busy with other work just before measuring (after waiting ${waited}s for quiet); while measuring the machine was busy for ${BUSY_SECONDS} CPU-s of $((BENCH_SECONDS * $(nproc))), of which the measured tools used ${TOOLS_CPU} and the registry ${REG_CPU} (the rest: this script's checks and anything else running)."
    echo "- Versions: lpmx-job $(ver "$WORK/bin/lpmx-job" --version | awk '{print $NF}') (release build of ${LPMX_REV:-git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ', src/ with uncommitted changes')}); ch-image $(ver env USER=root ch-image --version); $(ver skopeo --version); $(ver umoci --version); $(ver podman --version) (storage driver $PODMAN_DRIVER)"
    echo
    echo "| tool | median s (wall) | range | ratio (peer / lpmx-job) | CPU user / sys s (median) | peak RSS MiB (median) | notes |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | --- |"
    for t in "${tools[@]}"; do row "$t" "$(tool_label "$t")"; done
    if [ -n "${TIMES[lpmx-warm]:-}" ] || [ -n "${FAILS[lpmx-warm]:-}" ]; then row lpmx-warm "lpmx-job, warm (tag already cached)"; fi
    echo
    echo "Ratio > 1 means the peer is slower than lpmx-job. CPU is user and system time summed over"
    echo "the tool's processes (GNU time %U, %S). Peak RSS is GNU time's %M: the largest single"
    echo "process of the tool's tree. What a store holds afterwards differs: lpmx-job keeps one"
    echo "unpacked tree per layer (like podman's overlay store) plus the small blobs; ch-image keeps"
    echo "the downloaded layer files and one flattened tree; skopeo+umoci keep the OCI layout"
    echo "(compressed blobs) and one flattened bundle. Every one was checked to hold a file of each"
    echo "layer after the pull."
    if [ "${#DIAG_LINES[@]}" -gt 0 ]; then
        echo
        echo "## Where the time goes (one run each, as $BENCH_USER)"
        echo
        echo "| what | figure |"
        echo "| --- | --- |"
        printf '%s\n' "${DIAG_LINES[@]}"

        if [ "${#VERBOSE_LINES[@]}" -gt 0 ]; then
            echo
            echo "\`lpmx-job -v pull\` from the registry once more (its own per-layer log, 3 layers at once):"
            echo
            echo '```'
            printf '%s\n' "${VERBOSE_LINES[@]}"
            echo '```'
        fi
        if [ "${#PERF_LINES[@]}" -gt 0 ]; then
            echo
            echo "\`perf record -e cpu-clock -g\` of one \`lpmx-job pull oci:LAYOUT\` (self time, symbols over 1.5 %):"
            echo
            echo '```'
            printf '%s\n' "${PERF_LINES[@]}"
            echo '```'
        fi
    fi
    echo
    echo "## Exact commands (STORE = a fresh empty directory per run)"
    echo
    echo "Each ran as \`runuser -u $BENCH_USER -- env -i HOME=... PATH=$SYS_PATH ... /usr/bin/time -f '%e %M %U %S' sh -c 'exec CMD'\`:"
    echo
    for t in "${tools[@]}"; do
        echo "- $(tool_label "$t"): \`$(tool_cmd "$t" STORE | sed "s#$WORK#\$WORK#g; s#$SHORT#\$SHORT#g")\`"
    done
    echo
    echo "\`\$WORK\` and \`\$SHORT\` are the run's temporary directories (removed at exit)."
    if [ "${#FAILS[@]}" -gt 0 ]; then
        echo
        echo "## Failures"
        echo
        for t in "${!FAILS[@]}"; do f=${FAILS[$t]%|}; echo "- $t: ${f//|/; }"; done
    fi
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
echo
cat "$RESULTS"
