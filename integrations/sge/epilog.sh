#!/bin/sh
# Grid Engine queue epilog for lpmx-job: remove what the job staged on this host (see
# prolog.sh for how to install). sge_shepherd runs it as the job's owner, in the job's
# environment, after the job and before sge_execd removes the job's TMPDIR; this removes the
# staging under LPMX_STAGE_DIR (a `stage.dir` the job set), $TMPDIR, /tmp, /dev/shm and
# LPMX_STAGE_DIRS (site: space-separated).
# Always exits 0 (any status other than 0, 99, 100 puts the queue in error state).
#
# Jobs that staged nothing (most jobs of a queue) cost a few `test -e`: lpmx-job is not run,
# so hosts without it see no error. The layout BASE/lpmx-stage-UID/job-JOBID (or
# BASE/lpmx-stage-UID.XXXXXXXXXX/job-JOBID where another user took lpmx-stage-UID first) is
# lpmx-job's contract with epilogs (see `lpmx-job cleanup --help`).

# Directory lists are words: nothing is glob-expanded but the one pattern below.
set -f
LPMX_BIN=${LPMX_BIN:-lpmx-job}
[ -n "${JOB_ID:-}" ] || exit 0

# As root (a queue's `epilog root@...`), LPMX_BIN and PATH would be the job's user's to
# choose: root would run the user's program. It refuses (see prolog.sh).
if [ "$(id -u)" = 0 ]; then
    echo "lpmx-job epilog (job $JOB_ID): not run as root; set the queue's epilog without root@" >&2
    exit 0
fi

log() {
    [ -n "${LPMX_HOOK_LOG:-}" ] &&
        echo "lpmx-epilog[$(hostname) job $JOB_ID]: $*" >>"$LPMX_HOOK_LOG" 2>/dev/null
}

uid=$(id -u)
set --
found=
# shellcheck disable=SC2086 # word splitting of the directory lists is intended
for d in ${LPMX_STAGE_DIR:-} ${TMPDIR:-} /tmp /dev/shm ${LPMX_STAGE_DIRS:-}; do
    case " $* " in *" --dir $d "*) continue ;; esac
    set -- "$@" --dir "$d"
    [ -e "$d/lpmx-stage-$uid/job-$JOB_ID" ] && found=yes
    # Where lpmx-stage-UID was squatted, staging went to lpmx-stage-UID.XXXXXXXXXX.
    set +f
    for f in "$d/lpmx-stage-$uid".*; do
        [ -e "$f/job-$JOB_ID" ] && found=yes
    done
    set -f
done
[ -n "$found" ] || exit 0
if out=$(timeout 120 "$LPMX_BIN" -v cleanup --job "$JOB_ID" "$@" 2>&1); then
    log "$(echo "$out" | tr '\n' ';')"
else
    echo "lpmx-job epilog (job $JOB_ID on $(hostname)): cleanup failed: $out" >&2
    log "cleanup failed: $out"
fi
exit 0
