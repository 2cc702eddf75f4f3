# shellcheck shell=bash
# Variables set here (BENCH_HOME, WORK, SHORT, REG_PID...) are used by the scripts that source it.
# shellcheck disable=SC2034
# What contrib/bench/pull.sh and run.sh share: the ordinary bench user and the temporary
# work area with its cleanup. Sourced after the script has set BENCH_USER and defined log.

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

bench_cleanup() {
    local rc=$?
    set +e
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
