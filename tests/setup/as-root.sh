#!/bin/sh
# The root side of the trust-boundary tests, installed by tests/run.sh (ensure_users) as
# /usr/local/libexec/lpmx-test/as-root, root-owned, and allowed to the test user by sudo:
#
#   sudo -n /usr/local/libexec/lpmx-test/as-root [VAR=VALUE...] PROGRAM [ARG...]
#
# It runs PROGRAM as root, as slurmd, pbs_mom or sge_execd run an epilog, with VAR=VALUE in a
# clean environment. PROGRAM may only be an `lpmx-job` executable or a hook script under an
# `integrations/` directory, and every directory on its path must be root's and writable by
# nobody else (a sticky /tmp aside): what the tests ask root to run is what a site installs,
# not something the test user could swap. This file exists only on test machines.
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
vars=
while [ "$#" -gt 0 ]; do
    case "$1" in
    [A-Za-z_]*=*) vars="$vars
$1"; shift ;;
    *) break ;;
    esac
done
[ "$#" -gt 0 ] || { echo "as-root: usage: as-root [VAR=VALUE...] PROGRAM [ARG...]" >&2; exit 2; }
prog=$1
shift
case "$prog" in
/*/lpmx-job | /*/integrations/*/*) ;;
*) echo "as-root: $prog is neither an lpmx-job executable nor an integrations/ hook" >&2; exit 2 ;;
esac
p=$prog
while :; do
    [ -e "$p" ] || { echo "as-root: $p does not exist" >&2; exit 2; }
    if [ -L "$p" ]; then echo "as-root: $p is a symbolic link" >&2; exit 2; fi
    owner=$(stat -c %u "$p")
    mode=$(stat -c %a "$p")
    [ "$owner" = 0 ] || { echo "as-root: $p is not root's" >&2; exit 2; }
    # Writable by group or others is refused, except a sticky directory (/tmp).
    w=$(stat -c %A "$p")
    case "$w" in
    d????????t | d????????T) ;;
    ?????w???? | ????????w?) echo "as-root: $p ($mode) is writable by others" >&2; exit 2 ;;
    esac
    [ "$p" = / ] && break
    p=$(dirname "$p")
done
cd /
# The variables arrive one per line; each is checked to be NAME=VALUE above.
set -f
IFS='
'
# shellcheck disable=SC2086 # one variable per line, split on newlines only
exec env -i PATH="$PATH" $vars "$prog" "$@"
