#!/usr/bin/env bash
# shellcheck disable=SC2119  # common.sh functions with optional arguments, called without
# Per-task containers under Slurm: time from `srun -n N` start until every task has printed,
# for a bare `srun -n N /bin/echo x`, `srun -n N lpmx-job run IMG /bin/echo x` and
# `srun -n N ch-run DIR -- /bin/echo x`, N = 1 2 4 8, interleaved, on a real one-node Slurm
# with munge started here (tests/setup/slurm.sh).
#
# Run as root:   bash contrib/bench/srun.sh          (about 3-5 minutes)
# See contrib/bench/README.md for what is measured and how to read the table.
#
# Environment:
#   ROUNDS=40            timed rounds; in each, every (command, N) runs once
#   WARMUP=2             untimed rounds first
#   NS="1 2 4 8"         task counts (more tasks than CPUs run with srun --overcommit)
#   LPMX_BIN=PATH        lpmx-job binary (default /tmp/bench-target/release/lpmx-job)
#   LPMX_REV=TEXT        what LPMX_BIN was built from, for the report (default: git HEAD)
#   BENCH_USER=NAME      the ordinary user every measured command runs as (lpmxbench)
#   RESULTS=FILE         markdown output (contrib/bench/results-srun.md)
#   QUIET_MAX=300        longest wait for other work on the machine to stop before timing
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-40}
WARMUP=${WARMUP:-2}
NS=${NS:-1 2 4 8}
BENCH_USER=${BENCH_USER:-lpmxbench}
LPMX_BIN=${LPMX_BIN:-/tmp/bench-target/release/lpmx-job}
RESULTS=${RESULTS:-$HERE/results-srun.md}
SYS_PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH=$SYS_PATH

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages, starts Slurm and munge, creates $BENCH_USER)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer"
read -r -a ns <<<"$NS"
[ "${#ns[@]}" -gt 0 ] || die "NS is empty"
for n in "${ns[@]}"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "NS: $n is not a positive integer"; done
[ -x "$LPMX_BIN" ] || die "no lpmx-job at $LPMX_BIN; build it: CARGO_TARGET_DIR=/tmp/bench-target cargo build --release --manifest-path $REPO/Cargo.toml"
[ -f "$REPO/tests/setup/slurm.sh" ] || die "no $REPO/tests/setup/slurm.sh: run this from a checkout of lpmx-job"

# ---------------------------------------------------------------- 1. packages, user
# shellcheck source=contrib/bench/common.sh
source "$HERE/common.sh"
bench_install slurmctld:slurmctld slurmd:slurmd srun:slurm-client munged:munge \
    docker-registry:docker-registry skopeo:skopeo umoci:umoci ch-run:charliecloud openssl:openssl \
    python3:python3 jq:jq curl:curl setpriv:util-linux
bench_user
bench_workdirs /tmp/lps
bench_user_area          # U: everything the bench user writes lives under here

# ---------------------------------------------------------------- 2. the image, per tool
IMGDIR=$WORK/image
bench_busybox_image "$IMGDIR"       # sets LAYOUT (tag "bb")
log "image: busybox-static, 1 layer of $LAYER_BYTES bytes (gzip), manifest $MANIFEST_DIGEST"
bench_registry
LPMX_CFG=$U/lpmx-config.yml
bench_push bench/bb "$LPMX_CFG"     # sets IMAGE

USER_ENV=(HOME="$BENCH_HOME" USER="$BENCH_USER" LOGNAME="$BENCH_USER"
    PATH="$SYS_PATH" LANG=C.UTF-8 XDG_RUNTIME_DIR="$WORK/xdg-run" TMPDIR="$U/tmp")
as_user() { (cd "$U/cwd" && runuser -u "$BENCH_USER" -- env -i "${USER_ENV[@]}" ${SLURM_CONF:+SLURM_CONF=$SLURM_CONF} "$@"); }

log "lpmx-job: pulling $IMAGE into its cache; ch-run: umoci unpack --rootless of the layout"
as_user "$LPMX" --config "$LPMX_CFG" --cache "$U/lpmx" -q pull "$IMAGE" >"$WORK/logs/lpmx-pull.log" 2>&1 ||
    { cat "$WORK/logs/lpmx-pull.log" >&2; die "lpmx-job pull $IMAGE into $U/lpmx failed"; }
as_user umoci unpack --rootless --image "$LAYOUT:bb" "$U/bundle" >"$WORK/logs/umoci.log" 2>&1 ||
    { cat "$WORK/logs/umoci.log" >&2; die "umoci unpack of $LAYOUT:bb into $U/bundle failed"; }
CH_TREE=$U/bundle/rootfs

# ---------------------------------------------------------------- 3. Slurm
# The test suite's own one-node Slurm with munge (private config, ports, spool and key), with
# its lpmx-job prolog and epilog, which cost one `scontrol show job` per job here (the job
# names no image). tests/setup/lib.sh brings its own die; ours stays.
LPMX_TEST_USER=$BENCH_USER
# shellcheck source=tests/setup/lib.sh
source "$REPO/tests/setup/lib.sh"
# shellcheck source=tests/setup/slurm.sh
source "$REPO/tests/setup/slurm.sh"
die() { log "ERROR: $*"; exit 1; }
bench_stop_services() { stop_slurm; }
log "starting munged, slurmctld and slurmd (logs in $WORK/logs)"
start_slurm >"$WORK/logs/start-slurm.log"
CPUS=$(nproc)

# The exact argv of each command for N tasks. Steps run inside one allocation of all the
# node's CPUs; a step of more tasks than the allocation has CPUs needs --overcommit (without
# it srun refuses: "More processors requested than permitted").
srun_argv() {  # CMD N
    local oc=""
    [ "$2" -gt "$CPUS" ] && oc=" --overcommit"
    case $1 in
    bare) echo "$(type -P srun) -n $2$oc /bin/echo x" ;;
    lpmx) echo "$(type -P srun) -n $2$oc $LPMX --config $LPMX_CFG --cache $U/lpmx run $IMAGE /bin/echo x" ;;
    charliecloud) echo "$(type -P srun) -n $2$oc $(type -P ch-run) $CH_TREE -- /bin/echo x" ;;
    esac
}
label() {
    case $1 in
    bare) echo "bare \`srun\`" ;;
    lpmx) echo "\`srun lpmx-job run\`" ;;
    charliecloud) echo "\`srun ch-run\`" ;;
    esac
}
cmds=(bare lpmx charliecloud)

# ---------------------------------------------------------------- 4. the harness
# One Python process as the bench user, inside one allocation (salloc), starts every srun
# (posix_spawn, stdout a pipe, stderr to a log per command) and timestamps, with
# CLOCK_MONOTONIC from the spawn, the moment the Nth task's line arrives and srun's exit.
# A call counts as failed unless srun exits 0 having printed exactly N lines "x".
HARNESS=$WORK/harness.py
cat >"$HARNESS" <<'PY'
import json, os, signal, subprocess, sys, time

spec = json.load(open(sys.argv[1]))
out = open(spec["out"], "w")
current = [0]

def on_alarm(signum, frame):
    if current[0]:
        os.kill(current[0], signal.SIGKILL)
signal.signal(signal.SIGALRM, on_alarm)

def steps_left():
    """The allocation's steps slurmctld still knows of (one `squeue` call)."""
    r = subprocess.run(["squeue", "--steps", "-h", "-j", os.environ["SLURM_JOB_ID"], "-o", "%i"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return r.stdout.split() if r.returncode == 0 else ["?"]

def settle():
    """Untimed: wait (up to 10 s) until slurmctld has released the last step, so that the
    next srun does not wait for its CPUs ("step creation temporarily disabled")."""
    t0 = time.monotonic()
    while steps_left() and time.monotonic() - t0 < 10:
        time.sleep(0.02)

def one(c):
    r, w = os.pipe()
    err = os.open(spec["errfile"], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    fa = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, w, 1),
          (os.POSIX_SPAWN_DUP2, err, 2), (os.POSIX_SPAWN_CLOSE, r), (os.POSIX_SPAWN_CLOSE, w),
          (os.POSIX_SPAWN_CLOSE, err)]
    signal.alarm(120)
    t0 = time.monotonic_ns()
    pid = os.posix_spawn(c["argv"][0], c["argv"], os.environ, file_actions=fa)
    current[0] = pid
    os.close(w)
    buf, lines, t_all = b"", 0, -1
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        buf += b
        lines = buf.count(b"\n")
        if lines >= c["n"] and t_all < 0:
            t_all = time.monotonic_ns() - t0
    _, st = os.waitpid(pid, 0)
    t_exit = time.monotonic_ns() - t0
    current[0] = 0
    signal.alarm(0)
    os.close(r)
    os.lseek(err, 0, os.SEEK_SET)
    stderr = b""
    while True:
        b = os.read(err, 65536)
        if not b:
            break
        stderr += b
    os.close(err)
    if stderr:
        with open(c["log"], "ab") as f:
            f.write(stderr)
    # srun waited for the CPUs of an earlier step: the call timed that wait too.
    waited = int(b"step creation temporarily disabled" in stderr)
    rc = os.waitstatus_to_exitcode(st)
    ok = rc == 0 and buf.split(b"\n")[:-1] == [b"x"] * c["n"] and buf.endswith(b"\n")
    settle()
    return t_all, t_exit, rc, lines, ok, waited

calls = spec["calls"]           # one per (command, N)
kinds = spec["cmds"]
for r in range(-spec["warmup"], spec["rounds"]):
    # Every N in turn, the commands in an order rotated every round.
    k = r % len(kinds)
    for n in spec["ns"]:
        for key in kinds[k:] + kinds[:k]:
            c = calls[f"{key}/{n}"]
            t_all, t_exit, rc, lines, ok, waited = one(c)
            if r >= 0:
                out.write(f"{r}\t{n}\t{key}\t{t_all}\t{t_exit}\t{rc}\t{lines}\t{int(ok)}\t{waited}\n")
                out.flush()
out.close()
PY
chmod 644 "$HARNESS"

spec_json() {
    local c n
    for n in "${ns[@]}"; do
        for c in "${cmds[@]}"; do
            # shellcheck disable=SC2046  # split into words on purpose (no spaces in paths)
            printf '%s\n' $(srun_argv "$c" "$n") | jq -R . | jq -s --arg key "$c/$n" --argjson n "$n" \
                --arg log "$U/stderr-$c.log" '{key: $key, n: $n, log: $log, argv: .}'
        done
    done | jq -s --argjson rounds "$ROUNDS" --argjson warmup "$WARMUP" --arg out "$U/time.tsv" \
        --arg errfile "$U/stderr-call.log" \
        --arg cmds "${cmds[*]}" --arg ns "${ns[*]}" \
        '{rounds: $rounds, warmup: $warmup, out: $out, errfile: $errfile, cmds: ($cmds | split(" ")),
          ns: ($ns | split(" ") | map(tonumber)), calls: (map({(.key): .}) | add)}'
}
spec_json >"$U/spec.json"
chown "$BENCH_USER:" "$U/spec.json"

# The allocation: every CPU of the node, for as long as the timing takes.
SALLOC=(salloc --quiet -N 1 -n "$CPUS" -t 60 -J lpmx-bench-srun)
# Every command once, as a check, inside an allocation like the timed one.
for n in "${ns[@]}"; do
    for c in "${cmds[@]}"; do
        # shellcheck disable=SC2046
        out=$(as_user "${SALLOC[@]}" $(srun_argv "$c" "$n") 2>"$WORK/logs/check-$c-$n.log") ||
            { cat "$WORK/logs/check-$c-$n.log" >&2; die "$c: \`$(srun_argv "$c" "$n")\` failed"; }
        [ "$out" = "$(yes x | head -n "$n")" ] ||
            { cat "$WORK/logs/check-$c-$n.log" >&2; die "$c: \`$(srun_argv "$c" "$n")\` printed '$out', not $n lines x"; }
    done
done
log "every command ran once with its N tasks"

# ---------------------------------------------------------------- 5. timed rounds
bench_wait_quiet
BUSY_BEFORE=$(busy_jiffies | cut -d' ' -f1)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
REG_LINES_BEFORE=$(grep -c '"GET /v2/' "$REG_LOG" || true)
log "timing: $WARMUP warm-up rounds, then $ROUNDS rounds of ${cmds[*]} for N = ${ns[*]}"
START=$SECONDS
as_user "${SALLOC[@]}" /usr/bin/python3 "$HARNESS" "$U/spec.json" 2>"$WORK/logs/harness.log" ||
    { cat "$WORK/logs/harness.log" >&2; die "the harness failed"; }
BENCH_SECONDS=$((SECONDS - START))
BUSY_SECONDS=$(busy_seconds_since "$BUSY_BEFORE")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
REG_LINES_AFTER=$(grep -c '"GET /v2/' "$REG_LOG" || true)
TSV=$U/time.tsv
log "timed in ${BENCH_SECONDS}s"

# ---------------------------------------------------------------- 6. table
# stats N CMD COLUMN: median min max count failures (ms) of the calls that succeeded;
# COLUMN 4 = until the Nth line, 5 = until srun's exit.
stats() {
    awk -F'\t' -v n="$1" -v k="$2" -v c="$3" '$2 == n && $3 == k { if ($8 == 1) print $c / 1e6; else f++ }
            END { print "F", f + 0 }' "$TSV" |
        sort -g | awk '$1 == "F" { f = $2; next } { a[++n] = $1 }
            END { if (n == 0) { print "- - - 0", f; exit }
                  med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                  printf "%.1f %.1f %.1f %d %d\n", med, a[1], a[n], n, f }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "-" || b == "-" || b == 0) print "–"; else printf "%.2f", a / b }'; }
per_call() {  # N CMD: every timed call (ms until the Nth line), in call order
    awk -F'\t' -v n="$1" -v k="$2" '$2 == n && $3 == k { printf "%s%.1f%s", (m++ ? " " : ""), $4 / 1e6, ($8 == 1 ? "" : "!") } END { print "" }' "$TSV"
}
ver() { "$@" 2>&1 | sed -n 1,1p | tr -d '\r'; }
subst() { sed "s#$WORK#\$WORK#g"; }
{
    echo "# Per-task containers under Slurm: \`srun -n N\` until every task has printed"
    echo
    echo "Generated by \`contrib/bench/srun.sh\` on $(date -u '+%F %T UTC')."
    echo
    echo "- Machine: $(bench_machine)."
    echo "- Slurm: $(sinfo --version) with munge, one node ($CPUS CPUs), \`SelectType=select/cons_tres\`, \`CR_CPU\`, \`TaskPlugin=task/none\`, \`ProctrackType=proctrack/linuxproc\`, partition \`OverSubscribe=FORCE:4\`, the lpmx-job prolog and epilog of \`integrations/slurm\` installed (as \`tests/setup/slurm.sh\` starts it). Every \`srun\` is a step of one allocation \`${SALLOC[*]}\` (the job's other steps are its own, so no scheduling is timed); steps of more tasks than the $CPUS CPUs run with \`--overcommit\`."
    echo "- Image: busybox-static $(ver busybox | awk '{print $2}') alone in one gzip layer ($LAYER_BYTES bytes, manifest $MANIFEST_DIGEST): lpmx-job runs it from its cache (pulled once from docker-registry on https://127.0.0.1), ch-run the tree \`umoci unpack --rootless\` made of the same OCI layout."
    echo "- Rounds: $WARMUP untimed, then $ROUNDS; in a round every N in turn and, for each N, the three commands in an order rotated every round. All as the ordinary user \`$BENCH_USER\`, started by one Python process (posix_spawn, stdout a pipe) timed with CLOCK_MONOTONIC from the spawn of \`srun\` until the Nth line \`x\` arrived. A call counts only if \`srun\` exited 0 with exactly N lines \`x\`. Timing took ${BENCH_SECONDS}s."
    echo "- Load: CPUs ${OTHER_BUSY}% busy with other work just before timing (after waiting ${waited}s for quiet); load average (1, 5, 15 min) $LOAD_BEFORE before, $LOAD_AFTER after; while timing the machine was busy for ${BUSY_SECONDS} CPU-s of $((BENCH_SECONDS * CPUS))."
    echo "- Registry requests during the timed calls: $((REG_LINES_AFTER - REG_LINES_BEFORE)) (lpmx-job ran from its cache)."
    echo "- Versions: lpmx-job $(ver "$LPMX" --version | awk '{print $NF}') (release build of ${LPMX_REV:-git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ', src/ with uncommitted changes')}); ch-run $(ver env USER="$BENCH_USER" ch-run --version); $(ver srun --version)."
    echo
    echo "Milliseconds from \`srun\` start until all N tasks have printed: median (min–max)."
    echo
    echo "| N | bare \`srun\` | \`srun ch-run\` | \`srun lpmx-job run\` | lpmx-job / ch-run | lpmx-job / bare | lpmx-job − ch-run (ms) | calls (failed) |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for n in "${ns[@]}"; do
        read -r bm bl bh bc bf <<<"$(stats "$n" bare 4)"
        read -r cm cl ch cc cf <<<"$(stats "$n" charliecloud 4)"
        read -r lm ll lh lc lf <<<"$(stats "$n" lpmx 4)"
        diff=$(awk -v a="$lm" -v b="$cm" 'BEGIN{ if (a == "-" || b == "-") print "–"; else printf "%+.1f", a - b }')
        echo "| $n | $bm ($bl–$bh) | $cm ($cl–$ch) | $lm ($ll–$lh) | $(ratio "$lm" "$cm") | $(ratio "$lm" "$bm") | $diff | $bc ($bf), $cc ($cf), $lc ($lf) |"
    done
    echo
    echo "Ratios and the difference are of the medians. Calls: bare, ch-run, lpmx-job."
    echo "After every call, untimed, the harness waited until slurmctld had released the step (\`squeue --steps\` empty), so that no srun waits for an earlier step's CPUs; timed calls that still printed \"step creation temporarily disabled\": $(awk -F'\t' '$9 == 1' "$TSV" | wc -l) of $(wc -l <"$TSV")."
    echo "Target (issue 5): lpmx-job within 10% of \`srun ch-run\`, i.e. a ratio of at most 1.10."
    echo
    echo "Until \`srun\` itself exited (ms, median): $(for n in "${ns[@]}"; do
        printf 'N=%s: bare %s, ch-run %s, lpmx-job %s; ' "$n" "$(stats "$n" bare 5 | cut -d' ' -f1)" \
            "$(stats "$n" charliecloud 5 | cut -d' ' -f1)" "$(stats "$n" lpmx 5 | cut -d' ' -f1)"; done | sed 's/; $//')."
    echo
    echo "## Exact commands"
    echo
    echo "As \`$BENCH_USER\`, environment exactly \`$(printf '%s ' "${USER_ENV[@]}" "SLURM_CONF=$SLURM_CONF" | sed 's/ $//' | subst)\` plus what \`salloc\` sets, working directory \`\$WORK/u/cwd\` (shown for N=${ns[-1]}):"
    echo
    for c in "${cmds[@]}"; do echo "- $(label "$c"): \`$(srun_argv "$c" "${ns[-1]}" | subst)\`"; done
    echo
    echo "## Every timed call (ms until all tasks printed, in call order; \`!\` = failed)"
    echo
    echo '<details><summary>per-call numbers</summary>'
    echo
    for n in "${ns[@]}"; do
        for c in "${cmds[@]}"; do echo "- N=$n, $(label "$c"): $(per_call "$n" "$c")"; done
    done
    echo
    echo '</details>'
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
for c in "${cmds[@]}"; do
    if [ -s "$U/stderr-$c.log" ]; then
        log "$c wrote to stderr (first lines):"
        head -n 5 "$U/stderr-$c.log" >&2
    fi
done
echo
cat "$RESULTS"
