#!/bin/sh
# A parallel-environment job: one container per MPI rank with the image's own MPI; Open MPI's
# mpirun reads PE_HOSTFILE (SGE tight integration) and starts ranks through qrsh.
#$ -N lpmx-pe
#$ -pe mpi 8
#$ -l h_rt=00:10:00
#$ -cwd
#$ -v LPMX_PREFETCH=registry.example.org/hpc/openmpi-app:1.0
IMG=registry.example.org/hpc/openmpi-app:1.0
mpirun -np "$NSLOTS" lpmx-job run "$IMG" /opt/app/bin/solver input.dat
