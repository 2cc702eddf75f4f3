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

# Nothing here is ever glob-expanded: image lists are words of the job's user (its comment)
# or the site's, never file patterns, and root must not list directories for a user.
set -f
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

# Root reads nothing the user wrote: the job's comment is fetched, split and used by the job's
# user, in a shell that has become that user first. What it prints is one line for the log.
if [ "$(id -u)" = 0 ]; then
    case "${SLURM_JOB_USER:-}" in
    "") log "no SLURM_JOB_USER: not prefetching as root for an unknown user"; exit 0 ;;
    root) as_user() { "$@"; } ;;
    *)
        home=$(getent passwd "$SLURM_JOB_USER" | cut -d: -f6)
        as_user() {
            runuser -u "$SLURM_JOB_USER" -- env HOME="$home" USER="$SLURM_JOB_USER" \
                LOGNAME="$SLURM_JOB_USER" "$@"
        }
        ;;
    esac
else
    as_user() { "$@"; }
fi

# $1 job id, $2 lpmx-job, $3 timeout, $4 the site's images. Exit 3: nothing to prefetch.
# shellcheck disable=SC2016 # expanded by the user's shell, not this one
as_the_user='
set -f
job=$1 bin=$2 timeout=$3 site=$4
# The comment, from the controller: "lpmx:IMG[,IMG...]" (other comments are ignored).
comment=$(scontrol show job -o "$job" 2>/dev/null | sed -n "s/.* Comment=\([^ ]*\).*/\1/p")
images=$site
case "$comment" in
lpmx:*) images="$images $(printf "%s\n" "${comment#lpmx:}" | tr "," " ")" ;;
esac
# Word splitting of the list is intended; globbing is off (set -f).
set -- $images
[ "$#" -gt 0 ] || exit 3
t0=$(date +%s)
if out=$(cd / && timeout "$timeout" "$bin" -q prefetch "$@" 2>&1); then
    echo "prefetched $* in $(($(date +%s) - t0))s"
else
    echo "prefetch of $* failed after $(($(date +%s) - t0))s (the tasks will pull): $out"
    exit 1
fi
'
msg=$(cd / && as_user timeout $((TIMEOUT + 60)) sh -c "$as_the_user" lpmx-prolog \
    "$JOB" "$LPMX_BIN" "$TIMEOUT" "${LPMX_PROLOG_IMAGES:-}" 2>&1)
rc=$?
# One line per event: what the user's side printed cannot forge further lines.
msg=$(printf '%s' "$msg" | tr '\n' ' ')
case $rc in
0 | 1) log "$msg" ;;
3) ;;
*) log "prefetch did not finish (status $rc; the tasks will pull): $msg" ;;
esac
exit 0
