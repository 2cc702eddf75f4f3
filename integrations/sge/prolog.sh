#!/bin/sh
# Grid Engine (SGE 8.x) queue prolog for lpmx-job: make the job's images ready on this host.
#
# Install: a field of the queue (qconf -mq QUEUE, or qconf -Aq/-Mq FILE):
#   prolog   /opt/lpmx/sge/prolog.sh
#   epilog   /opt/lpmx/sge/epilog.sh
# (`prolog root@/path` would run it as root; as written here, the default, sge_shepherd runs
# it as the job's owner, in the job's environment: JOB_ID, SGE_TASK_ID, TMPDIR, PE_HOSTFILE,
# and the variables the job passed with -v/-V.) Only on the master host of a parallel job.
#
# Images: `qsub -v LPMX_PREFETCH="IMG [IMG...]"`, plus LPMX_PROLOG_IMAGES set by the site.
# Exit status matters to SGE: 0 the job runs; 99 reschedule; 100 job in error state; any
# other status puts the QUEUE in error state. So this exits 0 whatever happens; a failed
# prefetch is written to the job's error file and the job's `lpmx-job run` pulls itself.

LPMX_BIN=${LPMX_BIN:-lpmx-job}
TIMEOUT=${LPMX_PROLOG_TIMEOUT:-600}
# shellcheck disable=SC2086 # word splitting of the image list is intended
set -- ${LPMX_PROLOG_IMAGES:-} ${LPMX_PREFETCH:-}
[ "$#" -gt 0 ] || exit 0
if ! out=$(timeout "$TIMEOUT" "$LPMX_BIN" -q prefetch "$@" 2>&1); then
    echo "lpmx-job prolog (job ${JOB_ID:-?}): prefetch of $* failed (the job pulls it itself): $out" >&2
fi
exit 0
