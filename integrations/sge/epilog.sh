#!/bin/sh
# Grid Engine queue epilog for lpmx-job: remove what the job staged on this host (see
# prolog.sh for how to install). sge_shepherd runs it as the job's owner, in the job's
# environment, after the job and before sge_execd removes the job's TMPDIR; this removes the
# staging under LPMX_STAGE_DIR (a `stage.dir` the job set), $TMPDIR, /tmp, /dev/shm and
# LPMX_STAGE_DIRS (site: space-separated).
# Always exits 0 (any status other than 0, 99, 100 puts the queue in error state).
#
# Jobs that staged nothing (most jobs of a queue) cost a few `test -e`: lpmx-job is not run,
# so hosts without it see no error. The layout BASE/lpmx-stage-UID/job-JOBID is lpmx-job's
# contract with epilogs (see `lpmx-job cleanup --help`).

LPMX_BIN=${LPMX_BIN:-lpmx-job}
[ -n "${JOB_ID:-}" ] || exit 0

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
done
[ -n "$found" ] || exit 0
if out=$(timeout 120 "$LPMX_BIN" -v cleanup --job "$JOB_ID" "$@" 2>&1); then
    log "$(echo "$out" | tr '\n' ';')"
else
    echo "lpmx-job epilog (job $JOB_ID on $(hostname)): cleanup failed: $out" >&2
    log "cleanup failed: $out"
fi
exit 0
