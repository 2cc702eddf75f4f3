# shellcheck shell=bash
# Step 6 (after build_tests): the static lpmx-job that integrations/grid/bootstrap.sh fetches
# on a grid worker node, built once per run with contrib/build-static.sh into the cargo
# target directory (incremental, so a re-run rebuilds only what changed) and copied to
# $WORK/bin, where the test user can read it. Sourced; needs REPO WORK TEST_ENV.
#
# With LPMX_TEST_HOLD=1 no test is built; by hand, as root:
#   bash contrib/build-static.sh    then add to the test command line
#   LPMX_TEST_STATIC_BIN=PATH LPMX_TEST_STATIC_SHA256=HEX

build_static() {
    local log=$WORK/logs/setup/build-static.log t0 bin sum
    t0=$(date +%s)
    if ! bash "$REPO/contrib/build-static.sh" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "contrib/build-static.sh failed (log: $log)"
    fi
    bin=$(sed -n 's/^static lpmx-job: //p' "$log" | tail -n 1)
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        die "contrib/build-static.sh printed no executable (log: $log)"
    fi
    install -m 755 "$bin" "$WORK/bin/lpmx-job-static"
    sum=$(sha256_of "$WORK/bin/lpmx-job-static")
    TEST_ENV+=("LPMX_TEST_STATIC_BIN=$WORK/bin/lpmx-job-static" "LPMX_TEST_STATIC_SHA256=$sum")
    printf '%s\n' "LPMX_TEST_STATIC_BIN=$WORK/bin/lpmx-job-static" "LPMX_TEST_STATIC_SHA256=$sum" >>"$WORK/test.env"
    info "static binary: $WORK/bin/lpmx-job-static sha256 $sum ($(($(date +%s) - t0))s)"
}
