#!/bin/sh
# Slurm Prolog for lpmx-job: make the job's images ready on this node before its tasks start,
# so N tasks (and N nodes) do not all wait on the registry at once.
#
# Install (slurm.conf on every node, then `scontrol reconfigure`; see README.md here):
#   Prolog=/etc/slurm/lpmx/prolog.sh
#   Epilog=/etc/slurm/lpmx/epilog.sh
#   PrologFlags=Alloc
#
# Which images: the job names them in its comment,
#   #SBATCH --comment=lpmx:IMAGE[,IMAGE...]
# plus any the site lists in LPMX_PROLOG_IMAGES (space-separated) in this file's environment.
#
# slurmd runs this as root (SlurmdUser) with SLURM_JOB_ID, SLURM_JOB_UID, SLURM_JOB_USER...
# and none of the job's environment. The images are prefetched as the job's user, with that
# user's HOME, so they land in the cache the job's `lpmx-job run` uses (a site-wide
# LPMX_CACHE or LPMX_CONFIG set here applies too). Run by an ordinary user (tests, a user's
# own wrapper) it prefetches as that user.
#
# It never fails the job: a non-zero Prolog status drains the node. A prefetch that fails or
# times out is logged; the job's tasks then pull the image themselves.
#
# Site settings (environment or edit here):
#   LPMX_BIN              the lpmx-job executable (default: lpmx-job on PATH)
#   LPMX_PROLOG_IMAGES    images prefetched for every job
#   LPMX_PROLOG_TIMEOUT   seconds before giving up (default 600; keep under PrologEpilogTimeout)
#   LPMX_HOOK_LOG         file that receives one line per hook event (default: syslog via logger)

LPMX_BIN=${LPMX_BIN:-lpmx-job}
TIMEOUT=${LPMX_PROLOG_TIMEOUT:-600}
JOB=${SLURM_JOB_ID:-${SLURM_JOBID:-}}

log() {
    if [ -n "${LPMX_HOOK_LOG:-}" ]; then
        echo "lpmx-prolog[$(hostname -s) job $JOB]: $*" >>"$LPMX_HOOK_LOG"
    elif command -v logger >/dev/null 2>&1; then
        logger -t lpmx-prolog "job $JOB: $*"
    else
        echo "lpmx-prolog[job $JOB]: $*" >&2
    fi
}

[ -n "$JOB" ] || { log "no SLURM_JOB_ID: not run by slurmd, nothing to do"; exit 0; }

# The job's comment, from the controller: "lpmx:IMG[,IMG...]" (other comments are ignored).
comment=$(scontrol show job -o "$JOB" 2>/dev/null | sed -n 's/.* Comment=\([^ ]*\).*/\1/p')
images=$LPMX_PROLOG_IMAGES
case "$comment" in
lpmx:*) images="$images $(echo "${comment#lpmx:}" | tr ',' ' ')" ;;
esac
# shellcheck disable=SC2086 # word splitting of the image list is intended
set -- $images
[ "$#" -gt 0 ] || exit 0

if [ "$(id -u)" = 0 ] && [ -n "${SLURM_JOB_USER:-}" ] && [ "$SLURM_JOB_USER" != root ]; then
    home=$(getent passwd "$SLURM_JOB_USER" | cut -d: -f6)
    as_user() {
        runuser -u "$SLURM_JOB_USER" -- env HOME="$home" USER="$SLURM_JOB_USER" \
            LOGNAME="$SLURM_JOB_USER" "$@"
    }
else
    as_user() { "$@"; }
fi

t0=$(date +%s)
if out=$(cd / && as_user timeout "$TIMEOUT" "$LPMX_BIN" -q prefetch "$@" 2>&1); then
    log "prefetched $* in $(($(date +%s) - t0))s"
else
    log "prefetch of $* failed after $(($(date +%s) - t0))s (the tasks will pull): $out"
fi
exit 0
