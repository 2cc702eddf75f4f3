//! The environment a contained command sees, HPC style: the job's own environment passes
//! through, the image's `Env` applies on top, except for what the job must keep to stay a
//! job (scheduler and MPI variables, the user's identity and terminal); then the user's own
//! settings. The rules are the tables below; [`container_env`] applies them and is pure.
//!
//! Order, later wins:
//! 0. [`TASK_DEFAULTS`]: MPI transport settings that one container per task needs;
//! 1. the host environment, minus `LPMXENV_*` and lpmx-job's internal markers
//!    (`--cleanenv`: nothing but [`CLEANENV_KEEP`] from the host);
//! 2. the image's `Env`, except for a variable the job keeps ([`KEEP_PREFIXES`],
//!    [`KEEP_NAMES`]) that the host has set; `PATH` is always the image's, or
//!    [`DEFAULT_PATH`] when the image sets none (the host's PATH names host directories);
//! 3. `LPMXENV_NAME=value` on the host sets `NAME` (also with `--cleanenv`: it is an
//!    explicit request, as `SINGULARITYENV_` is for Apptainer);
//! 4. `-e/--env KEY=VALUE`, in the order given.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Prefixes of variables the job keeps over the image's: batch systems, then MPI
/// process managers and transports.
pub const KEEP_PREFIXES: &[&str] = &[
    // Slurm, PBS/Torque, Grid Engine, LSF, HTCondor, Flux
    "SLURM_", "PBS_", "SGE_", "LSB_", "_CONDOR_", "FLUX_",
    // PMI-1/PMI-2 (PMI_*), PMIx, Open MPI, MPICH, Intel MPI, UCX, Hydra
    "PMI", "PMIX_", "OMPI_", "MPICH_", "I_MPI_", "UCX_", "HYDRA_",
];

/// Whole names the job keeps over the image's.
pub const KEEP_NAMES: &[&str] = &[
    // Grid Engine's job id (too common a name for a prefix)
    "JOB_ID",
    // the GPUs the scheduler gave this task
    "CUDA_VISIBLE_DEVICES",
    // who and where the user is
    "HOME",
    "USER",
    "LOGNAME",
    "TERM",
    "TMPDIR",
];

/// Defaults for what one container per task breaks, set unless the host, the image or the
/// user sets them. Each task has its own user namespace, so one task may not read another's
/// `/proc/PID/fd` nor its memory (CMA, `process_vm_readv`): MPI shared-memory transports
/// that rely on these fail, and must use named shared memory in /dev/shm (bound from the
/// host, so common to the node's tasks) and plain copies instead.
pub const TASK_DEFAULTS: &[(&str, &str)] = &[
    // UCX (MPICH ch4:ucx, Open MPI pml/ucx): name its shared memory segments instead of
    // passing them through /proc/PID/fd ("mm_posix.c: open(/proc/N/fd/M) failed").
    ("UCX_POSIX_USE_PROC_LINK", "n"),
    // Open MPI 4 vader: no CMA single copy (it would fall back itself, with a warning).
    ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
];

/// What `--cleanenv` still takes from the host.
pub const CLEANENV_KEEP: &[&str] = &["HOME", "USER", "TERM"];

/// `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `LPMXENV_NAME=value` on the host sets `NAME` inside.
pub const SET_PREFIX: &str = "LPMXENV_";

/// lpmx-job's own markers between its processes; never passed on.
pub const INTERNAL_PREFIX: &str = "LPMX_INTERNAL_";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("-e/--env {arg:?}: {why}; give KEY=VALUE")]
    BadSetting { arg: String, why: &'static str },
}

/// Whether the job keeps `name` over the image's value.
pub fn is_kept(name: &[u8]) -> bool {
    KEEP_NAMES.iter().any(|k| k.as_bytes() == name)
        || KEEP_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
}

pub struct Inputs<'a> {
    /// The host environment, as the process received it.
    pub host: &'a [(OsString, OsString)],
    /// The image config's `Env`, `KEY=VALUE` each.
    pub image: &'a [String],
    /// `-e/--env` arguments, in order.
    pub settings: &'a [String],
    pub cleanenv: bool,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// The environment, sorted by name.
    pub vars: Vec<(OsString, OsString)>,
    /// Image entries that were ignored, to be said at `-v`.
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_os_str())
    }
}

/// Parses one `-e/--env` argument.
pub fn parse_setting(arg: &str) -> Result<(String, String)> {
    let bad = |why| Error::BadSetting {
        arg: arg.to_string(),
        why,
    };
    let (k, v) = arg.split_once('=').ok_or_else(|| bad("no `=`"))?;
    if k.is_empty() {
        return Err(bad("the name is empty"));
    }
    if k.contains('\0') || v.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Applies the rules of this module. Fails only on a bad `-e/--env`.
pub fn container_env(i: &Inputs) -> Result<Outcome> {
    let settings = i
        .settings
        .iter()
        .map(|a| parse_setting(a))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Outcome::default();
    let mut env: BTreeMap<OsString, OsString> = TASK_DEFAULTS
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    let internal = |k: &OsStr| {
        k.as_bytes().starts_with(SET_PREFIX.as_bytes())
            || k.as_bytes().starts_with(INTERNAL_PREFIX.as_bytes())
    };
    for (k, v) in i.host {
        let take = if i.cleanenv {
            CLEANENV_KEEP.iter().any(|c| c.as_bytes() == k.as_bytes())
        } else {
            !internal(k)
        };
        if take && !k.is_empty() {
            env.insert(k.clone(), v.clone());
        }
    }
    let mut image_path = false;
    for entry in i.image {
        let Some((k, v)) = entry.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            out.notes.push(format!(
                "image Env entry {entry:?} is not KEY=VALUE; ignored"
            ));
            continue;
        };
        if k == "PATH" {
            image_path = true;
        }
        let host_has = i.host.iter().any(|(hk, _)| hk.as_bytes() == k.as_bytes());
        if is_kept(k.as_bytes()) && host_has && env.contains_key(OsStr::new(k)) {
            continue;
        }
        env.insert(k.into(), v.into());
    }
    if !image_path {
        env.insert("PATH".into(), DEFAULT_PATH.into());
    }
    for (k, v) in i.host {
        if let Some(name) = k.as_bytes().strip_prefix(SET_PREFIX.as_bytes()) {
            if !name.is_empty() {
                env.insert(OsStr::from_bytes(name).to_os_string(), v.clone());
            }
        }
    }
    for (k, v) in settings {
        env.insert(k.into(), v.into());
    }
    out.vars = env.into_iter().collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_defaults_yield_to_everyone() {
        let o = env(&[], &[], &[], true);
        assert_eq!(o.get("UCX_POSIX_USE_PROC_LINK"), Some(OsStr::new("n")));
        let o = env(&[("UCX_POSIX_USE_PROC_LINK", "y")], &[], &[], false);
        assert_eq!(o.get("UCX_POSIX_USE_PROC_LINK"), Some(OsStr::new("y")));
        let o = env(&[], &["UCX_POSIX_USE_PROC_LINK=y"], &[], false);
        assert_eq!(o.get("UCX_POSIX_USE_PROC_LINK"), Some(OsStr::new("y")));
        let o = env(
            &[],
            &[],
            &["OMPI_MCA_btl_vader_single_copy_mechanism=cma"],
            false,
        );
        assert_eq!(
            o.get("OMPI_MCA_btl_vader_single_copy_mechanism"),
            Some(OsStr::new("cma"))
        );
    }

    fn host(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn env(h: &[(&str, &str)], image: &[&str], settings: &[&str], cleanenv: bool) -> Outcome {
        let h = host(h);
        let image: Vec<String> = image.iter().map(|s| s.to_string()).collect();
        let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        container_env(&Inputs {
            host: &h,
            image: &image,
            settings: &settings,
            cleanenv,
        })
        .unwrap()
    }

    fn get<'a>(o: &'a Outcome, k: &str) -> Option<&'a str> {
        o.get(k).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn job_variables_survive_the_image() {
        let o = env(
            &[
                ("SLURM_JOB_ID", "42"),
                ("PMIX_RANK", "3"),
                ("PMI_FD", "5"),
                ("OMPI_COMM_WORLD_SIZE", "8"),
                ("CUDA_VISIBLE_DEVICES", "1"),
                ("HOME", "/home/u"),
                ("FIXTURE", "host"),
                ("PATH", "/host/bin"),
                ("EDITOR", "vi"),
            ],
            &[
                "SLURM_JOB_ID=image",
                "PMIX_RANK=0",
                "OMPI_COMM_WORLD_SIZE=1",
                "CUDA_VISIBLE_DEVICES=all",
                "HOME=/root",
                "FIXTURE=one",
                "PATH=/usr/bin:/bin",
                "SLURM_CONF=/image/slurm.conf",
            ],
            &[],
            false,
        );
        assert_eq!(get(&o, "SLURM_JOB_ID"), Some("42"));
        assert_eq!(get(&o, "PMIX_RANK"), Some("3"));
        assert_eq!(get(&o, "PMI_FD"), Some("5"));
        assert_eq!(get(&o, "OMPI_COMM_WORLD_SIZE"), Some("8"));
        assert_eq!(get(&o, "CUDA_VISIBLE_DEVICES"), Some("1"));
        assert_eq!(get(&o, "HOME"), Some("/home/u"));
        // Not kept: the image's wins.
        assert_eq!(get(&o, "FIXTURE"), Some("one"));
        assert_eq!(get(&o, "PATH"), Some("/usr/bin:/bin"));
        // Host-only variables pass; a kept name the host lacks takes the image's value.
        assert_eq!(get(&o, "EDITOR"), Some("vi"));
        assert_eq!(get(&o, "SLURM_CONF"), Some("/image/slurm.conf"));
    }

    #[test]
    fn path_is_never_the_hosts() {
        let o = env(&[("PATH", "/host/bin")], &["A=b"], &[], false);
        assert_eq!(get(&o, "PATH"), Some(DEFAULT_PATH));
        let o = env(&[("PATH", "/host/bin")], &[], &[], true);
        assert_eq!(get(&o, "PATH"), Some(DEFAULT_PATH));
    }

    #[test]
    fn cleanenv_keeps_only_identity_and_image() {
        let o = env(
            &[
                ("HOME", "/home/u"),
                ("USER", "u"),
                ("TERM", "xterm"),
                ("SLURM_JOB_ID", "42"),
                ("EDITOR", "vi"),
                ("LPMXENV_FOO", "bar"),
            ],
            &["FIXTURE=one", "HOME=/root"],
            &["X=1"],
            true,
        );
        // The task defaults stay: MPI needs them whatever the environment.
        let names: Vec<_> = o
            .vars
            .iter()
            .map(|(k, _)| k.to_str().unwrap())
            .filter(|k| !TASK_DEFAULTS.iter().any(|(d, _)| d == k))
            .collect();
        assert_eq!(
            names,
            ["FIXTURE", "FOO", "HOME", "PATH", "TERM", "USER", "X"]
        );
        assert_eq!(get(&o, "HOME"), Some("/home/u"));
    }

    #[test]
    fn lpmxenv_and_settings_come_last() {
        let o = env(
            &[
                ("LPMXENV_FOO", "bar"),
                ("LPMXENV_PATH", "/opt/x/bin"),
                ("LPMXENV_", "nameless"),
                ("LPMX_INTERNAL_PULLED", "sha256:00"),
                ("SLURM_JOB_ID", "42"),
            ],
            &["FOO=image", "PATH=/bin"],
            &["SLURM_JOB_ID=7", "EMPTY=", "EQ=a=b"],
            false,
        );
        assert_eq!(get(&o, "FOO"), Some("bar"));
        assert_eq!(get(&o, "PATH"), Some("/opt/x/bin"));
        assert_eq!(get(&o, "SLURM_JOB_ID"), Some("7"), "-e wins over the job");
        assert_eq!(get(&o, "EMPTY"), Some(""));
        assert_eq!(get(&o, "EQ"), Some("a=b"));
        assert!(o
            .vars
            .iter()
            .all(|(k, _)| !k.to_str().unwrap().starts_with("LPMX")));
    }

    #[test]
    fn bad_settings_and_image_entries() {
        let h = host(&[]);
        for bad in ["FOO", "=x", "A\0=b"] {
            let settings = vec![bad.to_string()];
            let e = container_env(&Inputs {
                host: &h,
                image: &[],
                settings: &settings,
                cleanenv: false,
            })
            .unwrap_err();
            assert!(e.to_string().contains("KEY=VALUE"), "{e}");
        }
        let o = env(&[], &["NOEQUALS", "=v", "OK=1"], &[], false);
        assert_eq!(o.notes.len(), 2, "{:?}", o.notes);
        assert_eq!(get(&o, "OK"), Some("1"));
    }

    #[test]
    fn kept_names_are_a_table() {
        for k in [
            "SLURM_PROCID",
            "PBS_JOBID",
            "SGE_TASK_ID",
            "JOB_ID",
            "LSB_JOBID",
            "_CONDOR_SCRATCH_DIR",
            "FLUX_URI",
            "PMI_RANK",
            "PMIX_NAMESPACE",
            "OMPI_MCA_btl",
            "MPICH_GPU_SUPPORT_ENABLED",
            "I_MPI_PMI_LIBRARY",
            "UCX_TLS",
            "HYDRA_PROXY_PORT",
            "CUDA_VISIBLE_DEVICES",
            "TMPDIR",
            "LOGNAME",
        ] {
            assert!(is_kept(k.as_bytes()), "{k}");
        }
        for k in ["PATH", "LD_LIBRARY_PATH", "JOB_IDX", "FIXTURE", "LANG"] {
            assert!(!is_kept(k.as_bytes()), "{k}");
        }
    }
}
