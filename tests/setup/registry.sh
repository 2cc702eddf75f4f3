# shellcheck shell=bash
# Step 4: three real registries (CNCF distribution 2.8, Debian `docker-registry`)
# on loopback sharing one storage root. Sourced.
#
# Sets: REG_HTTP REG_TLS REG_AUTH (host:port), REG_CA (CA file), REG_CERT_DIR,
#       LPMX_REGISTRY_PIDS (array).
# Logs: $WORK/logs/registry-{http,tls,auth}.log (access log + app log).

REG_USER=lpmx
REG_PASSWORD=lpmx-secret
LPMX_REGISTRY_PIDS=()

make_certs() {
    local d=$WORK/certs
    mkdir -p "$d"
    # A CA and a leaf signed by it: a self-signed cert that is its own CA
    # (basicConstraints CA:TRUE) is refused as a server certificate by
    # rustls/webpki ("CaUsedAsEndEntity"), so keep the two apart.
    quiet openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
        -keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=lpmx test CA" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
    quiet openssl req -newkey rsa:2048 -nodes \
        -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=127.0.0.1"
    cat >"$d/server.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
    quiet openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -CAcreateserial -days 30 -out "$d/server.pem" -extfile "$d/server.ext"
    quiet openssl verify -CAfile "$d/ca.pem" "$d/server.pem"
    # skopeo/containers style --cert-dir: *.crt files are CA roots.
    mkdir -p "$d/ca.d"
    cp "$d/ca.pem" "$d/ca.d/ca.crt"
    chmod 600 "$d/ca.key" "$d/server.key"
    chmod 644 "$d/ca.pem" "$d/server.pem" "$d/ca.d/ca.crt"
    REG_CA=$d/ca.pem
    REG_CERT_DIR=$d/ca.d
}

# write_registry_config NAME PORT TLS(0|1) AUTH(0|1)
write_registry_config() {
    local name=$1 port=$2 tls=$3 auth=$4 cfg=$WORK/registry/$1.yml
    {
        echo "version: 0.1"
        echo "log:"
        echo "  level: info"
        echo "  formatter: text"
        echo "  accesslog:"
        echo "    disabled: false"
        echo "  fields:"
        echo "    service: registry-$name"
        echo "storage:"
        echo "  filesystem:"
        echo "    rootdirectory: $WORK/registry/storage"
        echo "  delete:"
        echo "    enabled: true"
        echo "  maintenance:"
        echo "    uploadpurging:"
        echo "      enabled: false"
        echo "http:"
        echo "  addr: 127.0.0.1:$port"
        echo "  headers:"
        echo "    X-Content-Type-Options: [nosniff]"
        if [ "$tls" = 1 ]; then
            echo "  tls:"
            echo "    certificate: $WORK/certs/server.pem"
            echo "    key: $WORK/certs/server.key"
        fi
        if [ "$auth" = 1 ]; then
            echo "auth:"
            echo "  htpasswd:"
            echo "    realm: lpmx-test"
            echo "    path: $WORK/registry/htpasswd"
        fi
    } >"$cfg"
}

# wait_registry NAME URL PID EXPECTED_CODE [env for http_get...]
wait_registry() {
    local name=$1 url=$2 pid=$3 want=$4 log=$WORK/logs/registry-$1.log
    local deadline=$(($(date +%s) + 30)) code=000
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- $log ----" >&2
            tail -n 30 "$log" >&2 || true
            die "registry '$name' (pid $pid) exited during start-up; see $log"
        fi
        code=$(http_get "$url/v2/" 2>/dev/null) || code=000
        [ "$code" = "$want" ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "---- $log ----" >&2
            tail -n 30 "$log" >&2 || true
            die "registry '$name' did not answer GET $url/v2/ with $want within 30s (last: $code); see $log"
        fi
        sleep 0.2
    done
}

start_registries() {
    mkdir -p "$WORK/registry/storage" "$WORK/logs"
    make_certs
    quiet htpasswd -Bbc "$WORK/registry/htpasswd" "$REG_USER" "$REG_PASSWORD"

    local ports
    mapfile -t ports < <(free_ports 3)
    [ "${#ports[@]}" -eq 3 ] || die "could not pick free ports"
    REG_HTTP=127.0.0.1:${ports[0]}
    REG_TLS=127.0.0.1:${ports[1]}
    REG_AUTH=127.0.0.1:${ports[2]}

    write_registry_config http "${ports[0]}" 0 0
    write_registry_config tls "${ports[1]}" 1 0
    write_registry_config auth "${ports[2]}" 1 1

    local name pid
    for name in http tls auth; do
        docker-registry serve "$WORK/registry/$name.yml" \
            </dev/null >>"$WORK/logs/registry-$name.log" 2>&1 &
        pid=$!
        LPMX_REGISTRY_PIDS+=("$pid")
        echo "$pid" >"$WORK/registry/$name.pid"
    done

    wait_registry http "http://$REG_HTTP" "${LPMX_REGISTRY_PIDS[0]}" 200
    HTTP_CA=$REG_CA wait_registry tls "https://$REG_TLS" "${LPMX_REGISTRY_PIDS[1]}" 200
    # Without credentials the auth registry must refuse...
    HTTP_CA=$REG_CA wait_registry auth "https://$REG_AUTH" "${LPMX_REGISTRY_PIDS[2]}" 401
    # ...and with them accept.
    local code
    code=$(HTTP_CA=$REG_CA HTTP_USER=$REG_USER HTTP_PASSWORD=$REG_PASSWORD http_get "https://$REG_AUTH/v2/")
    [ "$code" = 200 ] || die "auth registry refused user $REG_USER (HTTP $code); see $WORK/logs/registry-auth.log"
    # Wrong password must fail.
    code=$(HTTP_CA=$REG_CA HTTP_USER=$REG_USER HTTP_PASSWORD=wrong http_get "https://$REG_AUTH/v2/")
    [ "$code" = 401 ] || die "auth registry accepted a wrong password (HTTP $code)"

    # The access log (Apache combined format on stdout) must be on.
    local n
    for n in http tls; do
        grep -q '"GET /v2/ HTTP/1\.[01]" 200 ' "$WORK/logs/registry-$n.log" ||
            die "no access-log line for GET /v2/ in $WORK/logs/registry-$n.log"
    done
    info "http  $REG_HTTP  (log registry-http.log)"
    info "tls   $REG_TLS  (log registry-tls.log)"
    info "auth  $REG_AUTH  (log registry-auth.log, user $REG_USER)"
}

# Move what the registries logged during set-up (pushes, checks) to
# $WORK/logs/setup/ and empty the live logs, so the tests see only their own
# requests. The registries write with O_APPEND, so truncating is safe.
reset_registry_logs() {
    local n
    mkdir -p "$WORK/logs/setup"
    for n in http tls auth fenced; do
        [ -e "$WORK/logs/registry-$n.log" ] || continue
        cp "$WORK/logs/registry-$n.log" "$WORK/logs/setup/registry-$n.log"
        : >"$WORK/logs/registry-$n.log"
    done
}

stop_registries() {
    local pid
    for pid in "${LPMX_REGISTRY_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${LPMX_REGISTRY_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    LPMX_REGISTRY_PIDS=()
}
