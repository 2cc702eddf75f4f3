# shellcheck shell=bash
# A real one-node Slurm cluster (Debian slurm-wlm 22.05 + munge) for the batch tests.
# Sourced; needs WORK and LPMX_TEST_USER.
#
# Everything is private to this run, so it touches no global machine state and two runs
# on one machine do not meet:
#   - munged runs as user munge on its own socket, key, pid and seed files under
#     $WORK/slurm/munge (the key is a copy of /etc/munge/munge.key, or a new one);
#   - slurm.conf is $WORK/slurm/slurm.conf, named by SLURM_CONF for every client command
#     (sbatch exports it into jobs, so `srun` inside a job finds it too) and by `-f` for
#     the daemons; /etc/slurm is not written;
#   - slurmctld and slurmd listen on free ports; state, pid and log files live under
#     $WORK/slurm; the cluster name carries this run's id;
#   - slurmd's spool (where PMIx and the step daemons keep their sockets) is
#     /var/spool/lpmx-test/RUN, outside /tmp as on real nodes (/var/spool/slurmd), so the
#     tests see whether containers reach it without /tmp's default bind; removed at exit.
# Sets: SLURM_TEST_ENV (array of NAME=VALUE for the test executables), LPMX_SLURM_PIDS.
# Logs: $WORK/logs/slurmctld.log, slurmd.log, munged.log.

LPMX_SLURM_PIDS=()
SLURM_TEST_ENV=()
LPMX_SLURM_PARTITION=lpmx

slurm_fail() {
    local f
    for f in "$WORK"/logs/munged.log "$WORK"/logs/slurmctld.log "$WORK"/logs/slurmd.log; do
        [ -s "$f" ] || continue
        echo "---- last lines of $f ----" >&2
        tail -n 25 "$f" >&2
    done
    die "$*"
}

start_munge() {
    local d=$WORK/slurm/munge
    mkdir -p "$d"
    if [ -s /etc/munge/munge.key ]; then
        cp /etc/munge/munge.key "$d/munge.key"
    else
        dd if=/dev/urandom of="$d/munge.key" bs=1 count=1024 status=none
    fi
    chown -R munge:munge "$d"
    chmod 755 "$d"
    chmod 400 "$d/munge.key"
    MUNGE_SOCKET=$d/munge.socket
    setpriv --reuid=munge --regid=munge --init-groups \
        munged --foreground --socket="$MUNGE_SOCKET" --key-file="$d/munge.key" \
        --pid-file="$d/munged.pid" --seed-file="$d/munged.seed" \
        --log-file="$WORK/logs/munged.log" \
        </dev/null >>"$WORK/logs/munged.log" 2>&1 &
    LPMX_SLURM_PIDS+=("$!")
    local i
    for i in $(seq 1 100); do
        if munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "${LPMX_SLURM_PIDS[-1]}" 2>/dev/null || slurm_fail "munged exited during start-up"
        sleep 0.1
    done
    slurm_fail "munged did not answer on $MUNGE_SOCKET within 10s"
}

write_slurm_conf() {
    local s=$WORK/slurm host cpus mem ports
    host=$(hostname -s)
    cpus=$(nproc)
    # A node that claims more memory than it has is drained: stay at or under slurmd -C.
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
    [ -n "$mem" ] || mem=2000
    [ "$mem" -gt 2000 ] && mem=2000
    mapfile -t ports < <(free_ports 2)
    SLURM_SPOOL=/var/spool/lpmx-test/$(basename "$WORK")
    mkdir -p "$s/state" "$SLURM_SPOOL"
    chmod 755 "$s" "$s/state" "$SLURM_SPOOL"
    cat >"$s/slurm.conf" <<EOF
# Written by tests/setup/slurm.sh for one test run; removed with $WORK.
ClusterName=lpmxtest$(basename "$WORK" | tr -cd '[:alnum:]' | tr '[:upper:]' '[:lower:]')
SlurmctldHost=$host
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job ends by time limit or scancel.
KillWait=5
InactiveLimit=0
MinJobAge=300
StateSaveLocation=$s/state
SlurmdSpoolDir=$SLURM_SPOOL
SlurmctldPidFile=$s/slurmctld.pid
SlurmdPidFile=$s/slurmd.pid
SlurmctldLogFile=$WORK/logs/slurmctld.log
SlurmdLogFile=$WORK/logs/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$LPMX_SLURM_PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    chmod 644 "$s/slurm.conf"
    SLURM_CONF=$s/slurm.conf
    # The site hooks of integrations/slurm, run by slurmd as root for every job (jobs that
    # name no image in their comment cost one `scontrol show job`).
    local h
    for h in prolog epilog; do
        cat >"$s/$h.sh" <<EOF
#!/bin/sh
export LPMX_BIN=$WORK/bin/lpmx-job LPMX_HOOK_LOG=$WORK/logs/slurm-hooks.log
export LPMX_INSECURE_REGISTRIES=${REG_HTTP:-} SLURM_CONF=$s/slurm.conf
exec $REPO/integrations/slurm/$h.sh
EOF
        chmod 755 "$s/$h.sh"
    done
    cat >>"$s/slurm.conf" <<EOF
Prolog=$s/prolog.sh
Epilog=$s/epilog.sh
PrologFlags=Alloc
EOF
}

start_slurm() {
    mkdir -p "$WORK/slurm"
    chmod 755 "$WORK/slurm"
    start_munge
    write_slurm_conf
    export SLURM_CONF
    slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$WORK/logs/slurmctld.log" 2>&1 &
    LPMX_SLURM_PIDS+=("$!")
    local ctld=$!
    slurmd -D -f "$SLURM_CONF" </dev/null >>"$WORK/logs/slurmd.log" 2>&1 &
    LPMX_SLURM_PIDS+=("$!")
    local d=$! state="" deadline=$(($(date +%s) + 60))
    while :; do
        kill -0 "$ctld" 2>/dev/null || slurm_fail "slurmctld exited during start-up"
        kill -0 "$d" 2>/dev/null || slurm_fail "slurmd exited during start-up"
        state=$(sinfo -h -p "$LPMX_SLURM_PARTITION" -o %t 2>/dev/null | head -n1) || state=""
        [ "$state" = idle ] && break
        [ "$(date +%s)" -ge "$deadline" ] &&
            slurm_fail "the Slurm node is not idle within 60s (sinfo says '${state:-nothing}')"
        sleep 0.3
    done
    # The ordinary user can submit and run (a short job proves munge, ports and spool).
    local out
    # shellcheck disable=SC2016 # expanded by the task's shell
    out=$(cd / && runuser -u "$LPMX_TEST_USER" -- env SLURM_CONF="$SLURM_CONF" \
        timeout 60 srun -n2 -t 1 sh -c 'echo "task $SLURM_PROCID"' 2>&1 | sort) ||
        slurm_fail "srun as $LPMX_TEST_USER failed: $out"
    [ "$out" = "$(printf 'task 0\ntask 1')" ] || slurm_fail "srun -n2 as $LPMX_TEST_USER printed: $out"
    # shellcheck disable=SC2034 # read by write_test_env (tests.sh)
    SLURM_TEST_ENV=(
        "LPMX_TEST_SLURM=1"
        "SLURM_CONF=$SLURM_CONF"
        "LPMX_TEST_SLURM_PARTITION=$LPMX_SLURM_PARTITION"
    )
    info "$(sinfo --version) on $(hostname -s): partition $LPMX_SLURM_PARTITION idle, $(nproc) CPUs (conf $SLURM_CONF)"
}

stop_slurm() {
    [ "${#LPMX_SLURM_PIDS[@]}" -gt 0 ] || return 0
    local pid i
    # Jobs first (their steps belong to slurmstepd, which outlives slurmd otherwise).
    if [ -n "${SLURM_CONF:-}" ]; then
        timeout 10 scancel --full --quiet -p "$LPMX_SLURM_PARTITION" >/dev/null 2>&1 || true
    fi
    # Stop in reverse order: slurmd, slurmctld, munged.
    for ((i = ${#LPMX_SLURM_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${LPMX_SLURM_PIDS[$i]}
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${SLURM_SPOOL:-}" ]; then
        rm -rf "$SLURM_SPOOL"
        rmdir /var/spool/lpmx-test 2>/dev/null || true
    fi
    LPMX_SLURM_PIDS=()
}

# An MPI image for the batch tests: Debian bookworm (mmdebstrap, minbase) with an MPI and a
# small allreduce program compiled on the host with that MPI's mpicc (the host is bookworm
# too), written as a `docker save` archive. FLAVOUR `openmpi` (Open MPI 4.1:
# $WORK/fixtures/mpi.docker.tar, LPMX_TEST_MPI_IMAGE) or `mpich` (MPICH 4.0:
# $WORK/fixtures/mpich.docker.tar, LPMX_TEST_MPICH_IMAGE). About 250 MB and two minutes
# with the downloads, so it is kept in $LPMX_TEST_CACHE_DIR (default
# /var/tmp/lpmx-test-cache) keyed by its recipe, and reused by later runs on the machine.
build_mpi_image() {
    local flavour=$1 d=$WORK/mpi-$1 cache=${LPMX_TEST_CACHE_DIR:-/var/tmp/lpmx-test-cache}
    local key out mpicc pkgs name var
    case $flavour in
    openmpi) mpicc=mpicc.openmpi pkgs=openmpi-bin,libopenmpi3 name=mpi var=LPMX_TEST_MPI_IMAGE ;;
    mpich) mpicc=mpicc.mpich pkgs=libmpich12 name=mpich var=LPMX_TEST_MPICH_IMAGE ;;
    *) die "build_mpi_image: unknown flavour $flavour" ;;
    esac
    mkdir -p "$d" "$cache" "$WORK/fixtures"
    cat >"$d/mpi-hello.c" <<'EOF'
/* Each rank adds rank+1 with MPI_Allreduce: with N ranks every rank prints sum=N(N+1)/2. */
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    int rank, size, one, sum;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    one = rank + 1;
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank=%d size=%d sum=%d\n", rank, size, sum);
    MPI_Finalize();
    return 0;
}
EOF
    cat >"$d/mkarchive.py" <<'EOF'
# mkarchive.py ROOTFS.tar OUT.docker.tar NAME:TAG PACKAGES -- a one-layer `docker save`
# archive of a root filesystem tarball, without device nodes (a rootless unpack cannot make
# them, and the runtime binds the host's /dev).
import hashlib, io, json, sys, tarfile
src, out, name, pkgs = sys.argv[1:5]
layer = io.BytesIO()
with tarfile.open(src) as tin, tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tout:
    for m in tin:
        if m.ischr() or m.isblk() or m.isfifo():
            continue
        tout.addfile(m, tin.extractfile(m) if m.isfile() else None)
data = layer.getvalue()
config = {
    "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["/usr/local/bin/mpi-hello"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest()]},
    "history": [{"created_by": "mmdebstrap --variant=minbase --include=" + pkgs + " bookworm"}],
}
cfg = json.dumps(config).encode()
cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
manifest = json.dumps([{"Config": cfg_name, "RepoTags": [name], "Layers": ["layer.tar"]}]).encode()
with tarfile.open(out, "w") as t:
    for n, b in ((cfg_name, cfg), ("layer.tar", data), ("manifest.json", manifest)):
        i = tarfile.TarInfo(n)
        i.size, i.mode, i.mtime = len(b), 0o644, 1704067200
        t.addfile(i, io.BytesIO(b))
EOF
    # Keyed by the recipe and by the versions of the host's MPI packages the program is
    # compiled with (an upgraded host MPI must not run against an image built before it).
    local hostpkgs
    hostpkgs=$(dpkg-query -W -f='${Package}=${Version}\n' openmpi-bin libopenmpi-dev libopenmpi3 \
        mpich libmpich-dev libmpich12 2>/dev/null | sort)
    key=$( (cat "$d/mpi-hello.c" "$d/mkarchive.py" && echo "$mpicc $pkgs" && echo "$hostpkgs") |
        sha256sum | cut -c1-16)
    out=$cache/$flavour-bookworm-$key.docker.tar
    if [ -s "$out" ]; then
        info "$flavour image: reusing $out"
    else
        quiet "$mpicc" -O2 -o "$d/mpi-hello" "$d/mpi-hello.c"
        # The same Debian mirror and network options as the host's own apt (a CI machine
        # may reach Debian only through a configured registry or proxy).
        local aptopts=() mirror=() f
        for f in /etc/apt/apt.conf.d/*; do
            [ -f "$f" ] && grep -q '^Acquire::' "$f" &&
                ! grep -qvE '^(Acquire::|[[:space:]]*$|//|#)' "$f" && aptopts+=("--aptopt=$f")
        done
        for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
            if [ -s "$f" ] && grep -qE '^[^#]*bookworm' "$f"; then
                mirror=("$f")
                break
            fi
        done
        local t0=$SECONDS
        # shellcheck disable=SC2016 # "$1" is the hook's argument, expanded by mmdebstrap
        if ! mmdebstrap --quiet --variant=minbase --include="$pkgs" \
            --customize-hook="copy-in $d/mpi-hello /usr/local/bin" \
            --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
            "${aptopts[@]}" bookworm "$d/rootfs.tar" "${mirror[@]}" \
            >>"$WORK/logs/setup/commands.log" 2>&1; then
            if [ "${CI:-}" = true ]; then
                tail -n 30 "$WORK/logs/setup/commands.log" >&2
                die "mmdebstrap could not build the $flavour image (see above)"
            fi
            warn "mmdebstrap failed (no Debian mirror?): the $flavour tests will fail; LPMX_TEST_ALLOW_SKIP=mpi skips them"
            rm -f "$d/rootfs.tar"
            return 0
        fi
        quiet python3 "$d/mkarchive.py" "$d/rootfs.tar" "$out.tmp" "lpmx/$name:latest" "$pkgs"
        mv "$out.tmp" "$out"
        rm -f "$d/rootfs.tar"
        info "$flavour image: built $out in $((SECONDS - t0))s"
    fi
    ln -sf "$out" "$WORK/fixtures/$name.docker.tar"
    chmod 644 "$out"
    SLURM_TEST_ENV+=("$var=docker-archive:$WORK/fixtures/$name.docker.tar")
}
