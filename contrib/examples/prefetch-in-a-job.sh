#!/bin/bash
#SBATCH --job-name=lpmx-prefetch
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
# Every node pulls the same image into the shared cache at once: lpmx-job locks each blob,
# so the registry sees one download per blob and the other nodes wait and reuse it.
set -euo pipefail
export LPMX_CACHE=${LPMX_CACHE:-/shared/$USER/lpmx}
srun lpmx-job pull docker.io/library/debian:bookworm
lpmx-job images
