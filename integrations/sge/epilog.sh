#!/bin/sh
# Grid Engine queue epilog for lpmx-job: remove what the job staged on this host (see
# prolog.sh for how to install). Runs as the job's owner with JOB_ID; sge_execd removes the
# job's own TMPDIR itself, this removes staging under /tmp, /dev/shm or LPMX_STAGE_DIRS.
# Always exits 0 (any status other than 0, 99, 100 puts the queue in error state).

LPMX_BIN=${LPMX_BIN:-lpmx-job}
[ -n "${JOB_ID:-}" ] || exit 0
set --
for d in ${LPMX_STAGE_DIRS:-}; do set -- "$@" --dir "$d"; done
if ! out=$(timeout 120 "$LPMX_BIN" cleanup --job "$JOB_ID" "$@" 2>&1); then
    echo "lpmx-job epilog (job $JOB_ID): cleanup failed: $out" >&2
fi
exit 0
