#!/bin/sh
# A parallel-environment job: one container per MPI rank, with the image's own MPI. The host's
# Open MPI `mpirun` finds the job's slots in PE_HOSTFILE (SGE tight integration: ranks on
# other hosts are started through `qrsh -inherit`, so the PE needs control_slaves TRUE) and
# starts `lpmx-job run` once per rank; the queue's prolog has prefetched the image.
#
#   qsub pe-job.sh                        as written below
#   qsub -pe lpmx 2 -v LPMX_PREFETCH=IMG pe-job.sh PROG [ARGS...]
#                                         command-line options override the #$ lines;
#                                         arguments after the script are the program
#$ -N lpmx-pe
#$ -pe mpi 8
#$ -l h_rt=00:10:00
#$ -cwd
#$ -S /bin/sh
#$ -v LPMX_PREFETCH=registry.example.org/hpc/openmpi-app:1.0
set -e
IMG=${LPMX_PREFETCH%% *}
[ "$#" -gt 0 ] || set -- /opt/app/bin/solver input.dat
echo "lpmx-pe: job $JOB_ID, $NSLOTS slots on $(cut -d' ' -f1,2 "$PE_HOSTFILE" | tr '\n' ' '), image $IMG" >&2
exec mpirun -np "$NSLOTS" "${LPMX_BIN:-lpmx-job}" -q run "$IMG" "$@"
