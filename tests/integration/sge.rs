//! Real Grid Engine jobs (Debian gridengine 8.1.9, sge_qmaster + sge_execd started by
//! tests/setup/sge.sh): the test queue names integrations/sge's prolog and epilog as a site
//! installs them, and sge_shepherd runs them as the job's owner in the job's environment.
//! A job names its image with `-v LPMX_PREFETCH`; the prolog prefetches it before the script
//! starts, the script's `lpmx-job run` enters it, the epilog removes the job's staging.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::batch::{ranks_agree, set_mode};
use crate::support::{bin, blob_gets, private_copy, run, service, stderr, stdout, Env};

struct Sge {
    env: Env,
    reg: String,
    queue: String,
    pe: String,
}

fn sge() -> Option<Sge> {
    let reg = service("LPMX_TEST_REGISTRY")?;
    service("LPMX_TEST_SGE")?;
    let queue = service("LPMX_TEST_SGE_QUEUE")?;
    let pe = service("LPMX_TEST_SGE_PE")?;
    Some(Sge {
        env: Env::new(),
        reg,
        queue,
        pe,
    })
}

/// What the job carries to its prolog, script and epilog (`qsub -v NAME` passes each from
/// qsub's environment): where lpmx-job is (a site puts it on PATH instead), the test's private
/// cache and config, the plain-HTTP registry, and the hook log.
const JOB_VARS: &[&str] = &[
    "LPMX_BIN",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "LPMX_SITE_CONFIG",
    "LPMX_INSECURE_REGISTRIES",
    "LPMX_HOOK_LOG",
    "LPMX_TEST_WORK",
];

impl Sge {
    /// `qsub -sync y` under a time limit, run from the test directory, with what the job needs
    /// in its environment; `vars` are more NAME=VALUE for the job.
    fn qsub(
        &self,
        vars: &[(&str, &str)],
        args: &[&str],
        script: &Path,
        script_args: &[&str],
    ) -> Output {
        let mut c = Command::new("timeout");
        c.args(["--kill-after=10", "300", "qsub"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.env.path("home"))
            .env("SGE_ROOT", service("SGE_ROOT").unwrap())
            .env("SGE_CELL", service("SGE_CELL").unwrap())
            .env("LPMX_BIN", bin())
            .env("XDG_CACHE_HOME", self.env.path("cache"))
            .env("XDG_CONFIG_HOME", self.env.path("config"))
            .env("LPMX_SITE_CONFIG", self.env.path("site/config.yaml"))
            .env("LPMX_INSECURE_REGISTRIES", &self.reg)
            .env("LPMX_HOOK_LOG", self.hook_log())
            // tests/run.sh finds processes the tests left behind by this marker.
            .env(
                "LPMX_TEST_WORK",
                std::env::var("LPMX_TEST_WORK").unwrap_or_default(),
            )
            .current_dir(self.env.dir.path());
        // sge_shepherd appends to the output files: each job starts from none.
        for f in ["job.out", "job.err"] {
            let _ = std::fs::remove_file(self.env.path(f));
        }
        let mut v: Vec<String> = JOB_VARS.iter().map(|s| s.to_string()).collect();
        for (k, val) in vars {
            c.env(k, val);
            v.push(k.to_string());
        }
        c.args(["-sync", "y", "-q", &self.queue, "-cwd", "-S", "/bin/sh"])
            .args(["-o", &self.env.path("job.out").to_string_lossy()])
            .args(["-e", &self.env.path("job.err").to_string_lossy()])
            .args(["-v", &v.join(",")])
            .args(args)
            .arg(script)
            .args(script_args);
        run(&mut c)
    }

    fn hook_log(&self) -> PathBuf {
        self.env.path("hooks.log")
    }

    /// The job's output and error files, and the hook log.
    fn results(&self) -> (String, String, String) {
        let text = std::fs::read_to_string(self.env.path("job.out")).unwrap_or_default();
        let err = std::fs::read_to_string(self.env.path("job.err")).unwrap_or_default();
        let hooks = std::fs::read_to_string(self.hook_log()).unwrap_or_default();
        eprintln!("job output:\n{text}\njob error file:\n{err}\nhook log:\n{hooks}");
        (text, err, hooks)
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.env.write(name, &format!("#!/bin/sh\n{body}"));
        set_mode(&p, 0o755);
        p
    }
}

/// "Your job 12 (\"x\") has been submitted" from `qsub -sync y`.
fn job_id(out: &Output) -> String {
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix("Your job "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id in qsub's output: {}", stdout(out)))
        .to_string()
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {text:?}"))
}

/// The whole path of a container job through a real sge_execd: the prolog prefetches the image
/// into the job owner's cache before the script starts (one download per blob), the script's
/// `lpmx-job run` enters the image (its files, its shell) with the job's JOB_ID and TMPDIR,
/// stages its tree for the job (`stage: always`, into a `stage.dir` sge_execd does not
/// remove), and the epilog removes that staging after the job.
#[test]
fn qsub_job_runs_in_the_image_the_prolog_prefetched_and_the_epilog_cleans_up() {
    let Some(s) = sge() else { return };
    let repo_name = private_copy(&s.reg, "layers3", &s.env);
    let img = format!("{}/{repo_name}", s.reg);
    let nodetmp = s.env.path("nodetmp");
    std::fs::create_dir(&nodetmp).unwrap();
    let uid = unsafe { libc::getuid() };
    let inside = "echo \"inside keep=$(cat /data/keep.txt) fixture=$FIXTURE sh=$(readlink /bin/sh) \
                  job=$JOB_ID tmpdir=$TMPDIR task=$SGE_TASK_ID\"; echo from-container > $TMPDIR/mark";
    let script = s.script(
        "job.sh",
        &format!(
            "set -e\n\
             echo \"host job=$JOB_ID tmpdir=$TMPDIR\"\n\
             \"$LPMX_BIN\" -q pull --offline {img} && echo ready-before-start\n\
             \"$LPMX_BIN\" -v run {img} sh -c '{inside}'\n\
             echo \"mark=$(cat $TMPDIR/mark)\"\n\
             echo \"staged=$(ls {n}/lpmx-stage-{uid})\"\n",
            n = nodetmp.display()
        ),
    );
    let out = s.qsub(
        &[
            ("LPMX_PREFETCH", &img),
            ("LPMX_STAGE", "always"),
            ("LPMX_STAGE_DIR", &nodetmp.to_string_lossy()),
        ],
        &["-N", "lpmx-it"],
        &script,
        &[],
    );
    let (text, err, hooks) = s.results();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{text}\n{err}",
        stderr(&out)
    );
    let job = job_id(&out);

    // The prolog ran before the script, as the job's owner, into the job's cache.
    assert!(
        hooks.contains(&format!("job {job}]: prefetched {img} in ")),
        "{hooks}"
    );
    assert!(
        text.contains("ready-before-start\n"),
        "the image was in the cache before the script's first command: {text}\n{err}"
    );
    let blobs = blob_gets(&repo_name);
    assert_eq!(blobs.len(), 5, "4 layers and a config: {blobs:?}");
    assert!(
        blobs.values().all(|&n| n == 1),
        "the run downloaded nothing again: {blobs:?}"
    );

    // The command ran in the image, with the job's identity and its TMPDIR.
    let host = text
        .lines()
        .find(|l| l.starts_with("host "))
        .unwrap_or_else(|| panic!("{text}"));
    let tmpdir = field(host, "tmpdir");
    assert_eq!(field(host, "job"), job);
    assert!(
        tmpdir.starts_with(&format!("/tmp/{job}.")),
        "sge_execd's per-job TMPDIR: {host}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("inside "))
        .unwrap_or_else(|| panic!("the command did not run: {text}\n{err}"));
    assert_eq!(
        field(line, "keep"),
        "v2",
        "a file only the image has: {line}"
    );
    assert_eq!(field(line, "fixture"), "layers3", "the image's Env: {line}");
    assert_eq!(field(line, "sh"), "busybox", "the image's /bin/sh: {line}");
    assert_eq!(field(line, "job"), job, "JOB_ID inside: {line}");
    assert_eq!(field(line, "tmpdir"), tmpdir, "TMPDIR inside: {line}");
    assert_eq!(
        field(line, "task"),
        "undefined",
        "SGE_TASK_ID inside: {line}"
    );
    assert!(
        text.contains("mark=from-container\n"),
        "the job's TMPDIR is the host's, writable: {text}"
    );

    // Staged for this job during the job; gone after it, by the epilog.
    assert!(err.contains(&format!("staged for job {job} into")), "{err}");
    assert!(text.contains(&format!("staged=job-{job}\n")), "{text}");
    let staged = nodetmp.join(format!("lpmx-stage-{uid}/job-{job}"));
    assert!(!staged.exists(), "the epilog removed {}", staged.display());
    assert!(
        hooks.contains(&format!("removed {}", staged.display())),
        "{hooks}"
    );
    assert!(
        !err.contains("lpmx-job prolog") && !err.contains("lpmx-job epilog"),
        "{err}"
    );
}

/// A prefetch that fails (the image does not exist) must not hold the job or break the queue
/// (any prolog status but 0, 99, 100 puts the queue in error state): the job runs, the
/// failure is in its error file, and the queue takes the next job.
#[test]
fn qsub_job_runs_when_the_prolog_cannot_prefetch() {
    let Some(s) = sge() else { return };
    let img = format!("{}/lpmx/no-such-image", s.reg);
    let script = s.script("job.sh", "echo \"ran job=$JOB_ID\"\n");
    let out = s.qsub(&[("LPMX_PREFETCH", &img)], &[], &script, &[]);
    let (text, err, hooks) = s.results();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = job_id(&out);
    assert_eq!(text, format!("ran job={job}\n"));
    assert!(
        err.contains(&format!("prefetch of {img} failed")),
        "said in the job's error file: {err}"
    );
    assert!(hooks.contains("failed"), "{hooks}");
    // The queue instance is not in error state: another job runs.
    let out = s.qsub(&[], &[], &script, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (text, _, _) = s.results();
    assert_eq!(text, format!("ran job={}\n", job_id(&out)));
}

/// integrations/sge/pe-job.sh as written, in the test's parallel environment with 2 slots:
/// the host's `mpirun` starts one container per slot, and the image's Open MPI does an
/// MPI_Allreduce across the two containers.
#[test]
fn pe_job_runs_one_container_per_slot_with_the_images_mpi() {
    let Some(s) = sge() else { return };
    let Some(img) = crate::batch::mpi_image() else {
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integrations/sge/pe-job.sh");
    // Arguments after the script are the program (qsub passes them to the script).
    let out = s.qsub(
        &[("LPMX_PREFETCH", &img)],
        &["-pe", &s.pe, "2"],
        &script,
        &["/usr/local/bin/mpi-hello"],
    );
    let (text, err, hooks) = s.results();
    assert_eq!(out.status.code(), Some(0), "{}\n{err}", stderr(&out));
    let job = job_id(&out);
    assert!(
        hooks.contains(&format!("job {job}]: prefetched {img}")),
        "{hooks}"
    );
    assert!(err.contains(&format!("job {job}, 2 slots")), "{err}");
    ranks_agree(&text, 2);
}
