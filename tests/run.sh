#!/usr/bin/env bash
# The single test entry point. Run as root on a fresh Debian 12 machine:
#
#   bash tests/run.sh [ARGS...]      ARGS go to every test executable (e.g. a filter)
#
# It installs what it needs, creates the unprivileged user `lpmxtest`, starts
# three real registries on loopback (HTTP, TLS, TLS+basic auth) sharing one
# storage, a one-node Slurm cluster (munge, slurmctld, slurmd: tests/setup/slurm.sh),
# a one-node Grid Engine with a queue of its own (tests/setup/sge.sh),
# builds fixture images with busybox-static/umoci/skopeo and an MPI image with
# mmdebstrap (kept in /var/tmp/lpmx-test-cache), builds the Rust tests, and runs
# every test executable as `lpmxtest`.
#
# Environment:
#   LPMX_TEST_KEEP=1        keep the work directory (/tmp/lpmx-test.XXXXXX) at exit
#   LPMX_TEST_SETUP_ONLY=1  stop after the fixtures (prints test.env), run no test
#   LPMX_TEST_HOLD=1        after setup, keep the registries up until interrupted
#                           (re-run tests by hand with $WORK/test.env)
#   LPMX_TEST_TIMEOUT=SECS  time limit per test executable (default 2400)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SETUP=$REPO/tests/setup
umask 022
LPMX_T0=$(date +%s)
LPMX_STEP=start
LPMX_TESTS_DONE=0
SUMMARY_LINE=
WORK=

# shellcheck source=tests/setup/lib.sh
. "$SETUP/lib.sh"
# shellcheck source=tests/setup/packages.sh
. "$SETUP/packages.sh"
# shellcheck source=tests/setup/registry.sh
. "$SETUP/registry.sh"
# shellcheck source=tests/setup/webproxy.sh
. "$SETUP/webproxy.sh"
# shellcheck source=tests/setup/slurm.sh
. "$SETUP/slurm.sh"
# shellcheck source=tests/setup/sge.sh
. "$SETUP/sge.sh"
# shellcheck source=tests/setup/fixtures.sh
. "$SETUP/fixtures.sh"
# shellcheck source=tests/setup/tests.sh
. "$SETUP/tests.sh"
# shellcheck source=tests/setup/static.sh
. "$SETUP/static.sh"

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ "$LPMX_TESTS_DONE" != 1 ] && [ "$rc" -ne 0 ]; then
        echo "ERROR: failed during step: $LPMX_STEP (exit $rc)" >&2
        if [ -n "$WORK" ] && [ -d "$WORK/logs" ]; then
            local f
            for f in "$WORK"/logs/registry-*.log "$WORK"/logs/slurm*.log; do
                [ -s "$f" ] || continue
                echo "---- last lines of $f ----" >&2
                tail -n 15 "$f" >&2
            done
        fi
    fi
    stop_slurm
    stop_sge
    stop_webproxy
    [ -n "$WORK" ] && kill_strays
    stop_registries
    # The shared mount, and whatever a failed propagation test left on it.
    [ -n "$WORK" ] && mountpoint -q "$WORK/shared" && umount -R "$WORK/shared"
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${LPMX_TEST_KEEP:-0}" = 1 ]; then
            echo "kept work directory: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    # The closing line comes last, after everything else printed.
    if [ -n "${SUMMARY_LINE:-}" ]; then
        echo "$SUMMARY_LINE"
    elif [ "$LPMX_TESTS_DONE" != 1 ] && [ "$rc" -ne 0 ]; then
        echo "0 passed, 1 failed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || die "tests/run.sh must run as root (it installs packages and switches to user lpmxtest)"

step "1/8 packages"
install_packages
print_versions

step "2/8 test user"
ensure_user

step "3/8 work directory"
WORK=$(mktemp -d /tmp/lpmx-test.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/logs/setup" "$WORK/bin" "$WORK/scratch" "$WORK/shared"
chown "$LPMX_TEST_USER:" "$WORK/scratch" "$WORK/shared"
# The test user's own runtime directory (skopeo's auth.json lives there): without one,
# skopeo falls back to /run/containers/UID, which a podman run as root leaves mode 0700.
install -d -m 700 -o "$LPMX_TEST_USER" "$WORK/run-user"
# A shared mount, as systemd makes every mount of a host: the run tests check that a mount
# made inside a container does not propagate back out of it.
mount --bind "$WORK/shared" "$WORK/shared"
mount --make-shared "$WORK/shared"
# What an attack on a root-run hook would reach for (tests/integration/trust.rs): a copy of
# an executable, a directory and a private file, all root's. Each must stay as it is.
mkdir -m 755 "$WORK/root-targets" "$WORK/root-targets/dir"
install -m 755 /usr/bin/id "$WORK/root-targets/id"
install -m 600 /dev/null "$WORK/root-targets/secret"
info "$WORK"

step "4/8 registries"
start_registries
step "4/8 proxy"
start_webproxy
step "4/8 slurm"
start_slurm
step "4/8 sge"
start_sge

step "5/8 fixture images"
build_fixtures
build_mpi_image openmpi
build_mpi_image mpich
write_test_env
reset_registry_logs
info "fixtures: $WORK/fixtures (oci layout, one.docker.tar, fixtures.json, rootfs/)"

if [ "${LPMX_TEST_SETUP_ONLY:-0}" = 1 ] || [ "${LPMX_TEST_HOLD:-0}" = 1 ]; then
    echo "---- $WORK/test.env ----"
    cat "$WORK/test.env"
    LPMX_TESTS_DONE=1
    if [ "${LPMX_TEST_HOLD:-0}" = 1 ]; then
        echo "registries are up; interrupt (Ctrl-C / kill $$) to stop and clean up"
        # `wait` (unlike a foreground sleep) returns at once on a signal.
        while :; do
            sleep 1 &
            wait $! || true
        done
    fi
    echo "setup only: $(($(date +%s) - LPMX_T0))s"
    exit 0
fi

step "6/8 build rust tests"
ensure_cargo
info "$(cargo --version 2>&1)"
build_tests
build_static

step "7/8 run tests as $LPMX_TEST_USER"
run_all_tests "$@"
LPMX_TESTS_DONE=1

step "8/8 summary"
print_summary
[ "$TOTAL_FAILED" -eq 0 ] && [ "${#FAILED_EXES[@]}" -eq 0 ]
