#!/bin/sh
# Slurm Epilog for lpmx-job: remove what the job staged on this node (node-local copies of
# image trees under $TMPDIR, /tmp or /dev/shm; see `lpmx-job cleanup --help`).
#
# Install (slurm.conf): Epilog=/etc/slurm/lpmx/epilog.sh   (see README.md here)
#
# slurmd runs this as root with SLURM_JOB_ID: every user's staging for that job goes. Run by
# an ordinary user it removes that user's own. The shared image cache is never touched.
# It never fails: a non-zero Epilog status drains the node; failures are logged.
#
# Site settings: LPMX_BIN (default lpmx-job on PATH), LPMX_STAGE_DIRS (space-separated
# staging directories; default $TMPDIR, /tmp, /dev/shm), LPMX_HOOK_LOG (as in prolog.sh).

LPMX_BIN=${LPMX_BIN:-lpmx-job}
JOB=${SLURM_JOB_ID:-${SLURM_JOBID:-}}

log() {
    if [ -n "${LPMX_HOOK_LOG:-}" ]; then
        echo "lpmx-epilog[$(hostname -s) job $JOB]: $*" >>"$LPMX_HOOK_LOG"
    elif command -v logger >/dev/null 2>&1; then
        logger -t lpmx-epilog "job $JOB: $*"
    else
        echo "lpmx-epilog[job $JOB]: $*" >&2
    fi
}

[ -n "$JOB" ] || { log "no SLURM_JOB_ID: nothing to do"; exit 0; }
set -f # the site's directory list is words, not patterns
set --
for d in ${LPMX_STAGE_DIRS:-}; do set -- "$@" --dir "$d"; done
if ! out=$(cd / && timeout 120 "$LPMX_BIN" -v cleanup --job "$JOB" "$@" 2>&1); then
    log "cleanup failed: $out"
elif [ -n "$out" ]; then
    log "$(echo "$out" | tr '\n' ';')"
fi
exit 0
