# shellcheck shell=bash
# Step 1 and 2: Debian packages and the unprivileged test user. Sourced.

LPMX_TEST_PACKAGES=(
    docker-registry umoci skopeo busybox-static apache2-utils openssl jq
    util-linux procps ca-certificates python3 tar gzip coreutils curl
    gcc libc6-dev
    slurm-wlm munge mmdebstrap openmpi-bin libopenmpi-dev libmpich-dev
    gridengine-master gridengine-exec gridengine-client
    sudo tinyproxy iptables
)
LPMX_TEST_USER=lpmxtest
# The trust-boundary tests: a second ordinary user (the attacker), a group both belong to
# (a group cache, a group-writable wrapper directory), and the root side of scheduler hooks
# (tests/setup/as-root.sh, allowed to the test user by sudo).
LPMX_TEST_ATTACKER=lpmxattack
LPMX_TEST_GROUP=lpmxshare
LPMX_TEST_AS_ROOT=/usr/local/libexec/lpmx-test/as-root

install_packages() {
    local missing=() p status
    for p in "${LPMX_TEST_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$status" = installed ] || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        info "all packages present"
        return 0
    fi
    info "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    preseed_packages
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" </dev/null
    for p in "${missing[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$status" = installed ] || die "package $p is still not installed"
    done
}

# Answers for the packages' debconf questions, given before they are installed: the
# gridengine postinst scripts create the cell (init_cluster: spool, bootstrap, act_qmaster)
# only on their first configuration, and only when told to (tests/setup/sge.sh).
preseed_packages() {
    local host
    host=$(hostname)
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-master shared/gridengineconfig boolean true
gridengine-master shared/gridenginemaster string $host
gridengine-exec shared/gridengineconfig boolean true
gridengine-exec shared/gridenginemaster string $host
gridengine-client shared/gridengineconfig boolean true
gridengine-client shared/gridenginemaster string $host
EOF
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        local d
        for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
            if [ -x "$d/cargo" ]; then
                PATH=$d:$PATH
                export PATH
                break
            fi
        done
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found (looked in PATH and /root/.cargo/bin)"
}

ensure_user() {
    if ! id -u "$LPMX_TEST_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$LPMX_TEST_USER"
        info "created user $LPMX_TEST_USER"
    else
        info "user $LPMX_TEST_USER exists"
        # The scheduler prologs prefetch into the user's own default cache; one left by an
        # earlier run would already hold the blobs the prolog tests expect downloaded once.
        local home
        home=$(getent passwd "$LPMX_TEST_USER" | cut -d: -f6)
        [ -n "$home" ] && rm -rf "$home/.cache/lpmx"
    fi
    ensure_attacker
    # Not fatal: the tests say themselves what they need, this only explains.
    if ! (cd / && runuser -u "$LPMX_TEST_USER" -- unshare -U -r -m true) >/dev/null 2>&1; then
        warn "user $LPMX_TEST_USER cannot create a user+mount namespace (unshare -U -r -m failed)"
    fi
}

# The second user, the shared group, and what sudo allows the test user: to act as the
# attacker (any command: the attacker is just another ordinary user), and to run as root
# only lpmx-job or an integrations/ hook through as-root.sh, as a scheduler would.
ensure_attacker() {
    getent group "$LPMX_TEST_GROUP" >/dev/null || groupadd "$LPMX_TEST_GROUP"
    if ! id -u "$LPMX_TEST_ATTACKER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$LPMX_TEST_ATTACKER"
        info "created user $LPMX_TEST_ATTACKER"
    fi
    usermod -a -G "$LPMX_TEST_GROUP" "$LPMX_TEST_USER"
    usermod -a -G "$LPMX_TEST_GROUP" "$LPMX_TEST_ATTACKER"
    install -d -m 755 -o root -g root "$(dirname "$LPMX_TEST_AS_ROOT")"
    install -m 755 -o root -g root "$SETUP/as-root.sh" "$LPMX_TEST_AS_ROOT"
    local rules=/etc/sudoers.d/lpmx-test
    {
        echo "# Written by lpmx-job's tests/run.sh: the trust-boundary tests' second user and root hooks."
        echo "Defaults:$LPMX_TEST_USER !lecture, !syslog"
        echo "$LPMX_TEST_USER ALL=($LPMX_TEST_ATTACKER) NOPASSWD: ALL"
        echo "$LPMX_TEST_USER ALL=(root) NOPASSWD: $LPMX_TEST_AS_ROOT"
    } >"$rules.tmp"
    chmod 440 "$rules.tmp"
    visudo -c -q -f "$rules.tmp" || die "sudoers rules for the tests do not parse ($rules.tmp)"
    mv -f "$rules.tmp" "$rules"
    # Earlier runs' leftovers of the attacker (its own cache) would change what a test sees.
    local ahome
    ahome=$(getent passwd "$LPMX_TEST_ATTACKER" | cut -d: -f6)
    [ -n "$ahome" ] && rm -rf "$ahome/.cache/lpmx"
    if ! (cd / && runuser -u "$LPMX_TEST_USER" -- sudo -n -u "$LPMX_TEST_ATTACKER" true) >/dev/null 2>&1; then
        die "the test user cannot act as $LPMX_TEST_ATTACKER through sudo"
    fi
}

print_versions() {
    info "$(umoci --version 2>&1 | head -n1)"
    info "$(skopeo --version 2>&1 | head -n1)"
    info "$(docker-registry --version 2>&1 | head -n1)"
    info "$(busybox 2>&1 | head -n1)"
}
