# shellcheck shell=bash
# Step 4: a real HTTP proxy (tinyproxy) and a registry the test user can reach only through
# it, as on a site whose nodes reach registries only through a proxy. Sourced; needs WORK,
# LPMX_TEST_USER, REG_TLS and the registries' shared storage (tests/setup/registry.sh).
#
# The fenced registry is a fourth docker-registry on the shared storage; a netfilter rule
# (owner match) resets every loopback connection the test user opens to its port, while
# tinyproxy, which runs as its own user, reaches it. Removed again by stop_webproxy.
#
# Sets: REG_FENCED PROXY_ADDR; logs: $WORK/logs/tinyproxy.log, registry-fenced.log.

PROXY_PID=
FENCE_RULE=()

start_webproxy() {
    local ports uid
    mapfile -t ports < <(free_ports 2)
    [ "${#ports[@]}" -eq 2 ] || die "could not pick free ports for the proxy"
    REG_FENCED=127.0.0.1:${ports[0]}
    PROXY_ADDR=127.0.0.1:${ports[1]}

    write_registry_config fenced "${ports[0]}" 0 0
    docker-registry serve "$WORK/registry/fenced.yml" \
        </dev/null >>"$WORK/logs/registry-fenced.log" 2>&1 &
    LPMX_REGISTRY_PIDS+=("$!")
    wait_registry fenced "http://$REG_FENCED" "$!" 200

    uid=$(id -u "$LPMX_TEST_USER")
    FENCE_RULE=(OUTPUT -o lo -p tcp -d 127.0.0.1 --dport "${ports[0]}"
        -m owner --uid-owner "$uid" -j REJECT --reject-with tcp-reset)
    iptables -w -I "${FENCE_RULE[@]}" ||
        die "iptables could not fence the registry $REG_FENCED off from $LPMX_TEST_USER"

    local d=$WORK/proxy tls_port=${REG_TLS##*:}
    mkdir -p "$d"
    install -m 644 -o tinyproxy /dev/null "$WORK/logs/tinyproxy.log"
    cat >"$d/tinyproxy.conf" <<CONF
User tinyproxy
Group tinyproxy
Port ${ports[1]}
Listen 127.0.0.1
Timeout 120
LogFile "$WORK/logs/tinyproxy.log"
LogLevel Connect
MaxClients 64
Allow 127.0.0.1
ConnectPort $tls_port
DisableViaHeader Yes
CONF
    tinyproxy -d -c "$d/tinyproxy.conf" </dev/null >>"$WORK/logs/setup/tinyproxy.out" 2>&1 &
    PROXY_PID=$!
    local deadline=$(($(date +%s) + 20)) code
    while :; do
        kill -0 "$PROXY_PID" 2>/dev/null || die "tinyproxy exited at start; see $WORK/logs/setup/tinyproxy.out"
        code=$(python3 - "$PROXY_ADDR" "$REG_FENCED" <<'PY' 2>/dev/null || true
import sys, urllib.request
h = urllib.request.ProxyHandler({"http": "http://" + sys.argv[1]})
try:
    print(urllib.request.build_opener(h).open("http://%s/v2/" % sys.argv[2], timeout=3).status)
except Exception as e:
    print(0)
PY
        )
        [ "$code" = 200 ] && break
        [ "$(date +%s)" -lt "$deadline" ] || die "tinyproxy on $PROXY_ADDR did not relay to $REG_FENCED"
        sleep 0.2
    done
    # The fence holds for the test user itself.
    if runuser -u "$LPMX_TEST_USER" -- python3 -c "import socket; socket.create_connection(('127.0.0.1', ${ports[0]}), 3)" 2>/dev/null; then
        die "the test user can still reach the fenced registry $REG_FENCED directly"
    fi
    info "proxy $PROXY_ADDR (tinyproxy), fenced registry $REG_FENCED"
}

stop_webproxy() {
    if [ -n "$PROXY_PID" ]; then
        kill -TERM "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
        PROXY_PID=
    fi
    if [ "${#FENCE_RULE[@]}" -gt 0 ]; then
        iptables -w -D "${FENCE_RULE[@]}" 2>/dev/null || true
        FENCE_RULE=()
    fi
}
