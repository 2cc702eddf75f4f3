#!/bin/sh
# Grid Engine (SGE 8.x) queue prolog for lpmx-job: make the job's images ready on this host.
#
# Install: a field of the queue (qconf -mq QUEUE, or qconf -Aq/-Mq FILE):
#   prolog   /opt/lpmx/sge/prolog.sh
#   epilog   /opt/lpmx/sge/epilog.sh
# Without `user@` in front, sge_shepherd runs it as the job's owner (so the images land in the
# cache the job's own `lpmx-job run` uses), in the job's environment: JOB_ID, SGE_TASK_ID,
# TMPDIR, PE_HOSTFILE, the variables the job passed with -v/-V (or the site's sge_request
# gives every job), in the job's working directory, with its stdout and stderr going to the
# job's output and error files. Only on the master host of a parallel job.
#
# Images: `qsub -v LPMX_PREFETCH="IMG [IMG...]"`, plus LPMX_PROLOG_IMAGES set by the site.
# Exit status matters to SGE: 0 the job runs; 99 reschedule; 100 job in error state; any
# other status puts the QUEUE in error state. So this exits 0 whatever happens; a failed
# prefetch is written to the job's error file and the job's `lpmx-job run` pulls itself.
#
# Settings (the job's environment): LPMX_BIN (default lpmx-job on PATH), LPMX_PROLOG_TIMEOUT
# (seconds, default 600), LPMX_HOOK_LOG (a file that receives one line per hook event, as
# the Slurm hooks write; without it a success is silent).

# Image lists are words, never file patterns: nothing here is glob-expanded.
set -f
LPMX_BIN=${LPMX_BIN:-lpmx-job}
TIMEOUT=${LPMX_PROLOG_TIMEOUT:-600}
JOB=${JOB_ID:-?}

# As root (a queue's `prolog root@...`) everything here, LPMX_BIN and PATH included, would
# come from the job's environment, which its user writes: root would run the user's program.
# So it refuses, and says how to install it.
if [ "$(id -u)" = 0 ]; then
    echo "lpmx-job prolog (job $JOB): not run as root; set the queue's prolog without root@" >&2
    exit 0
fi

log() {
    [ -n "${LPMX_HOOK_LOG:-}" ] &&
        echo "lpmx-prolog[$(hostname) job $JOB]: $*" >>"$LPMX_HOOK_LOG" 2>/dev/null
}

# shellcheck disable=SC2086 # word splitting of the image list is intended
set -- ${LPMX_PROLOG_IMAGES:-} ${LPMX_PREFETCH:-}
[ "$#" -gt 0 ] || exit 0
t0=$(date +%s)
if out=$(timeout "$TIMEOUT" "$LPMX_BIN" -q prefetch "$@" 2>&1); then
    log "prefetched $* in $(($(date +%s) - t0))s"
else
    echo "lpmx-job prolog (job $JOB on $(hostname)): prefetch of $* failed (the job pulls it itself): $out" >&2
    log "prefetch of $* failed after $(($(date +%s) - t0))s: $out"
fi
exit 0
