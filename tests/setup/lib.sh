# shellcheck shell=bash
# Common helpers for tests/run.sh. Sourced, never executed.

LPMX_T0=${LPMX_T0:-$(date +%s)}

# Print a step name (plain line, batch-log friendly) and remember it for errors.
step() {
    LPMX_STEP="$*"
    echo "== [$(($(date +%s) - LPMX_T0))s] $*"
}

info() { echo "   $*"; }
warn() { echo "WARNING: $*" >&2; }
die() {
    echo "ERROR: $*" >&2
    exit 1
}

# Run a command with its output appended to $WORK/logs/setup/commands.log; on failure
# show the command and the tail of that log, then fail.
quiet() {
    local log=$WORK/logs/setup/commands.log rc=0
    echo "+ $*" >>"$log"
    "$@" >>"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "ERROR: command failed (exit $rc): $*" >&2
        echo "---- last lines of $log ----" >&2
        tail -n 40 "$log" >&2
        echo "----" >&2
        exit 1
    fi
}

# N free TCP ports on 127.0.0.1, one per line, all different.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()
EOF
}

# http_get URL [OUTFILE] -- prints the HTTP status code; body goes to OUTFILE.
# Options via env: HTTP_CA (CA file), HTTP_USER/HTTP_PASSWORD (basic auth),
# HTTP_ACCEPT (Accept header), HTTP_CT_OUT (file that receives the response
# Content-Type). Prints 000 when the connection fails.
http_get() {
    python3 - "$1" "${2:-/dev/null}" <<'EOF'
import base64, os, ssl, sys, urllib.request, urllib.error
url, out = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url)
if os.environ.get("HTTP_ACCEPT"):
    req.add_header("Accept", os.environ["HTTP_ACCEPT"])
if os.environ.get("HTTP_USER"):
    tok = base64.b64encode((os.environ["HTTP_USER"] + ":" + os.environ.get("HTTP_PASSWORD", "")).encode()).decode()
    req.add_header("Authorization", "Basic " + tok)
ctx = None
if url.startswith("https:"):
    ctx = ssl.create_default_context(cafile=os.environ.get("HTTP_CA") or None)
ct = ""
try:
    with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
        code, body, ct = r.status, r.read(), r.headers.get("Content-Type", "")
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
except Exception as e:  # connection refused, TLS error, timeout...
    sys.stderr.write("http_get %s: %s\n" % (url, e))
    code, body = 0, b""
with open(out, "wb") as f:
    f.write(body)
if os.environ.get("HTTP_CT_OUT"):
    with open(os.environ["HTTP_CT_OUT"], "w") as f:
        f.write(ct)
print("%03d" % code)
EOF
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
