//! Which batch system and which MPI launcher started us, read from the job environment.
//! Kept as tables: a site with another scheduler adds a row, not code.

use std::collections::BTreeMap;

use serde::Serialize;

/// A batch system, recognised by the variable that marks "inside a job".
pub struct BatchSystem {
    pub name: &'static str,
    /// Present in every job of this system.
    pub marker: &'static str,
    /// Variables whose values identify the job, in the order they are reported.
    pub ids: &'static [&'static str],
}

pub const BATCH_SYSTEMS: &[BatchSystem] = &[
    BatchSystem {
        name: "Slurm",
        marker: "SLURM_JOB_ID",
        ids: &["SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID"],
    },
    BatchSystem {
        name: "PBS",
        marker: "PBS_JOBID",
        ids: &["PBS_JOBID", "PBS_TASKNUM"],
    },
    // SGE sets JOB_ID, which is too common a name to trust alone.
    BatchSystem {
        name: "SGE",
        marker: "SGE_TASK_ID",
        ids: &["JOB_ID", "SGE_TASK_ID"],
    },
    BatchSystem {
        name: "LSF",
        marker: "LSB_JOBID",
        ids: &["LSB_JOBID", "LSB_JOBINDEX"],
    },
    BatchSystem {
        name: "HTCondor",
        marker: "_CONDOR_JOB_AD",
        ids: &["_CONDOR_JOB_AD"],
    },
    BatchSystem {
        name: "Flux",
        marker: "FLUX_JOB_ID",
        ids: &["FLUX_JOB_ID", "FLUX_TASK_RANK"],
    },
];

/// Variables naming host directories a task's MPI needs to reach (its launcher's rendezvous
/// files and shared-memory stores): `run` binds each that exists at the same path, unless a
/// default bind (/tmp, $TMPDIR, $HOME...) already shows it. Slurm's PMIx plugin puts them
/// under SlurmdSpoolDir (/var/spool/slurmd), which no default bind covers.
pub const JOB_DIR_VARS: &[&str] = &[
    "PMIX_SERVER_TMPDIR",
    "PMIX_DSTORE_21_BASE_PATH",
    "PMIX_DSTORE_ESH_BASE_PATH",
    "PMIX_SYSTEM_TMPDIR",
];

/// An MPI process-management interface, recognised by what the launcher exports.
pub struct MpiLaunch {
    pub name: &'static str,
    pub markers: &'static [&'static str],
    pub rank: &'static str,
}

pub const MPI_LAUNCHES: &[MpiLaunch] = &[
    MpiLaunch {
        name: "PMIx",
        markers: &["PMIX_RANK", "PMIX_NAMESPACE", "PMIX_SERVER_URI4"],
        rank: "PMIX_RANK",
    },
    MpiLaunch {
        name: "PMI2",
        markers: &["PMI_FD", "PMI_JOBID"],
        rank: "PMI_RANK",
    },
    MpiLaunch {
        name: "PMI1",
        markers: &["PMI_RANK", "PMI_SIZE"],
        rank: "PMI_RANK",
    },
    MpiLaunch {
        name: "Open MPI (mpirun)",
        markers: &["OMPI_COMM_WORLD_RANK"],
        rank: "OMPI_COMM_WORLD_RANK",
    },
    MpiLaunch {
        name: "Hydra (MPICH/Intel MPI)",
        markers: &["PMI_PORT", "HYDRA_CONTROL_FD"],
        rank: "PMI_RANK",
    },
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detected {
    pub name: &'static str,
    /// The identifying variables that are set, with their values.
    pub ids: BTreeMap<&'static str, String>,
}

impl Detected {
    pub fn describe(&self) -> String {
        if self.ids.is_empty() {
            return self.name.to_string();
        }
        let ids: Vec<String> = self.ids.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{} ({})", self.name, ids.join(" "))
    }
}

pub fn detect_batch(env: &BTreeMap<String, String>) -> Option<Detected> {
    BATCH_SYSTEMS
        .iter()
        .find(|b| env.contains_key(b.marker))
        .map(|b| Detected {
            name: b.name,
            ids: b
                .ids
                .iter()
                .filter_map(|k| env.get(*k).map(|v| (*k, v.clone())))
                .collect(),
        })
}

pub fn detect_mpi(env: &BTreeMap<String, String>) -> Option<Detected> {
    let slurm_mpi = env.get("SLURM_MPI_TYPE");
    MPI_LAUNCHES
        .iter()
        .find(|m| m.markers.iter().any(|k| env.contains_key(*k)))
        .map(|m| {
            let mut ids: BTreeMap<&'static str, String> = env
                .get(m.rank)
                .map(|v| (m.rank, v.clone()))
                .into_iter()
                .collect();
            if let Some(t) = slurm_mpi {
                ids.insert("SLURM_MPI_TYPE", t.clone());
            }
            Detected { name: m.name, ids }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn finds_each_batch_system() {
        for b in BATCH_SYSTEMS {
            let d = detect_batch(&env(&[(b.marker, "42")])).unwrap();
            assert_eq!(d.name, b.name);
        }
        assert_eq!(
            detect_batch(&env(&[("JOB_ID", "7")])),
            None,
            "JOB_ID alone is not SGE"
        );
        assert_eq!(detect_batch(&env(&[("HOME", "/h")])), None);
    }

    #[test]
    fn slurm_step_is_described() {
        let d = detect_batch(&env(&[
            ("SLURM_JOB_ID", "12"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "1"),
        ]))
        .unwrap();
        assert_eq!(
            d.describe(),
            "Slurm (SLURM_JOB_ID=12 SLURM_PROCID=1 SLURM_STEP_ID=0)"
        );
    }

    #[test]
    fn pmix_wins_over_pmi_and_reports_rank() {
        let d = detect_mpi(&env(&[
            ("PMIX_RANK", "3"),
            ("PMI_RANK", "3"),
            ("SLURM_MPI_TYPE", "pmix"),
        ]))
        .unwrap();
        assert_eq!(d.name, "PMIx");
        assert_eq!(d.ids["PMIX_RANK"], "3");
        assert_eq!(d.ids["SLURM_MPI_TYPE"], "pmix");
        assert_eq!(
            detect_mpi(&env(&[("PMI_FD", "5"), ("PMI_RANK", "0")]))
                .unwrap()
                .name,
            "PMI2"
        );
        assert!(detect_mpi(&env(&[])).is_none());
    }
}
