#!/usr/bin/env bash
# shellcheck disable=SC2119  # common.sh functions with optional arguments, called without
# Host-command bridge: what a bridged call adds to calling the host program directly, and the
# throughput of a bridged `cat` against the host's `cat`. Inside one
# `lpmx-job run --host-cmd true --host-cmd cat IMG sh -c '...'` container per round: CALLS
# calls of the bridged `true` in a loop (and of the image's own busybox `true`, for
# reference), and MIB MiB piped through the bridged `cat` (and the image's busybox `cat`);
# then, on the host, the same loops with the host's `true` and `cat`.
#
# Run as root:   bash contrib/bench/bridge.sh          (about 1-2 minutes)
# See contrib/bench/README.md for what is measured and how to read the table.
#
# Environment:
#   CALLS=200            calls of `true` per loop
#   LOOPS=3              loops of each kind per round
#   ROUNDS=5             rounds (one container, then the host's loops, per round)
#   MIB=1024             MiB piped through each `cat` per round
#   LPMX_BIN=PATH        lpmx-job binary (default /tmp/bench-target/release/lpmx-job)
#   LPMX_REV=TEXT        what LPMX_BIN was built from, for the report (default: git HEAD)
#   BENCH_USER=NAME      the ordinary user every measured command runs as (lpmxbench)
#   RESULTS=FILE         markdown output (contrib/bench/results-bridge.md)
#   QUIET_MAX=300        longest wait for other work on the machine to stop before timing
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CALLS=${CALLS:-200}
LOOPS=${LOOPS:-3}
ROUNDS=${ROUNDS:-5}
MIB=${MIB:-1024}
BENCH_USER=${BENCH_USER:-lpmxbench}
LPMX_BIN=${LPMX_BIN:-/tmp/bench-target/release/lpmx-job}
RESULTS=${RESULTS:-$HERE/results-bridge.md}
SYS_PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH=$SYS_PATH

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages, creates $BENCH_USER and runs tools as that user)"
for v in CALLS LOOPS ROUNDS MIB; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[ -x "$LPMX_BIN" ] || die "no lpmx-job at $LPMX_BIN; build it: CARGO_TARGET_DIR=/tmp/bench-target cargo build --release --manifest-path $REPO/Cargo.toml"

# ---------------------------------------------------------------- 1. packages, user
# shellcheck source=contrib/bench/common.sh
source "$HERE/common.sh"
bench_install docker-registry:docker-registry skopeo:skopeo umoci:umoci openssl:openssl \
    python3:python3 jq:jq curl:curl
bench_user
bench_workdirs /tmp/lpbr
bench_user_area          # U: everything the bench user writes lives under here
HOST_TRUE=$(type -P true)
HOST_CAT=$(type -P cat)

# ---------------------------------------------------------------- 2. the image
IMGDIR=$WORK/image
bench_busybox_image "$IMGDIR"       # sets LAYOUT (tag "bb")
log "image: busybox-static, 1 layer of $LAYER_BYTES bytes (gzip), manifest $MANIFEST_DIGEST"
bench_registry
LPMX_CFG=$U/lpmx-config.yml
bench_push bench/bb "$LPMX_CFG"     # sets IMAGE

USER_ENV=(HOME="$BENCH_HOME" USER="$BENCH_USER" LOGNAME="$BENCH_USER"
    PATH="$SYS_PATH" LANG=C.UTF-8 XDG_RUNTIME_DIR="$WORK/xdg-run" TMPDIR="$U/tmp")
as_user() { (cd "$U/cwd" && runuser -u "$BENCH_USER" -- env -i "${USER_ENV[@]}" "$@"); }
log "lpmx-job: pulling $IMAGE into its cache"
as_user "$LPMX" --config "$LPMX_CFG" --cache "$U/lpmx" -q pull "$IMAGE" >"$WORK/logs/lpmx-pull.log" 2>&1 ||
    { cat "$WORK/logs/lpmx-pull.log" >&2; die "lpmx-job pull $IMAGE into $U/lpmx failed"; }
RUN=("$LPMX" --config "$LPMX_CFG" --cache "$U/lpmx" run --host-cmd true --host-cmd cat "$IMAGE")

# The bridged names must be the host's programs, the image's their busybox applets: the
# host's cat reads a file only the host has; the image's cannot.
[ -f /etc/debian_version ] || die "no /etc/debian_version on the host: the check below needs a host-only file"
# shellcheck disable=SC2016  # expanded by the container's shell
out=$(as_user "${RUN[@]}" /bin/sh -c '/.lpmx/bin/cat /etc/debian_version && /.lpmx/bin/true &&
    if /bin/cat /etc/debian_version 2>/dev/null; then echo "image has it"; fi; readlink /bin/true' 2>"$WORK/logs/check.log") ||
    { cat "$WORK/logs/check.log" >&2; die "lpmx-job run --host-cmd true --host-cmd cat $IMAGE: the check failed"; }
[ "$out" = "$(cat /etc/debian_version)"$'\n'busybox ] ||
    { cat "$WORK/logs/check.log" >&2; die "the bridge check in $IMAGE printed '$out', not the host's /etc/debian_version then busybox"; }
log "bridged cat read the host's /etc/debian_version; the image's true is busybox"

# ---------------------------------------------------------------- 3. the harness
# The loops run in busybox sh, in the container and on the host alike (the host's
# /bin/busybox is the image's), and print a marker line after each loop; one Python process,
# as the bench user, starts each shell with its stdout a pipe and timestamps every marker
# (CLOCK_MONOTONIC) as it arrives: a loop's time is the time between its marker and the one
# before. Commands are named by path: busybox sh would run `true` as a builtin.
# shellcheck disable=SC2016  # expanded by busybox sh
LOOP_BODY='
calls=$1; loops=$2; mib=$3; true_cmds=$4; cat_cmds=$5
echo start
for l in $(seq "$loops"); do
    for t in $true_cmds; do
        i=0
        while [ $i -lt "$calls" ]; do "$t" || exit 1; i=$((i + 1)); done
        echo "true $t"
    done
done
for c in $cat_cmds; do
    busybox dd if=/dev/zero bs=1M count="$mib" 2>/dev/null | "$c" >/dev/null || exit 1
    echo "cat $c"
done
'
HARNESS=$WORK/harness.py
cat >"$HARNESS" <<'PY'
import json, os, sys, time

spec = json.load(open(sys.argv[1]))
out = open(spec["out"], "w")

def one(where, argv, log):
    r, w = os.pipe()
    fa = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, w, 1),
          (os.POSIX_SPAWN_OPEN, 2, log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
          (os.POSIX_SPAWN_CLOSE, r), (os.POSIX_SPAWN_CLOSE, w)]
    t0 = time.monotonic_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=fa)
    os.close(w)
    f = os.fdopen(r, "rb", buffering=0)
    marks, buf = [], b""
    while True:
        b = f.read(4096)
        if not b:
            break
        now = time.monotonic_ns()
        buf += b
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            marks.append((line.decode(), now))
    _, st = os.waitpid(pid, 0)
    t_exit = time.monotonic_ns()
    rc = os.waitstatus_to_exitcode(st)
    if rc != 0 or not marks or marks[0][0] != "start":
        sys.exit(f"{where}: exit {rc}, markers {[m for m, _ in marks]} (see {log})")
    # Container entry: from the spawn of lpmx-job to the shell's first line.
    out.write(f"{where}\tentry\t{marks[0][1] - t0}\n")
    for (_, a), (m, b) in zip(marks, marks[1:]):
        out.write(f"{where}\t{m}\t{b - a}\n")
    out.write(f"{where}\texit\t{t_exit - marks[-1][1]}\n")

for r in range(spec["rounds"]):
    for where in (spec["order"] if r % 2 == 0 else spec["order"][::-1]):
        one(where, spec["argv"][where], spec["log"])
out.close()
PY
chmod 644 "$HARNESS"
# The spec: the two argvs, split at "--" (jq would take the shells' "-c" for its own option).
/usr/bin/python3 -c 'import json, sys
a = sys.argv[4:]; i = a.index("--")
json.dump({"rounds": int(sys.argv[1]), "out": sys.argv[2], "log": sys.argv[3],
           "order": ["container", "host"], "argv": {"container": a[:i], "host": a[i + 1:]}}, sys.stdout)' \
    "$ROUNDS" "$U/time.tsv" "$U/stderr.log" \
    "${RUN[@]}" /bin/sh -c "$LOOP_BODY" sh "$CALLS" "$LOOPS" "$MIB" "/.lpmx/bin/true /bin/true" "/.lpmx/bin/cat /bin/cat" \
    -- /bin/busybox sh -c "$LOOP_BODY" sh "$CALLS" "$LOOPS" "$MIB" "$HOST_TRUE" "$HOST_CAT" >"$U/spec.json"
chown "$BENCH_USER:" "$U/spec.json"

# ---------------------------------------------------------------- 4. timed rounds
bench_wait_quiet
BUSY_BEFORE=$(busy_jiffies | cut -d' ' -f1)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "timing: $ROUNDS rounds of $LOOPS loops of $CALLS calls of each true and $MIB MiB through each cat"
START=$SECONDS
as_user /usr/bin/python3 "$HARNESS" "$U/spec.json" 2>"$WORK/logs/harness.log" ||
    { cat "$WORK/logs/harness.log" "$U/stderr.log" >&2; die "the harness failed"; }
BENCH_SECONDS=$((SECONDS - START))
BUSY_SECONDS=$(busy_seconds_since "$BUSY_BEFORE")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
TSV=$U/time.tsv
log "timed in ${BENCH_SECONDS}s"

# ---------------------------------------------------------------- 5. table
# stats WHERE MARK SCALE: median min max count of column 3 times SCALE
stats() {
    awk -F'\t' -v w="$1" -v m="$2" -v s="$3" '$1 == w && $2 == m { print $3 * s }' "$TSV" | sort -g |
        awk '{ a[++n] = $1 } END { if (n == 0) { print "- - - 0"; exit }
            printf "%.3f %.3f %.3f %d\n", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2, a[1], a[n], n }'
}
# ms per call (loop ns / CALLS / 1e6), GiB/s (MIB / 1024 / (ns / 1e9))
per_call() { stats "$1" "true $2" "$(awk -v c="$CALLS" 'BEGIN{printf "%.12f", 1 / c / 1e6}')"; }
gibps() {
    awk -F'\t' -v w="$1" -v m="cat $2" -v mib="$MIB" '$1 == w && $2 == m { printf "%.3f\n", mib / 1024 / ($3 / 1e9) }' "$TSV" |
        sort -g | awk '{ a[++n] = $1 } END { if (n == 0) { print "- - - 0"; exit }
            printf "%.2f %.2f %.2f %d\n", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2, a[1], a[n], n }'
}
read -r BT_MED BT_MIN BT_MAX BT_N <<<"$(per_call container /.lpmx/bin/true)"
read -r IT_MED IT_MIN IT_MAX IT_N <<<"$(per_call container /bin/true)"
read -r HT_MED HT_MIN HT_MAX HT_N <<<"$(per_call host "$HOST_TRUE")"
read -r BC_MED BC_MIN BC_MAX BC_N <<<"$(gibps container /.lpmx/bin/cat)"
read -r IC_MED IC_MIN IC_MAX IC_N <<<"$(gibps container /bin/cat)"
read -r HC_MED HC_MIN HC_MAX HC_N <<<"$(gibps host "$HOST_CAT")"
read -r EN_MED EN_MIN EN_MAX _ <<<"$(stats container entry 0.000001)"
ADDED=$(awk -v a="$BT_MED" -v b="$HT_MED" 'BEGIN{printf "%+.3f", a - b}')
ver() { "$@" 2>&1 | sed -n 1,1p | tr -d '\r'; }
subst() { sed "s#$WORK#\$WORK#g"; }
{
    echo "# Host-command bridge: a bridged call against the host's own"
    echo
    echo "Generated by \`contrib/bench/bridge.sh\` on $(date -u '+%F %T UTC')."
    echo
    echo "- Machine: $(bench_machine)."
    echo "- Image: busybox-static $(ver busybox | awk '{print $2}') alone in one gzip layer ($LAYER_BYTES bytes, manifest $MANIFEST_DIGEST), run from lpmx-job's cache (pulled once from docker-registry on https://127.0.0.1)."
    echo "- Rounds: $ROUNDS. In each, one \`lpmx-job run --host-cmd true --host-cmd cat IMG /bin/sh -c LOOPS\` (the image's busybox sh) runs $LOOPS loops of $CALLS calls of the bridged \`true\` (\`/.lpmx/bin/true\`) and of the image's \`/bin/true\` (busybox), then pipes $MIB MiB (\`busybox dd if=/dev/zero bs=1M\`) through the bridged \`cat\` and the image's \`/bin/cat\`, both to /dev/null; and on the host \`/bin/busybox sh -c LOOPS\` (the same busybox) does the same with \`$HOST_TRUE\` and \`$HOST_CAT\`, the programs the bridge runs. Container and host alternate, their order swapped every round. All as the ordinary user \`$BENCH_USER\`; one Python process timestamps each loop's end marker (CLOCK_MONOTONIC) as it arrives on a pipe. Timing took ${BENCH_SECONDS}s."
    echo "- Load: CPUs ${OTHER_BUSY}% busy with other work just before timing (after waiting ${waited}s for quiet); load average (1, 5, 15 min) $LOAD_BEFORE before, $LOAD_AFTER after; while timing the machine was busy for ${BUSY_SECONDS} CPU-s of $((BENCH_SECONDS * $(nproc)))."
    echo "- Versions: lpmx-job $(ver "$LPMX" --version | awk '{print $NF}') (release build of ${LPMX_REV:-git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ', src/ with uncommitted changes')}; $(file -b "$LPMX" | grep -o 'dynamically linked\|statically linked\|static-pie linked' | sed -n 1p)); host \`true\` and \`cat\`: coreutils $(dpkg-query -W -f '${Version}' coreutils 2>/dev/null)."
    echo
    echo "| per call of \`true\` | median ms | min–max ms | loops of $CALLS |"
    echo "| --- | ---: | ---: | ---: |"
    echo "| host \`$HOST_TRUE\`, called directly | $HT_MED | $HT_MIN–$HT_MAX | $HT_N |"
    echo "| bridged \`true\` in the container (runs the host's \`$HOST_TRUE\`) | $BT_MED | $BT_MIN–$BT_MAX | $BT_N |"
    echo "| the image's busybox \`/bin/true\` in the container (reference) | $IT_MED | $IT_MIN–$IT_MAX | $IT_N |"
    echo
    echo "**Added cost of a bridged call: $ADDED ms** (median bridged minus median direct; target under 2 ms)."
    echo
    echo "| $MIB MiB through \`cat\` | median GiB/s | min–max GiB/s | runs |"
    echo "| --- | ---: | ---: | ---: |"
    echo "| host \`$HOST_CAT\`, called directly | $HC_MED | $HC_MIN–$HC_MAX | $HC_N |"
    echo "| bridged \`cat\` in the container (runs the host's \`$HOST_CAT\`) | $BC_MED | $BC_MIN–$BC_MAX | $BC_N |"
    echo "| the image's busybox \`/bin/cat\` in the container (reference) | $IC_MED | $IC_MIN–$IC_MAX | $IC_N |"
    echo
    echo "Bridged / host throughput: $(awk -v a="$BC_MED" -v b="$HC_MED" 'BEGIN{printf "%.2f", a / b}') (target: the same; the bridge passes the caller's descriptors, it copies nothing)."
    echo "Each throughput includes the \`busy$(printf '')box dd\` writing the pipe, and, for the bridged \`cat\`, its one bridged call."
    echo
    echo "Entering the container (spawn of \`lpmx-job run --host-cmd true --host-cmd cat\` until its shell's first line): median $EN_MED ms ($EN_MIN–$EN_MAX)."
    echo
    echo "## Exact commands"
    echo
    echo "As \`$BENCH_USER\`, environment exactly \`$(printf '%s ' "${USER_ENV[@]}" | sed 's/ $//' | subst)\`, working directory \`\$WORK/u/cwd\`:"
    echo
    echo "- container: \`$(printf '%s ' "${RUN[@]}" | subst)/bin/sh -c LOOPS sh $CALLS $LOOPS $MIB '/.lpmx/bin/true /bin/true' '/.lpmx/bin/cat /bin/cat'\`"
    echo "- host: \`/bin/busybox sh -c LOOPS sh $CALLS $LOOPS $MIB '$HOST_TRUE' '$HOST_CAT'\`"
    echo
    echo "LOOPS:"
    echo
    echo '```sh'
    sed '1d;$d' <<<"$LOOP_BODY"
    echo '```'
    echo
    echo "## Every timed loop (ns, as measured)"
    echo
    echo '<details><summary>per-loop numbers</summary>'
    echo
    echo '```'
    subst <"$TSV"
    echo '```'
    echo
    echo '</details>'
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
if [ -s "$U/stderr.log" ]; then
    log "the measured commands wrote to stderr (first lines):"
    head -n 5 "$U/stderr.log" >&2
fi
echo
cat "$RESULTS"
