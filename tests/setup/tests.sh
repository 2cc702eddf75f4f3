# shellcheck shell=bash
# Steps 6-8: build the Rust tests, run them as the unprivileged user, summarise.
# Sourced; needs REPO WORK REG_* LPMX_TEST_USER.

TEST_EXES=()
TEST_ENV=()
RESULTS=()
FAILED_EXES=()
TOTAL_PASSED=0
TOTAL_FAILED=0

write_test_env() {
    local home
    home=$(getent passwd "$LPMX_TEST_USER" | cut -d: -f6)
    TEST_ENV=(
        "HOME=${home:-/home/$LPMX_TEST_USER}"
        "USER=$LPMX_TEST_USER"
        "LOGNAME=$LPMX_TEST_USER"
        "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        "CI=${CI:-}"
        "LPMX_TEST_ALLOW_SKIP=${LPMX_TEST_ALLOW_SKIP:-}"
        "LPMX_BIN=$WORK/bin/lpmx-job"
        "LPMX_TEST_REGISTRY=$REG_HTTP"
        "LPMX_TEST_REGISTRY_TLS=$REG_TLS"
        "LPMX_TEST_REGISTRY_AUTH=$REG_AUTH"
        "LPMX_TEST_REGISTRY_FENCED=$REG_FENCED"
        "LPMX_TEST_PROXY=$PROXY_ADDR"
        "LPMX_TEST_REGISTRY_USER=$REG_USER"
        "LPMX_TEST_REGISTRY_PASSWORD=$REG_PASSWORD"
        "LPMX_TEST_CA=$REG_CA"
        "LPMX_TEST_CERT_DIR=$REG_CERT_DIR"
        "LPMX_TEST_LOGS=$WORK/logs"
        "LPMX_TEST_FIXTURES=$WORK/fixtures"
        "LPMX_TEST_WORK=$WORK/scratch"
        "LPMX_TEST_SHARED=$WORK/shared"
        "XDG_RUNTIME_DIR=$WORK/run-user"
        "LPMX_TEST_ATTACKER=$LPMX_TEST_ATTACKER"
        "LPMX_TEST_GROUP=$LPMX_TEST_GROUP"
        "LPMX_TEST_AS_ROOT=$LPMX_TEST_AS_ROOT"
        "LPMX_TEST_ROOT_TARGETS=$WORK/root-targets"
        "RUST_BACKTRACE=1"
        "${SLURM_TEST_ENV[@]}"
        "${SGE_TEST_ENV[@]}"
    )
    {
        echo "# Environment of the test executables (written by tests/run.sh)."
        echo "# The registries only run while tests/run.sh does (LPMX_TEST_HOLD=1 keeps them up)."
        echo "# Re-run one test by hand, as root:"
        echo "#   cd $WORK && runuser -u $LPMX_TEST_USER -- env -i \$(grep -v '^#' $WORK/test.env) $WORK/bin/EXE --test-threads=2 TEST_NAME"
        printf '%s\n' "${TEST_ENV[@]}"
    } >"$WORK/test.env"
    chmod 644 "$WORK/test.env"
}

build_tests() {
    local bj=$WORK/logs/cargo-build.json tj=$WORK/logs/cargo-test.json bin exe
    (cd "$REPO" && cargo build --message-format=json-render-diagnostics >"$bj")
    bin=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "lpmx-job"
                 and (.target.kind | index("bin")) and .profile.test == false)
                 | .executable // empty' "$bj" | tail -n 1)
    [ -n "$bin" ] && [ -x "$bin" ] || die "cargo build produced no lpmx-job binary (see $bj)"
    (cd "$REPO" && cargo test --no-run --message-format=json-render-diagnostics >"$tj")
    mapfile -t TEST_EXES < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test == true)
                                    | .executable // empty' "$tj" | sort -u)
    [ "${#TEST_EXES[@]}" -gt 0 ] || die "cargo test --no-run produced no test executable (see $tj)"
    install -m 755 "$bin" "$WORK/bin/lpmx-job"
    local copied=()
    for exe in "${TEST_EXES[@]}"; do
        install -m 755 "$exe" "$WORK/bin/$(basename "$exe")"
        copied+=("$WORK/bin/$(basename "$exe")")
    done
    TEST_EXES=("${copied[@]}")
    info "binary: $WORK/bin/lpmx-job"
    for exe in "${TEST_EXES[@]}"; do info "test executable: $exe"; done
}

# Kill processes of the test user that carry this run's LPMX_TEST_WORK in their
# environment (so: started by this run's tests) and are still alive.
kill_strays() {
    local uid marker=LPMX_TEST_WORK=$WORK/scratch p pids=()
    uid=$(id -u "$LPMX_TEST_USER" 2>/dev/null) || return 0
    for p in /proc/[0-9]*; do
        [ "$(stat -c %u "$p" 2>/dev/null)" = "$uid" ] || continue
        { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -xF -- "$marker" >/dev/null || continue
        pids+=("${p#/proc/}")
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    warn "tests left ${#pids[@]} process(es) running; killing them:"
    ps -o pid,ppid,pgid,etime,args -p "$(
        IFS=,
        echo "${pids[*]}"
    )" >&2 || true
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

# run_one EXE ARGS... -- runs EXE as the test user, streams its output, records results.
run_one() {
    local exe=$1 name log pidf rcf tpid rc passed=0 failed=0 line t0
    shift
    name=$(basename "$exe")
    log=$WORK/logs/test-$name.log
    pidf=$WORK/logs/.test-$name.pid
    rcf=$WORK/logs/.test-$name.rc
    rm -f "$pidf" "$rcf"
    : >"$log"
    t0=$(date +%s)
    echo "---- $name $*"
    # The wrapper reaps `timeout` itself, so `tail --pid` sees it disappear.
    # `timeout` makes its own process group: killed afterwards to catch strays.
    (
        if ! cd "$WORK"; then
            echo 1 >"$rcf"
            echo none >"$pidf"
            exit 1
        fi
        timeout --kill-after=30 "${LPMX_TEST_TIMEOUT:-2400}" \
            runuser -u "$LPMX_TEST_USER" -- env -i "${TEST_ENV[@]}" \
            "$exe" --test-threads=2 "$@" </dev/null >"$log" 2>&1 &
        echo $! >"$pidf"
        rc=0
        wait $! || rc=$?
        echo "$rc" >"$rcf"
    ) &
    local wpid=$!
    while [ ! -s "$pidf" ]; do sleep 0.05; done
    tpid=$(cat "$pidf")
    if [ "$tpid" != none ]; then
        tail -n +1 -f --pid="$tpid" "$log" || true
    fi
    wait "$wpid" || true
    rc=$(cat "$rcf" 2>/dev/null || echo 255)
    if [ "$tpid" != none ]; then
        kill -KILL -- "-$tpid" 2>/dev/null || true
    fi
    kill_strays

    while IFS= read -r line; do
        if [[ $line =~ ^test\ result:\ [A-Za-z]+\.\ ([0-9]+)\ passed\;\ ([0-9]+)\ failed\; ]]; then
            passed=$((passed + BASH_REMATCH[1]))
            failed=$((failed + BASH_REMATCH[2]))
        fi
    done <"$log"
    local note=""
    if [ "$rc" -ne 0 ]; then
        FAILED_EXES+=("$name")
        [ "$rc" -eq 124 ] && note=" TIMEOUT after ${LPMX_TEST_TIMEOUT:-2400}s"
        if [ "$failed" -eq 0 ]; then
            failed=1 # crashed, timed out or failed outside a test: count it
            note="$note (no failing test reported; counted as 1 failure)"
        fi
    fi
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    RESULTS+=("$(printf '%-6s %s: %d passed, %d failed, exit %d, %ds%s' \
        "$([ "$rc" -eq 0 ] && echo ok || echo FAILED)" "$name" "$passed" "$failed" "$rc" "$(($(date +%s) - t0))" "$note")")
    rm -f "$pidf" "$rcf"
}

run_all_tests() {
    local exe
    for exe in "${TEST_EXES[@]}"; do
        run_one "$exe" "$@"
    done
}

print_summary() {
    local r
    for r in "${RESULTS[@]}"; do echo "   $r"; done
    if [ "${#FAILED_EXES[@]}" -gt 0 ]; then
        echo "   failed executables: ${FAILED_EXES[*]} (logs in \$WORK/logs/test-*.log; LPMX_TEST_KEEP=1 keeps them)"
    fi
    echo "   total time: $(($(date +%s) - LPMX_T0))s"
    SUMMARY_LINE="$TOTAL_PASSED passed, $TOTAL_FAILED failed"
}
