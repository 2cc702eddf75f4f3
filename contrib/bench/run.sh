#!/usr/bin/env bash
# shellcheck disable=SC2119  # common.sh functions with optional arguments, called without
# Per-task container entry: `lpmx-job run IMG true` against `ch-run DIR -- true` and rootless
# `podman run --rm IMG true`, and a bare `true`, timed call by call, interleaved.
#
# Run as root:   bash contrib/bench/run.sh          (about 2-3 minutes)
# See contrib/bench/README.md for what is measured and how to read the table.
#
# Environment:
#   CALLS=100            timed calls of each tool (after WARMUP untimed rounds)
#   PODMAN_CALLS=CALLS   timed podman calls, spread evenly over the CALLS rounds (podman is
#                        the slow one: lower it if a podman call takes seconds on your host)
#   WARMUP=5             untimed rounds of every tool first
#   LPMX_BIN=PATH        lpmx-job binary (default /tmp/bench-target/release/lpmx-job,
#                        built with CARGO_TARGET_DIR=/tmp/bench-target cargo build --release)
#   LPMX_REV=TEXT        what LPMX_BIN was built from, for the report (default: git HEAD)
#   BENCH_USER=NAME      the ordinary user every measured command runs as (lpmxbench)
#   RESULTS=FILE         markdown output (contrib/bench/results-run.md)
#   TOOLS="bare lpmx-reg lpmx-oci charliecloud podman"   subset / order of tools
#   DIAG=0               skip the "where the time goes" diagnostics (strace, perf)
#   PERF=0               skip only the perf record profile
#   QUIET_MAX=300        longest wait for other work on the machine to stop before timing
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CALLS=${CALLS:-100}
PODMAN_CALLS=${PODMAN_CALLS:-$CALLS}
WARMUP=${WARMUP:-5}
BENCH_USER=${BENCH_USER:-lpmxbench}
LPMX_BIN=${LPMX_BIN:-/tmp/bench-target/release/lpmx-job}
RESULTS=${RESULTS:-$HERE/results-run.md}
TOOLS=${TOOLS:-bare lpmx-reg lpmx-oci charliecloud podman}
DIAG=${DIAG:-1}
PERF=${PERF:-1}
SYS_PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH=$SYS_PATH

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages, creates $BENCH_USER and runs tools as that user)"
[[ $CALLS =~ ^[1-9][0-9]*$ ]] || die "CALLS must be a positive integer"
# shellcheck disable=SC2015  # die either way
[[ $PODMAN_CALLS =~ ^[0-9]+$ ]] && [ "$PODMAN_CALLS" -le "$CALLS" ] || die "PODMAN_CALLS must be 0..CALLS"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer"
[ -x "$LPMX_BIN" ] || die "no lpmx-job at $LPMX_BIN; build it: CARGO_TARGET_DIR=/tmp/bench-target cargo build --release --manifest-path $REPO/Cargo.toml"

# ---------------------------------------------------------------- 1. packages, user
# shellcheck source=contrib/bench/common.sh
source "$HERE/common.sh"
bench_install docker-registry:docker-registry skopeo:skopeo umoci:umoci ch-run:charliecloud \
    podman:podman newuidmap:uidmap runc:runc openssl:openssl python3:python3 jq:jq curl:curl \
    strace:strace setpriv:util-linux
for opt in hyperfine linux-perf; do  # hyperfine: handy by hand, unused here; perf: diagnostics
    dpkg -s "$opt" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$opt" >/dev/null 2>&1 || true
done
static_bin /bin/busybox || die "/bin/busybox is not the static one (busybox-static)"

bench_user
BENCH_UID=$(id -u "$BENCH_USER")
BENCH_GID=$(id -g "$BENCH_USER")
bench_workdirs /tmp/lpr
bench_user_area "$SHORT" # U: everything the bench user writes lives under here

# The bench user's environment, the same for every measured command (and for the harness
# that starts them). USER is needed by ch-run.
USER_ENV=(HOME="$BENCH_HOME" USER="$BENCH_USER" LOGNAME="$BENCH_USER"
    PATH="$SYS_PATH" LANG=C.UTF-8 XDG_RUNTIME_DIR="$WORK/xdg-run" TMPDIR="$U/tmp")
AS_USER=(runuser -u "$BENCH_USER" -- env -i "${USER_ENV[@]}")
as_user() { (cd "$U/cwd" && "${AS_USER[@]}" "$@"); }

# ---------------------------------------------------------------- 2. the image, the registry
# One busybox-static layer (bench_busybox_image in common.sh), as an OCI layout and pushed
# to a TLS registry on loopback.
IMGDIR=$WORK/image
bench_busybox_image "$IMGDIR"       # sets LAYOUT (tag "bb")
log "image: busybox-static, 1 layer of $LAYER_BYTES bytes (gzip), manifest $MANIFEST_DIGEST"
bench_registry
LPMX_CFG=$U/lpmx-config.yml
bench_push bench/bb "$LPMX_CFG"     # sets IMAGE

# ---------------------------------------------------------------- 4. the same image, per tool
# lpmx-job: two caches, one filled from the registry, one from the OCI layout (a warm run of
# an `oci:` reference reads the layout again every time; of a registry reference, only the
# cache).
log "lpmx-job: pulling into its caches"
as_user "$LPMX" --config "$LPMX_CFG" --cache "$U/lpmx-reg" -q pull "$IMAGE" >"$WORK/logs/lpmx-pull.log" 2>&1 ||
    { cat "$WORK/logs/lpmx-pull.log" >&2; die "lpmx-job pull $IMAGE failed"; }
as_user "$LPMX" --config "$LPMX_CFG" --cache "$U/lpmx-oci" -q pull "oci:$LAYOUT:bb" >>"$WORK/logs/lpmx-pull.log" 2>&1 ||
    { cat "$WORK/logs/lpmx-pull.log" >&2; die "lpmx-job pull oci:$LAYOUT:bb failed"; }
# Charliecloud: the unpacked tree of the same layout.
log "Charliecloud: umoci unpack --rootless of the layout"
as_user umoci unpack --rootless --image "$LAYOUT:bb" "$U/bundle" >"$WORK/logs/umoci.log" 2>&1 ||
    { cat "$WORK/logs/umoci.log" >&2; die "umoci unpack failed"; }
CH_TREE=$U/bundle/rootfs
# Podman: pulled from the registry into a store of the bench user. Native rootless overlay
# works on kernels >= 5.13 without fuse-overlayfs; probe it, else vfs.
PODMAN_DRIVER=overlay
podman_global() { echo "--root $U/podman --runroot $SHORT/rr --storage-driver $PODMAN_DRIVER --cgroup-manager cgroupfs --events-backend file"; }
PODMAN_NOTES=()
PODMAN_RUNTIME_OPT=
PODMAN_NET_OPT=
PODMAN_OK=0
if [[ " $TOOLS " == *" podman "* ]]; then
    # shellcheck disable=SC2046
    if ! as_user podman $(podman_global) info >"$WORK/logs/podman-info.log" 2>&1; then
        PODMAN_DRIVER=vfs
        PODMAN_NOTES+=("native overlay failed (\`$(grep -v '^$' "$WORK/logs/podman-info.log" | tail -n1 | cut -c1-160)\`): vfs")
        rm -rf "$U/podman"
    fi
    log "podman: storage driver $PODMAN_DRIVER; pulling $IMAGE"
    # shellcheck disable=SC2046
    as_user podman $(podman_global) pull -q --cert-dir "$CERTS/ca.d" "$IMAGE" >"$WORK/logs/podman-pull.log" 2>&1 ||
        { cat "$WORK/logs/podman-pull.log" >&2; die "podman pull failed"; }
    # The plain `podman run --rm IMG true` first; on hosts where it cannot work rootless
    # (no /dev/net/tun for slirp4netns, crun refusing hybrid cgroups) the closest that does:
    # the host network (which lpmx-job and ch-run keep anyway) and/or runc.
    for rt in "" "--runtime runc"; do
        for net in "" "--network host"; do
            # shellcheck disable=SC2046,SC2086
            if as_user podman $(podman_global) $rt run --rm $net "$IMAGE" true >"$WORK/logs/podman-probe.log" 2>&1; then
                PODMAN_RUNTIME_OPT=$rt; PODMAN_NET_OPT=$net; PODMAN_OK=1
                break 2
            fi
            PODMAN_NOTES+=("\`podman ${rt:+$rt }run --rm ${net:+$net }IMG true\` fails here: \`$(grep -v '^$' "$WORK/logs/podman-probe.log" | tail -n1 | tr -d '`' | sed 's/\\n.*//' | cut -c1-200)\`")
        done
    done
    [ "$PODMAN_OK" = 1 ] || log "podman cannot run a container here; its row is left out"
fi
PODMAN_DRIVER_SEEN=$( # what podman itself reports using, and whether overlay is native
    # shellcheck disable=SC2046
    as_user podman $(podman_global) info --format '{{.Store.GraphDriverName}} (native overlay diff: {{index .Store.GraphStatus "Native Overlay Diff"}})' 2>/dev/null || echo "$PODMAN_DRIVER")

# The exact argv of each tool; $1 is the command run in the container (true, or sleep 3).
tool_argv() {  # TOOL CMD...
    local t=$1; shift
    case $t in
    bare) echo "$(type -P "$1")${2:+ ${*:2}}" ;;
    lpmx-reg) echo "$LPMX --config $LPMX_CFG --cache $U/lpmx-reg run $IMAGE $*" ;;
    lpmx-oci) echo "$LPMX --config $LPMX_CFG --cache $U/lpmx-oci run oci:$LAYOUT:bb $*" ;;
    charliecloud) echo "$(type -P ch-run) $CH_TREE -- $*" ;;
    podman) echo "$(type -P podman) $(podman_global) ${PODMAN_RUNTIME_OPT:+$PODMAN_RUNTIME_OPT }run --rm ${PODMAN_NET_OPT:+$PODMAN_NET_OPT }$IMAGE $*" ;;
    # Diagnostics only: the programs' start-up alone, no container.
    lpmx-version) echo "$LPMX --version" ;;
    ch-version) echo "$(type -P ch-run) --version" ;;
    esac
}
tool_label() {
    case $1 in
    bare) echo "bare \`true\` (host)" ;;
    lpmx-reg) echo "lpmx-job run (registry ref, cached)" ;;
    lpmx-oci) echo "lpmx-job run (\`oci:\` layout ref)" ;;
    charliecloud) echo "Charliecloud ch-run (directory)" ;;
    podman) echo "podman run --rm (rootless, $PODMAN_DRIVER${PODMAN_RUNTIME_OPT:+, ${PODMAN_RUNTIME_OPT#--runtime }}${PODMAN_NET_OPT:+, host net})" ;;
    lpmx-version) echo "\`lpmx-job --version\` (start-up only)" ;;
    ch-version) echo "\`ch-run --version\` (start-up only)" ;;
    esac
}
read -r -a tools_req <<<"$TOOLS"
tools=()
for t in "${tools_req[@]}"; do
    case $t in
    bare | lpmx-reg | lpmx-oci | charliecloud) tools+=("$t") ;;
    podman) [ "$PODMAN_OK" = 1 ] && [ "$PODMAN_CALLS" -gt 0 ] && tools+=("$t") ;;
    *) die "unknown tool $t (TOOLS: bare lpmx-reg lpmx-oci charliecloud podman)" ;;
    esac
done

# Every tool once, as a check, before anything is timed.
for t in "${tools[@]}"; do
    # shellcheck disable=SC2046
    as_user $(tool_argv "$t" true) >"$WORK/logs/check-$t.log" 2>&1 ||
        { cat "$WORK/logs/check-$t.log" >&2; die "$t: \`$(tool_argv "$t" true)\` failed"; }
done

# ---------------------------------------------------------------- 5. the harness
# One Python process as the bench user starts every call (posix_spawn, stdout to /dev/null,
# stderr to a log per tool) and times it with CLOCK_MONOTONIC from spawn to its exit. It is a
# child subreaper: what a tool leaves running after its own exit (podman's conmon and its
# cleanup command) is adopted by it and waited for, untimed, before the next call, so that no
# call pays for an earlier one. The "linger" figure is that wait.
HARNESS=$WORK/harness.py
cat >"$HARNESS" <<'PY'
import ctypes, errno, gc, json, os, signal, sys, time

spec = json.load(open(sys.argv[1]))
out = open(spec["out"], "w")
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
devnull = os.open("/dev/null", os.O_RDWR)
me = os.getpid()
current = [0]

def on_alarm(signum, frame):
    if current[0]:
        os.kill(current[0], signal.SIGKILL)
signal.signal(signal.SIGALRM, on_alarm)

def spawn(argv, log):
    fa = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
          (os.POSIX_SPAWN_OPEN, 2, log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)]
    return os.posix_spawn(argv[0], argv, os.environ, file_actions=fa)

def reap_orphans(limit_s=30.0):
    """Waits until this process has no children left (adopted orphans included)."""
    t0 = time.monotonic_ns()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return time.monotonic_ns() - t0
        if pid == 0:
            if time.monotonic_ns() - t0 > limit_s * 1e9:
                return -1
            time.sleep(0.0005)

def one(tool):
    signal.alarm(120)
    t0 = time.monotonic_ns()
    pid = spawn(tool["argv"], tool["log"])
    current[0] = pid
    _, st, ru = os.wait4(pid, 0)
    t1 = time.monotonic_ns()
    current[0] = 0
    signal.alarm(0)
    cpu = int((ru.ru_utime + ru.ru_stime) * 1e9)
    return t1 - t0, os.waitstatus_to_exitcode(st), reap_orphans(), cpu

def procs():
    """pid -> (ppid, comm, VmRSS kB) of every process this user can read."""
    res = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            comm = s[s.index("(") + 1:s.rindex(")")]
            ppid = int(s[s.rindex(")") + 2:].split()[1])
            rss = 0
            with open(f"/proc/{d}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
            res[int(d)] = (ppid, comm, rss)
        except (OSError, ValueError):
            pass
    return res

def descendants(ps, root):
    kids = {}
    for p, (pp, _, _) in ps.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out

gc.disable()
tools = spec["tools"]
n = spec["calls"]
if spec["mode"] == "time":
    # Warm-up rounds, then the timed ones: in round r, tool k runs when it still has calls
    # due (podman's fewer calls are spread evenly); the order rotates every round.
    for r in range(spec["warmup"]):
        for t in tools:
            one(t)
    for r in range(n):
        due = [t for t in tools if (r + 1) * t["calls"] // n > r * t["calls"] // n]
        k = r % len(due)
        for pos, t in enumerate(due[k:] + due[:k]):
            ns, rc, linger, cpu = one(t)
            out.write(f"{r}\t{pos}\t{t['key']}\t{ns}\t{rc}\t{linger}\t{cpu}\n")
    out.close()
elif spec["mode"] == "resident":
    # Each tool runs `sleep N` once; half way, list the processes that are new below this
    # harness (orphans are adopted by it, so nothing escapes the tree) with their RSS.
    for t in tools:
        before = set(descendants(procs(), me))
        pid = spawn(t["argv"], t["log"])
        time.sleep(spec["look_after"])
        ps = procs()
        new = [p for p in descendants(ps, me) if p not in before]
        rows = [{"pid": p, "ppid": ps[p][0], "comm": ps[p][1], "rss_kb": ps[p][2],
                 "started": p == pid} for p in sorted(new)]
        json.dump({"key": t["key"], "pid": pid, "pid_comm": ps.get(pid, (0, "?", 0))[1],
                   "procs": rows}, out)
        out.write("\n")
        os.waitpid(pid, 0)
        reap_orphans()
    out.close()
PY
chmod 644 "$HARNESS"

# spec_json MODE CMD...: the harness's spec, for the tools in $tools.
spec_json() {
    local mode=$1 t calls argv; shift
    {
        for t in "${tools[@]}"; do
            calls=$CALLS; [ "$t" = podman ] && calls=$PODMAN_CALLS
            argv=$(tool_argv "$t" "$@")
            # shellcheck disable=SC2086  # split into words on purpose (no spaces in paths)
            printf '%s\n' $argv | jq -R . | jq -s --arg key "$t" --argjson calls "$calls" \
                --arg log "$U/stderr-$t.log" '{key: $key, calls: $calls, log: $log, argv: .}'
        done
    } | jq -s --arg mode "$mode" --argjson calls "$CALLS" --argjson warmup "$WARMUP" \
        --arg out "$U/$mode.tsv" '{mode: $mode, calls: $calls, warmup: $warmup, look_after: 2.0, out: $out, tools: .}'
}

# ---------------------------------------------------------------- 6. timed calls
bench_wait_quiet
BUSY_BEFORE=$(busy_jiffies | cut -d' ' -f1)
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
REG_LINES_BEFORE=$(grep -c '"GET /v2/' "$REG_LOG" || true)
spec_json time true >"$U/spec-time.json"
log "timing: $WARMUP warm-up rounds, then $CALLS rounds (${tools[*]}; podman $PODMAN_CALLS calls)"
START=$SECONDS
as_user /usr/bin/python3 "$HARNESS" "$U/spec-time.json" || die "the harness failed"
BENCH_SECONDS=$((SECONDS - START))
BUSY_SECONDS=$(busy_seconds_since "$BUSY_BEFORE")
REG_LINES_AFTER=$(grep -c '"GET /v2/' "$REG_LOG" || true)
LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
TSV=$U/time.tsv
TOOLS_CPU=$(awk -F'\t' '{ s += $7 } END { printf "%.0f", s / 1e9 }' "$TSV")
log "timed in ${BENCH_SECONDS}s"

# ---------------------------------------------------------------- 7. what stays beside the task
log "resident beside the task: each tool runs sleep 3"
spec_json resident sleep 3 >"$U/spec-resident.json"
as_user /usr/bin/python3 "$HARNESS" "$U/spec-resident.json" || die "the harness (resident) failed"
PAUSE_RSS=
if [ -f "$PAUSE_PIDFILE" ]; then
    PAUSE_RSS=$(awk '/^VmRSS:/{print $2}' "/proc/$(cat "$PAUSE_PIDFILE")/status" 2>/dev/null || true)
fi
# resident_cell KEY: "0" or "comm N MiB + ..." for everything new beside the task (not sleep)
resident_cell() {
    jq -r --arg k "$1" --arg pause "${PAUSE_RSS:-}" '
        select(.key == $k) |
        ([.procs[] | select(.comm != "sleep")]) as $b |
        (if ($b | length) == 0 then "0 (the started pid is `\(.pid_comm)` itself)"
         else ($b | map("\(.comm) \((.rss_kb / 1024 * 10 | round) / 10) MiB") | join(" + "))
              + " = **\(([$b[].rss_kb] | add) / 1024 * 10 | round / 10) MiB**" end)
        + (if $k == "podman" and $pause != "" then
             "; plus the user'"'"'s podman pause process \(($pause | tonumber) / 1024 * 10 | round / 10) MiB (one per user, stays after the task)"
           else "" end)' "$U/resident.tsv"
}
resident_detail() {
    jq -r '"- \(.key): started pid \(.pid) is `\(.pid_comm)`; new processes: " +
        ([.procs[] | "\(.comm) (pid \(.pid), ppid \(.ppid), \(.rss_kb) KiB\(if .started then ", the started pid" else "" end))"] | join(", "))' \
        "$U/resident.tsv"
}

# ---------------------------------------------------------------- 8. where the time goes
DIAG_ROWS=()
PERF_LINES=()
STRACE_TOP=()
subst() { sed "s#$WORK#\$WORK#g; s#$SHORT#\$SHORT#g"; }
if [ "$DIAG" = 1 ]; then
    log "diagnostics: strace -c -f and perf stat of each tool"
    PERF_RUNS=30
    diag_tools=("${tools[@]}")
    [[ " ${tools[*]} " == *" lpmx-"* ]] && diag_tools+=(lpmx-version)
    [[ " ${tools[*]} " == *" charliecloud "* ]] && diag_tools+=(ch-version)
    for t in "${diag_tools[@]}"; do
        [ "$t" = podman ] && runs=5 || runs=$PERF_RUNS
        # strace as the bench user (counts exact; its times inflated by tracing)
        sf=$U/strace-$t.txt
        # shellcheck disable=SC2046
        as_user strace -c -f -o "$sf" $(tool_argv "$t" true) >/dev/null 2>&1 || true
        # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
        total=$(awk '$NF == "total" { print $4 }' "$sf")
        calls_of() { awk -v re="^($1)\$" '$NF ~ re && $1 ~ /^[0-9.]+$/ { c += $4 } END{print c+0}' "$sf"; }
        ex=$(calls_of execve); mnt=$(calls_of 'mount|umount2|pivot_root'); opn=$(calls_of 'openat|open')
        sta=$(calls_of 'statx|newfstatat|stat|lstat|fstat|access|readlink'); syn=$(calls_of 'fsync|fdatasync|sync_file_range')
        thr=$(calls_of 'clone|clone3|fork|vfork')
        # perf stat as the bench user (perf_event_paranoid 2 makes the events `:u`: task-clock
        # still counts kernel time, page faults only those taken in user mode).
        pf=$U/perfstat-$t.txt
        if command -v perf >/dev/null 2>&1; then
            # shellcheck disable=SC2046
            as_user perf stat -x, -r "$runs" -e task-clock,page-faults,context-switches -o "$pf" -- \
                $(tool_argv "$t" true) >/dev/null 2>&1 || true
            tc=$(awk -F, '$3 ~ /^task-clock/{printf "%.2f", $1}' "$pf" 2>/dev/null)
            pg=$(awk -F, '$3 ~ /^page-faults/{printf "%d", $1}' "$pf" 2>/dev/null)
            cs=$(awk -F, '$3 ~ /^context-switches/{printf "%d", $1}' "$pf" 2>/dev/null)
        else tc=–; pg=–; cs=–; fi
        DIAG_ROWS+=("| $(tool_label "$t") | ${tc:-?} | ${pg:-?} | ${cs:-?} | $total | $ex | $thr | $mnt | $opn | $sta | $syn |")
        if [[ $t == lpmx-reg || $t == lpmx-oci || $t == charliecloud ]]; then
            # Time in system calls by name, over 20 calls (per call: divided by 20).
            sl=$U/strace20-$t.txt
            # shellcheck disable=SC2046,SC2016  # $@ and $i are the inner shell's
            as_user strace -c -f -o "$sl" sh -c 'i=0; while [ $i -lt 20 ]; do "$@" >/dev/null || exit 1; i=$((i+1)); done' \
                sh $(tool_argv "$t" true) >/dev/null 2>&1 || true
            # (wait4 is the loop's shell waiting for the call: left out.)
            STRACE_TOP+=("$(tool_label "$t"):" "$(awk 'NR>2 && $1 ~ /^[0-9.]+$/ && $NF != "total" && $NF != "wait4"' "$sl" |
                sort -k2,2gr | awk '{ n[NR] = $NF; s[NR] = $2; c[NR] = $4; tot += $2 }
                    END { printf "  all system calls %6.3f ms per call\n", tot * 1000 / 20
                          for (i = 1; i <= 8 && i <= NR; i++)
                              printf "  %-14s %6.3f ms in %5.1f calls (%4.1f %%)\n", n[i], s[i] * 1000 / 20, c[i] / 20, 100 * s[i] / tot }')")
        fi
    done
    # A CPU profile of 200 calls each (as root: kernel samples need it), in ms per call: by
    # object, and inclusive time below the kernel's entry points that differ between tools.
    if [ "$PERF" = 1 ] && command -v perf >/dev/null 2>&1; then
        PERF_FREQ=20000 PERF_CALLS=200
        KSYMS="exc_page_fault __x64_sys_execve exit_mmap __x64_sys_mount __x64_sys_umount __x64_sys_pivot_root
            __x64_sys_unshare __x64_sys_statx __x64_sys_newfstatat __x64_sys_readlink __x64_sys_openat
            __x64_sys_fdatasync task_work_run"
        for t in lpmx-reg lpmx-oci charliecloud; do
            [[ " ${tools[*]} " == *" $t "* ]] || continue
            pd=$WORK/perf-$t.data
            # shellcheck disable=SC2046,SC2016  # $@ and $i are the inner shell's
            (cd "$U/cwd" && perf record -q -g -e cpu-clock -F "$PERF_FREQ" -o "$pd" -- \
                setpriv --reuid="$BENCH_UID" --regid="$BENCH_GID" --init-groups env -i "${USER_ENV[@]}" \
                sh -c 'i=0; while [ $i -lt '"$PERF_CALLS"' ]; do "$@" >/dev/null || exit 1; i=$((i+1)); done' sh $(tool_argv "$t" true) \
                >"$WORK/logs/perf-$t.log" 2>&1) || continue
            perf report -i "$pd" --no-children --sort dso --stdio -n -g none 2>/dev/null | grep -v '^#' | grep '%' >"$pd.dso" || true
            perf report -i "$pd" --children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep '%' >"$pd.sym" || true
            ms=$(awk -v f="$PERF_FREQ" -v n="$PERF_CALLS" 'BEGIN{printf "%.9f", 1000 / f / n}')  # ms per call of one sample
            tot=$(awk '{ s += $2 } END { print s + 0 }' "$pd.dso")
            PERF_LINES+=("$(tool_label "$t"): $(awk -v t="$tot" -v m="$ms" 'BEGIN{printf "%.2f", t * m}') ms of CPU per call")
            mapfile -t -O "${#PERF_LINES[@]}" PERF_LINES < <(awk -v m="$ms" '$2 * m >= 0.02 {
                    d = $3; sub(/\.so.*/, "", d); sub(/-[0-9a-f]{7,}$/, "", d)
                    printf "  %-22s %6.2f ms\n", d, $2 * m }' "$pd.dso" | sed -n 1,6p)
            PERF_LINES+=("  kernel, inclusive, by entry point:")
            for k in $KSYMS; do
                awk -v k="$k" -v t="$tot" -v m="$ms" '$NF == k && $(NF-1) == "[k]" {
                        v = $1; sub(/%/, "", v); if (v * t * m / 100 >= 0.01) printf "    %-22s %6.2f ms\n", k, v * t * m / 100 }' "$pd.sym"
            done >"$pd.k"
            mapfile -t -O "${#PERF_LINES[@]}" PERF_LINES <"$pd.k"
        done
    fi
fi
elf_note() {  # FILE: size, linking, stripped
    local f=$1 s
    s=$(stat -c %s "$f")
    printf '%s KiB, %s, %s' "$(awk -v b="$s" 'BEGIN{printf "%.0f", b/1024}')" \
        "$(if static_bin "$f"; then echo static; else echo "dynamic: $(LC_ALL=C ldd "$f" | awk '/=>/{print $1}' | sed 's/\.so.*//' | paste -sd' ')"; fi)" \
        "$(file -b "$f" | grep -o 'not stripped\|stripped' | sed -n 1,1p)"
}

# ---------------------------------------------------------------- 9. table
# stats KEY: median p90 n failures (ms); p90 by nearest rank
stats() {
    awk -F'\t' -v k="$1" '$3 == k { if ($5 == 0) print $4 / 1e6; else f++ } END { print "F", f + 0 }' "$TSV" |
        sort -g | awk '$1 == "F" { f = $2; next } { a[++n] = $1 }
            END { if (n == 0) { print "- - 0", f; exit }
                  med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                  r = int(0.9 * n); if (r < 0.9 * n) r++; printf "%.2f %.2f %d %d\n", med, a[r], n, f }'
}
linger() {  # median ms a tool left processes behind after its own exit
    awk -F'\t' -v k="$1" '$3 == k && $6 >= 0 { print $6 / 1e6 }' "$TSV" | sort -g |
        awk '{ a[++n] = $1 } END { if (n) printf "%.1f", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }'
}
cpu_med() {  # KEY: median CPU ms (user + sys) per call, from wait4's rusage
    awk -F'\t' -v k="$1" '$3 == k { print $7 / 1e6 }' "$TSV" | sort -g |
        awk '{ a[++n] = $1 } END { if (n) printf "%.2f", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }'
}
per_call() {  # KEY: every timed call in ms, in call order
    awk -F'\t' -v k="$1" '$3 == k { printf "%s%.2f%s", (n++ ? " " : ""), $4 / 1e6, ($5 == 0 ? "" : "!") } END { print "" }' "$TSV"
}
read -r CH_MED _ _ _ <<<"$(stats charliecloud)"
read -r BARE_MED _ _ _ <<<"$(stats bare)"
row() {  # KEY
    local k=$1 med p90 n f ratio minus note=""
    read -r med p90 n f <<<"$(stats "$k")"
    [ "$f" -gt 0 ] && note=" ($f failed)"
    if [ "$med" = - ]; then echo "| $(tool_label "$k") | failed | – | – | – | – | $n$note |"; return; fi
    ratio=–; minus=–
    [ -n "$CH_MED" ] && [ "$CH_MED" != - ] && ratio=$(awk -v a="$med" -v b="$CH_MED" 'BEGIN{printf "%.2f×", a/b}')
    [ -n "$BARE_MED" ] && [ "$BARE_MED" != - ] && [ "$k" != bare ] && minus=$(awk -v a="$med" -v b="$BARE_MED" 'BEGIN{printf "%+.2f", a-b}')
    [ "$k" = bare ] && minus="0 (baseline)"
    echo "| $(tool_label "$k") | $med | $p90 | $ratio | $minus | $(resident_cell "$k") | $n$note |"
}
ver() { "$@" 2>&1 | sed -n 1,1p | tr -d '\r'; }
{
    echo "# Per-task container entry: lpmx-job run vs ch-run vs podman run"
    echo
    echo "Generated by \`contrib/bench/run.sh\` on $(date -u '+%F %T UTC')."
    echo
    echo "- Machine: $(bench_machine); cgroups: $(if [ -d /sys/fs/cgroup/unified ]; then echo "hybrid (v1 + v2 unified)"; elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo v2; else echo v1; fi)"
    echo "- Image: busybox-static $(ver busybox | awk '{print $2}') alone in one gzip layer ($LAYER_BYTES bytes), with /etc/passwd, /etc/group, empty /etc/hosts and /etc/resolv.conf and the usual mount points; built with umoci as an OCI layout, pushed with skopeo to docker-registry on https://127.0.0.1 (TLS, private CA). The same manifest ($MANIFEST_DIGEST) for every tool."
    echo "- Calls: $WARMUP untimed warm-up rounds, then $CALLS rounds; in each round every tool runs once (podman $PODMAN_CALLS times in all, spread evenly), in an order rotated every round. All as the ordinary user \`$BENCH_USER\`, started by one Python process (posix_spawn, stdout to /dev/null), timed with CLOCK_MONOTONIC from spawn to exit. Timing took ${BENCH_SECONDS}s."
    echo "- Other load: CPUs ${OTHER_BUSY}% busy with other work just before timing (after waiting ${waited}s for quiet; load average $LOAD_BEFORE before, $LOAD_AFTER after); while timing the machine was busy for ${BUSY_SECONDS} CPU-s of $((BENCH_SECONDS * $(nproc))), of which the timed calls used ${TOOLS_CPU} (the rest: the harness, podman's detached conmon and anything else running)."
    echo "- Registry requests during the timed calls: $((REG_LINES_AFTER - REG_LINES_BEFORE)) (every tool ran from its local store)."
    echo "- Versions: lpmx-job $(ver "$LPMX" --version | awk '{print $NF}') (release build of ${LPMX_REV:-git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ', src/ with uncommitted changes')}); ch-run $(ver env USER="$BENCH_USER" ch-run --version); $(ver podman --version) with $(ver conmon --version) and $(if [ -n "$PODMAN_RUNTIME_OPT" ] || ! command -v crun >/dev/null; then ver runc --version; else ver crun --version; fi), storage $PODMAN_DRIVER_SEEN"
    echo
    echo "| tool | median ms | p90 ms | ratio to ch-run | minus bare \`true\` (ms) | resident beside the task | timed calls |"
    echo "| --- | ---: | ---: | ---: | ---: | --- | ---: |"
    for t in "${tools[@]}"; do row "$t"; done
    echo
    echo "Ratio = the tool's median / ch-run's median. \"Minus bare\" = the tool's median minus the"
    echo "bare host \`true\`'s (the cost of spawning and waiting for any process from the harness)."
    echo "\"Resident beside the task\": each tool ran \`sleep 3\` once; 2 s in, every process new"
    echo "below the harness other than \`sleep\` itself, with its RSS (VmRSS)."
    echo "CPU per call (user + system, median, from wait4's rusage of the started process and the"
    echo "children it waited for): $(for t in "${tools[@]}"; do printf '%s %s ms; ' "$(tool_label "$t")" "$(cpu_med "$t")"; done | sed 's/; $//')."
    if [[ " ${tools[*]} " == *" podman "* ]]; then
        echo "Processes podman left running after its own exit were waited for, untimed, before the"
        echo "next call: a median $(linger podman) ms (the harness is their subreaper)."
    fi
    echo
    echo "## Exact commands"
    echo
    echo "Each one as \`$BENCH_USER\`, environment exactly \`$(printf '%s ' "${USER_ENV[@]}" | sed 's/ $//' | subst)\`, working directory \`\$WORK/u/cwd\`:"
    echo
    for t in "${tools[@]}"; do echo "- $(tool_label "$t"): \`$(tool_argv "$t" true | subst)\`"; done
    echo
    echo "Set-up, once, untimed: \`lpmx-job --config CFG --cache \$WORK/u/lpmx-reg pull $IMAGE\` (CFG names the CA) and \`lpmx-job --cache \$WORK/u/lpmx-oci pull oci:\$WORK/image/layout:bb\`; \`umoci unpack --rootless --image \$WORK/image/layout:bb \$WORK/u/bundle\` for ch-run; \`podman ... pull --cert-dir CADIR $IMAGE\` for podman."
    if [ "${#PODMAN_NOTES[@]}" -gt 0 ]; then
        echo
        echo "Podman on this host:"
        echo
        for n in "${PODMAN_NOTES[@]}"; do echo "- $(subst <<<"$n")"; done
    fi
    echo
    echo "## Resident beside the task (\`sleep 3\`), process by process"
    echo
    resident_detail | subst
    if [ -n "$PAUSE_RSS" ]; then
        echo "- podman's pause process (pid $(cat "$PAUSE_PIDFILE"), started by the set-up's first podman call, outside the harness): $PAUSE_RSS KiB"
    fi
    if [ "${#DIAG_ROWS[@]}" -gt 0 ]; then
        echo
        echo "## Where the time goes (one call each; perf: mean of 30 calls, podman 5)"
        echo
        echo "| tool | task-clock ms | page faults | context switches | syscalls | execve | clone | mount, umount, pivot_root | open | stat-like | fsync-like |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        printf '%s\n' "${DIAG_ROWS[@]}"
        echo
        echo "perf stat ran as $BENCH_USER (\`perf stat -r N -e task-clock,page-faults,context-switches -- CMD\`; with perf_event_paranoid $(cat /proc/sys/kernel/perf_event_paranoid) the events are \`:u\`: task-clock still includes kernel time, page faults only count those taken in user mode); the syscall counts come from \`strace -c -f\` as $BENCH_USER, over all processes of the call (for podman: its client and all it forked, conmon and runc included)."
        echo
        echo "Binaries: lpmx-job $(elf_note "$LPMX"); ch-run $(elf_note "$(command -v ch-run)")."
        if [ "${#STRACE_TOP[@]}" -gt 0 ]; then
            echo
            echo "Where the system-call time goes, per call (\`strace -c -f\` of 20 calls in a \`sh\` loop, as $BENCH_USER; wait4 left out; tracing inflates the times, the shares hold roughly):"
            echo
            echo '```'
            printf '%s\n' "${STRACE_TOP[@]}"
            echo '```'
        fi
        if [ "${#PERF_LINES[@]}" -gt 0 ]; then
            echo
            echo "CPU per call, from \`perf record -g -e cpu-clock -F 20000\` of a \`sh\` loop of 200 calls (as root, the loop started through \`setpriv\` as $BENCH_USER; sampling adds its own overhead; the entry points overlap: page faults happen inside execve and the others):"
            echo
            echo '```'
            printf '%s\n' "${PERF_LINES[@]}"
            echo '```'
        fi
    fi
    echo
    echo "## Every timed call (ms, in call order; \`!\` = non-zero exit)"
    echo
    echo '<details><summary>per-call numbers</summary>'
    echo
    for t in "${tools[@]}"; do
        echo "- $(tool_label "$t"): $(per_call "$t")"
    done
    echo
    echo '</details>'
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
for t in "${tools[@]}"; do
    if [ -s "$U/stderr-$t.log" ]; then
        log "$t wrote to stderr (first lines):"
        head -n 5 "$U/stderr-$t.log" >&2
    fi
done
echo
cat "$RESULTS"
