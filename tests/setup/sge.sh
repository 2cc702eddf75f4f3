# shellcheck shell=bash
# A real one-node Grid Engine (Debian gridengine 8.1.9: sge_qmaster + sge_execd) for the SGE
# tests. Sourced; needs WORK, REPO and LPMX_TEST_USER.
#
# Debian's cell is machine-wide, unlike the test Slurm: SGE_ROOT=/var/lib/gridengine,
# SGE_CELL=default, the ports of /etc/services (6444, 6445), spool in /var/spool/gridengine.
# The packages' postinst created the cell (debconf answers: preseed_packages in packages.sh).
# So that a second run, a session that left SGE running, or two runs at once all work:
#   - daemons another live run of this harness uses are reused; daemons left by an earlier
#     session are stopped and started afresh, with a clean environment (jobs and their
#     prolog/epilog inherit sge_execd's environment);
#   - each run adds its own queue `lpmx_RUN` (this host, 2 slots, integrations/sge's prolog
#     and epilog as a site installs them) and removes it at exit; queues of runs that are
#     gone are removed at start;
#   - each run leaves a marker in $LPMX_SGE_RUNS; the last run out stops the daemons if a
#     run of this harness started them (never ones it found running).
# Machine-wide settings written each time (idempotent): host_aliases (the host name resolves
# to 127.0.0.1, which SGE calls "localhost"), admin/submit host, a scheduler that runs every
# second, and the parallel environment `lpmx`.
# Sets: SGE_TEST_ENV (array of NAME=VALUE for the test executables), LPMX_SGE_QUEUE.

SGE_ROOT=/var/lib/gridengine
SGE_CELL=default
SGE_TEST_ENV=()
LPMX_SGE_QUEUE=
LPMX_SGE_PE=lpmx
LPMX_SGE_RUNS=/run/lpmx-test-sge
LPMX_SGE_SPOOL=/var/spool/gridengine

sge_fail() {
    local f
    for f in "$LPMX_SGE_SPOOL"/qmaster/messages "$LPMX_SGE_SPOOL"/execd/*/messages "$WORK/logs/sge-daemons.log"; do
        [ -s "$f" ] || continue
        echo "---- last lines of $f ----" >&2
        tail -n 25 "$f" >&2
    done
    die "$*"
}

# The live daemon named by a pid file, or nothing.
sge_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

# Where sge_qmaster and sge_execd write their pid by themselves, or when started by Debian's
# init scripts (SGE_MASTER_PIDFILE, SGE_EXECD_PIDFILE).
qmaster_pid() {
    sge_pid "$LPMX_SGE_SPOOL/qmaster/qmaster.pid" sge_qmaster ||
        sge_pid /run/gridengine/qmaster.pid sge_qmaster
}

execd_pid() {
    local f
    for f in "$LPMX_SGE_SPOOL"/execd/*/execd.pid /run/gridengine/execd.pid; do
        sge_pid "$f" sge_execd && return 0
    done
    return 1
}

# A daemon started as a site's init script would: no environment of this shell (a job and its
# prolog get sge_execd's environment, merged under the job's own).
sge_daemon() {
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SGE_ROOT="$SGE_ROOT" SGE_CELL="$SGE_CELL" \
        "$@" </dev/null >>"$WORK/logs/sge-daemons.log" 2>&1
}

# The state letters of this run's queue instance (empty when it takes jobs; u: no execd).
queue_state() {
    timeout 10 qstat -f -q "$LPMX_SGE_QUEUE" 2>/dev/null |
        awk -v q="$LPMX_SGE_QUEUE@$1" '$1 == q { print ($6 == "" ? "ok" : $6) }'
}

# Removes a queue after deleting the jobs still in it.
remove_queue() {
    local q=$1 jobs i
    timeout 10 qmod -d "$q" >/dev/null 2>&1 || true
    for i in $(seq 1 20); do
        jobs=$(timeout 10 qstat -u '*' -q "$q" 2>/dev/null | awk 'NR > 2 { print $1 }' | sort -u | tr '\n' ' ')
        [ -n "${jobs// /}" ] || break
        # shellcheck disable=SC2086 # one word per job id
        [ "$i" = 1 ] && timeout 10 qdel -f $jobs >/dev/null 2>&1
        sleep 0.5
    done
    timeout 10 qconf -dq "$q" >/dev/null 2>&1 || warn "could not remove the SGE queue $q"
}

start_sge() {
    local host run q
    export SGE_ROOT SGE_CELL
    host=$(hostname)
    run=$(basename "$WORK")
    run=${run##*.}
    { [ -s "$SGE_ROOT/$SGE_CELL/common/bootstrap" ] && [ -s "$SGE_ROOT/$SGE_CELL/common/act_qmaster" ]; } ||
        die "the Grid Engine cell $SGE_ROOT/$SGE_CELL is not configured (gridengine installed without" \
            "the debconf answers of preseed_packages?): apt-get purge gridengine-common, then re-run"
    mkdir -p "$LPMX_SGE_RUNS" "$WORK/sge"
    echo "$WORK" >"$LPMX_SGE_RUNS/$run"
    LPMX_SGE_QUEUE=lpmx_$run

    # Without the alias, sge_qmaster (which finds itself as "localhost") and the host name
    # in act_qmaster are two hosts, and execd and clients are refused.
    local addr aliases=$SGE_ROOT/$SGE_CELL/common/host_aliases
    addr=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')
    if [[ $addr == 127.* ]] && ! grep -qxF "$host localhost" "$aliases" 2>/dev/null; then
        [ -z "$(qmaster_pid)" ] ||
            die "sge_qmaster (pid $(qmaster_pid)) runs without '$host localhost' in $aliases: stop it (qconf -km) and re-run"
        echo "$host localhost" >>"$aliases"
        chown sgeadmin:sgeadmin "$aliases"
        chmod 644 "$aliases"
    fi

    # Daemons an earlier session left running carry that session's environment into every
    # job and hook: unless another run of this harness is using them now, start afresh.
    if ! other_sge_run "$run" && [ -n "$(qmaster_pid)$(execd_pid)" ]; then
        info "stopping SGE daemons left by an earlier run (qmaster $(qmaster_pid || echo -), execd $(execd_pid || echo -))"
        stop_sge_daemons
    fi
    local started=() i
    if [ -z "$(qmaster_pid)" ]; then
        sge_daemon sge_qmaster || sge_fail "sge_qmaster did not start"
        started+=(sge_qmaster)
    fi
    for i in $(seq 1 60); do
        timeout 10 qstat >/dev/null 2>&1 && break
        [ "$i" = 60 ] && sge_fail "sge_qmaster (pid $(qmaster_pid || echo none)) does not answer qstat within 30s"
        sleep 0.5
    done
    qconf -sh 2>/dev/null | grep -qxF "$host" || quiet qconf -ah "$host"
    qconf -ss 2>/dev/null | grep -qxF "$host" || quiet qconf -as "$host"
    if [ -z "$(execd_pid)" ]; then
        sge_daemon sge_execd || sge_fail "sge_execd did not start on $host"
        started+=(sge_execd)
    fi
    [ "${#started[@]}" -eq 0 ] || touch "$LPMX_SGE_RUNS/.started-by-harness"

    # The scheduler's default 15 s interval would make every test job wait that long.
    qconf -ssconf >"$WORK/sge/sched.conf" || sge_fail "qconf -ssconf failed"
    sed -i -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
        -e 's/^flush_submit_sec .*/flush_submit_sec 1/' \
        -e 's/^flush_finish_sec .*/flush_finish_sec 1/' "$WORK/sge/sched.conf"
    quiet qconf -Msconf "$WORK/sge/sched.conf"

    # Slots for `mpirun -np $NSLOTS` from any queue that lists it (tight integration: Open MPI
    # starts remote ranks through `qrsh -inherit`, hence control_slaves).
    cat >"$WORK/sge/pe" <<EOF
pe_name            $LPMX_SGE_PE
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$fill_up
control_slaves     TRUE
job_is_first_task  FALSE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
    if qconf -spl 2>/dev/null | grep -qxF "$LPMX_SGE_PE"; then
        quiet qconf -Mp "$WORK/sge/pe"
    else
        quiet qconf -Ap "$WORK/sge/pe"
    fi

    # Queues of runs that are gone (killed before their cleanup).
    for q in $(qconf -sql 2>/dev/null | grep '^lpmx_' || true); do
        local w
        w=$(cat "$LPMX_SGE_RUNS/${q#lpmx_}" 2>/dev/null) || w=
        if [ -z "$w" ] || [ ! -d "$w" ]; then
            info "removing the queue $q of a run that is gone"
            remove_queue "$q"
            rm -f "$LPMX_SGE_RUNS/${q#lpmx_}"
        fi
    done

    # A full queue file, as `qconf -Aq` wants. The prolog and epilog are the repository's
    # scripts as a site installs them: sge_shepherd runs them as the job's owner in the job's
    # environment (what they need comes with the job: qsub -v, see integrations/sge/README.md).
    # No load threshold: the machine is shared with builds, and an alarm state would hold jobs.
    { [ -x "$REPO/integrations/sge/prolog.sh" ] && [ -x "$REPO/integrations/sge/epilog.sh" ]; } ||
        die "integrations/sge/prolog.sh and epilog.sh must be executable (sge_shepherd execs them)"
    cat >"$WORK/sge/queue" <<EOF
qname                 $LPMX_SGE_QUEUE
hostlist              $host
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               $LPMX_SGE_PE
rerun                 FALSE
slots                 2
tmpdir                /tmp
shell                 /bin/sh
prolog                $REPO/integrations/sge/prolog.sh
epilog                $REPO/integrations/sge/epilog.sh
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
    quiet qconf -Aq "$WORK/sge/queue"
    local state=""
    for i in $(seq 1 120); do
        state=$(queue_state "$host")
        [ "$state" = ok ] && break
        [ "$i" = 120 ] && sge_fail "the queue $LPMX_SGE_QUEUE@$host does not take jobs within 60s (states '${state:-none}'; u: no sge_execd)"
        sleep 0.5
    done

    # The ordinary user can submit, and the job runs through the prolog and epilog.
    local out=$WORK/scratch/sge-check.out text
    text=$(cd / && runuser -u "$LPMX_TEST_USER" -- env -i PATH=/usr/bin:/bin SGE_ROOT="$SGE_ROOT" \
        SGE_CELL="$SGE_CELL" timeout 120 qsub -sync y -b y -q "$LPMX_SGE_QUEUE" -N lpmx-check \
        -j y -o "$out" echo sge-ok 2>&1) || sge_fail "qsub -sync y as $LPMX_TEST_USER on $LPMX_SGE_QUEUE failed: $text"
    [ "$(cat "$out" 2>/dev/null)" = sge-ok ] ||
        sge_fail "the check job on $LPMX_SGE_QUEUE@$host wrote '$(cat "$out" 2>/dev/null)' to $out, not sge-ok ($text)"
    rm -f "$out"
    # shellcheck disable=SC2034 # read by write_test_env (tests.sh)
    SGE_TEST_ENV=(
        "LPMX_TEST_SGE=1"
        "SGE_ROOT=$SGE_ROOT"
        "SGE_CELL=$SGE_CELL"
        "LPMX_TEST_SGE_QUEUE=$LPMX_SGE_QUEUE"
        "LPMX_TEST_SGE_PE=$LPMX_SGE_PE"
    )
    info "SGE $(qstat -help 2>/dev/null | head -n1 | awk '{print $2}') on $host: queue $LPMX_SGE_QUEUE (2 slots), pe $LPMX_SGE_PE${started:+, started ${started[*]}}"
}

stop_sge() {
    [ -n "$LPMX_SGE_QUEUE" ] || return 0
    local run=${LPMX_SGE_QUEUE#lpmx_} m w others=0 pid
    if timeout 10 qconf -sql 2>/dev/null | grep -qxF "$LPMX_SGE_QUEUE"; then
        remove_queue "$LPMX_SGE_QUEUE"
    fi
    rm -f "$LPMX_SGE_RUNS/$run"
    for m in "$LPMX_SGE_RUNS"/*; do
        [ -f "$m" ] || continue
        w=$(cat "$m" 2>/dev/null) || w=
        if [ -n "$w" ] && [ -d "$w" ]; then
            others=$((others + 1))
        else
            rm -f "$m"
        fi
    done
    LPMX_SGE_QUEUE=
    [ "$others" -eq 0 ] && [ -e "$LPMX_SGE_RUNS/.started-by-harness" ] || return 0
    stop_sge_daemons
}

# Stops sge_execd and sge_qmaster (whoever started them).
stop_sge_daemons() {
    local pids pid
    pids="$(execd_pid || true) $(qmaster_pid || true)"
    timeout 10 qconf -ke "$(hostname)" >/dev/null 2>&1 || true
    timeout 10 qconf -km >/dev/null 2>&1 || true
    # sge_qmaster takes about 10 s to shut down; killed, it could leave its spool
    # (Berkeley DB) half-written.
    for pid in $pids; do
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -f "$LPMX_SGE_RUNS/.started-by-harness"
}

# Whether a run of this harness other than `run` is alive (its work directory exists).
other_sge_run() {
    local m w
    for m in "$LPMX_SGE_RUNS"/*; do
        [ -f "$m" ] && [ "$(basename "$m")" != "$1" ] || continue
        w=$(cat "$m" 2>/dev/null) || w=
        [ -n "$w" ] && [ -d "$w" ] && return 0
    done
    return 1
}
