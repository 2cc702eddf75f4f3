#!/usr/bin/env bash
# Grid pilot bootstrap: on a worker node with nothing installed, fetch one static lpmx-job,
# check its sha256, run the payload in a container, exit with the payload's status and leave
# nothing behind.
#
#   bootstrap.sh [--url URL] [--sha256 HEX] [--site-cache DIR]... [--] [RUN-OPTIONS] IMAGE [CMD [ARG...]]
#
# Everything after bootstrap.sh's own options goes to `lpmx-job run` unchanged.
#
#   --url URL, LPMX_BOOTSTRAP_URL        where the static lpmx-job is: http:// or https://
#                                        (curl, else wget), file:///PATH, or /PATH (a shared
#                                        read-only directory, e.g. CVMFS)
#   --sha256 HEX, LPMX_BOOTSTRAP_SHA256  its sha256 (required; a mismatch is refused)
#   --site-cache DIR, LPMX_BOOTSTRAP_SITE_CACHES (':'-separated)
#                                        read-only site caches, used when mounted (a readable
#                                        directory), skipped otherwise
#
# The writable cache and the executable go to a private directory in the job's scratch
# directory ($_CONDOR_SCRATCH_DIR, else $TMPDIR, else /tmp), removed at exit, also on TERM,
# INT and HUP (the signal is passed on to the payload first, which ends as it ends).
# Other LPMX_* variables reach lpmx-job (e.g. LPMX_INSECURE_REGISTRIES); LPMX_CACHE is set
# to the scratch cache, LPMX_READONLY_CACHES gets the mounted site caches in front,
# LPMX_STAGE defaults to `never` (the scratch cache is node-local already). Statuses: the
# payload's own; 125 when the bootstrap itself fails (as lpmx-job does).
set -euo pipefail

NODE=$(uname -n 2>/dev/null || echo unknown-node)
OWN_FAILURE=125

say() { echo "lpmx bootstrap on $NODE: $*" >&2; }
die() {
    say "error: $*"
    exit "$OWN_FAILURE"
}

url=${LPMX_BOOTSTRAP_URL:-}
want=${LPMX_BOOTSTRAP_SHA256:-}
sites=()
if [ -n "${LPMX_BOOTSTRAP_SITE_CACHES:-}" ]; then
    IFS=: read -r -a sites <<<"$LPMX_BOOTSTRAP_SITE_CACHES"
fi
while [ $# -gt 0 ]; do
    case $1 in
    --url)
        [ $# -ge 2 ] || die "--url needs a value"
        url=$2
        shift 2
        ;;
    --url=*)
        url=${1#--url=}
        shift
        ;;
    --sha256)
        [ $# -ge 2 ] || die "--sha256 needs a value"
        want=$2
        shift 2
        ;;
    --sha256=*)
        want=${1#--sha256=}
        shift
        ;;
    --site-cache)
        [ $# -ge 2 ] || die "--site-cache needs a value"
        sites+=("$2")
        shift 2
        ;;
    --site-cache=*)
        sites+=("${1#--site-cache=}")
        shift
        ;;
    --)
        shift
        break
        ;;
    *) break ;;
    esac
done

[ $# -ge 1 ] || die "no image given; usage: bootstrap.sh [--url URL] [--sha256 HEX] [--site-cache DIR]... [--] [RUN-OPTIONS] IMAGE [CMD [ARG...]]"
[ -n "$url" ] || die "no lpmx-job to fetch: set LPMX_BOOTSTRAP_URL or pass --url (http(s)://, file:///PATH or /PATH)"
[ -n "$want" ] || die "no sha256 for $url: set LPMX_BOOTSTRAP_SHA256 or pass --sha256; an unchecked executable is never run"
want=$(printf '%s' "$want" | tr 'A-F' 'a-f')
[[ $want =~ ^[0-9a-f]{64}$ ]] || die "the sha256 for $url must be 64 hex digits, got '$want'"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found on PATH ($PATH): cannot check $url"

scratch=${_CONDOR_SCRATCH_DIR:-${TMPDIR:-/tmp}}
if [ ! -d "$scratch" ] || [ ! -w "$scratch" ]; then
    die "scratch directory $scratch is not a writable directory"
fi

work=
child=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        # Only when the bootstrap itself fails while the payload runs.
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    if [ -n "$work" ] && [ -d "$work" ]; then
        # Extracted layers keep their modes: read-only directories would stop rm.
        chmod -R u+rwx "$work" 2>/dev/null || true
        rm -rf -- "$work" || say "could not remove $work"
    fi
    exit "$rc"
}
trap cleanup EXIT
work=$(mktemp -d "$scratch/lpmx-bootstrap.XXXXXX") || die "cannot create a directory in $scratch"
mkdir -p "$work/bin" "$work/cache"
exe=$work/bin/lpmx-job

case $url in
http://* | https://*)
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 --connect-timeout 30 -o "$exe" -- "$url" ||
            die "fetching $url into $exe with curl failed"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -t 3 -T 30 -O "$exe" -- "$url" ||
            die "fetching $url into $exe with wget failed"
    else
        die "neither curl nor wget on PATH ($PATH) to fetch $url"
    fi
    ;;
file:///*)
    cp -- "${url#file://}" "$exe" || die "copying ${url#file://} into $exe failed"
    ;;
/*)
    cp -- "$url" "$exe" || die "copying $url into $exe failed"
    ;;
*) die "unsupported location '$url': give http(s)://, file:///PATH or /PATH" ;;
esac

got=$(sha256sum "$exe" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
    rm -f -- "$exe"
    die "sha256 mismatch for lpmx-job from $url: expected $want, got $got; refusing to run it (payload: run $*)"
fi
chmod 0500 "$exe"

ro=()
for d in ${sites[@]+"${sites[@]}"}; do
    [ -n "$d" ] || continue
    if [ -d "$d" ] && [ -r "$d" ] && [ -x "$d" ]; then
        ro+=("$d")
    else
        say "site cache $d is not mounted (not a readable directory); skipped"
    fi
done
if [ "${#ro[@]}" -gt 0 ]; then
    joined=$(
        IFS=:
        echo "${ro[*]}"
    )
    export LPMX_READONLY_CACHES=$joined${LPMX_READONLY_CACHES:+:$LPMX_READONLY_CACHES}
fi
# The static lpmx-job reads only /etc/passwd and /etc/group (an NSS module would crash a
# static glibc); an account served by LDAP or sss is named from $USER inside the container.
uid=$(id -u)
if ! cut -d: -f3 /etc/passwd 2>/dev/null | grep -qx "$uid"; then
    say "note: uid $uid is not in /etc/passwd; inside the container it is named ${USER:-uid$uid}"
fi

export LPMX_CACHE=$work/cache
export LPMX_STAGE=${LPMX_STAGE:-never}
# Pilots often run without a usable HOME; lpmx-job and the container want one.
if [ -z "${HOME:-}" ] || [ ! -d "$HOME" ]; then
    mkdir "$work/home"
    export HOME=$work/home
fi

# A background job gets /dev/null as stdin unless told otherwise: fd 3 keeps the pilot's.
exec 3<&0
"$exe" run "$@" <&3 3<&- &
child=$!
exec 3<&-
# Passed on, then the payload decides how it ends. Background jobs of a shell without job
# control ignore SIGINT, so INT is passed on as TERM.
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
trap 'kill -HUP "$child" 2>/dev/null || true' HUP
# A trapped signal interrupts `wait` while the payload may still run: wait again. Bash keeps
# a reaped job's status, so the last `wait` returns the payload's own status in any case.
while kill -0 "$child" 2>/dev/null; do
    wait "$child" 2>/dev/null || true
done
status=0
wait "$child" || status=$?
child=
exit "$status"
