//! Batch integration through a real Slurm (munge + slurmctld + slurmd, started by
//! tests/setup/slurm.sh): per-task containers under `srun`, a batch script with a batch step
//! and a parallel step, jobs racing for one uncached image, a job ended by the scheduler, and
//! the prolog/epilog scripts of integrations/slurm run as slurmd runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    bin, blob_gets, manifest_gets, private_copy, run, service, stderr, stdout, Env,
};

struct Slurm {
    env: Env,
    reg: String,
    conf: String,
}

fn slurm() -> Option<Slurm> {
    let reg = service("LPMX_TEST_REGISTRY")?;
    service("LPMX_TEST_SLURM")?;
    let conf = service("SLURM_CONF")?;
    Some(Slurm {
        env: Env::new(),
        reg,
        conf,
    })
}

/// The repository root (the integration scripts live there).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Slurm {
    /// A Slurm client command (`srun`, `sbatch`, `scancel`...) under a time limit, with the
    /// test's private home and cache: Slurm exports this environment into the job, so
    /// `lpmx-job` inside sees the same cache and registry settings.
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("timeout");
        c.args(["--kill-after=10", "240", prog]);
        self.env_of(&mut c);
        c
    }

    fn env_of(&self, c: &mut Command) {
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.env.path("home"))
            .env("XDG_CONFIG_HOME", self.env.path("config"))
            .env("XDG_CACHE_HOME", self.env.path("cache"))
            .env("LPMX_SITE_CONFIG", self.env.path("site/config.yaml"))
            .env("LPMX_INSECURE_REGISTRIES", &self.reg)
            .env("SLURM_CONF", &self.conf)
            .current_dir(self.env.dir.path());
        // tests/run.sh finds processes the tests left behind by this marker.
        if let Ok(w) = std::env::var("LPMX_TEST_WORK") {
            c.env("LPMX_TEST_WORK", w);
        }
    }

    fn image(&self, name: &str) -> String {
        format!("{}/lpmx/{name}", self.reg)
    }

    /// Writes a job script (`#!/bin/sh`) into the test directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.env.write(name, &format!("#!/bin/sh\n{body}"));
        set_mode(&p, 0o755);
        p
    }

    /// Runs a job script to its end, which must succeed: (job id, the job's output).
    fn job(&self, script: &Path, out_name: &str) -> (String, String) {
        let out_file = self.env.path(out_name);
        let out = self.sbatch_wait(script, &out_file, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let job = stdout(&out).trim().split(';').next().unwrap().to_string();
        let text = read(&out_file);
        eprintln!("job output:\n{text}");
        (job, text)
    }

    /// `lpmx-job prefetch IMG`, which must succeed: MPI ranks then start on a warm cache
    /// instead of all unpacking a 250 MB image under their launcher's timeouts.
    fn prefetch(&self, img: &str) {
        let out = run(self
            .cmd(&bin().to_string_lossy())
            .args(["-q", "prefetch", img]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }

    /// `srun --mpi=MPI -n2 lpmx-job -q run RUN_ARGS... IMG mpi-hello`.
    fn srun_mpi_hello(&self, mpi: &str, run_args: &[&str], img: &str) -> Output {
        run(self
            .cmd("srun")
            .args([
                &format!("--mpi={mpi}"),
                "-n2",
                "-t",
                "3",
                "--kill-on-bad-exit=1",
            ])
            .arg(bin())
            .args(["-q", "run"])
            .args(run_args)
            .args([img, "/usr/local/bin/mpi-hello"]))
    }

    fn sbatch_wait(&self, script: &Path, out: &Path, extra: &[&str]) -> Output {
        run(self
            .cmd("sbatch")
            .args(["--wait", "--parsable", "-t", "3", "-o"])
            .arg(out)
            .args(extra)
            .arg(script))
    }
}

pub(crate) fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn wait_for_file(p: &Path, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Each task's report line, keyed by its first field.
fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    v.sort();
    v
}

/// What a task prints to prove where it runs: its rank, the image's own Env, the image's
/// shell (busybox; the host's is dash), its mount namespace, and how many of the step's `n`
/// tasks were up at once. Each task waits for the others before it reports (up to 100 s,
/// within the step's time limit: the condition decides, not a short timer on a loaded
/// machine), so the namespaces compared are alive together (a namespace's number is reused once it is
/// gone) and a step whose tasks started one after another shows up as `together` < n.
fn probe(dir: &Path, n: usize) -> String {
    format!(
        "touch {d}/up.$SLURM_PROCID; i=0; \
         while [ $(ls {d} | wc -l) -lt {n} ] && [ $i -lt 1000 ]; do sleep 0.1; i=$((i+1)); done; \
         echo \"task=$SLURM_PROCID job=$SLURM_JOB_ID fixture=$FIXTURE sh=$(readlink /bin/sh) \
         mnt=$(readlink /proc/self/ns/mnt) together=$(ls {d} | wc -l)\"",
        d = dir.display()
    )
}

fn probe_dir(s: &Slurm, name: &str) -> PathBuf {
    let d = s.env.path(name);
    std::fs::create_dir(&d).unwrap();
    d
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

fn host_mnt_ns() -> String {
    std::fs::read_link("/proc/self/ns/mnt")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn srun_runs_one_container_per_task() {
    let Some(s) = slurm() else { return };
    let img = s.image("one");
    // Cold: both tasks want the image at once; one pulls, the other waits and reuses it.
    let out = run(s
        .cmd("srun")
        .args(["-n2", "-t", "2", "--kill-on-bad-exit=1"])
        .arg(bin())
        .args([
            "-q",
            "run",
            &img,
            "sh",
            "-c",
            &probe(&probe_dir(&s, "up"), 2),
        ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let tasks = lines_with(&text, "task=");
    assert_eq!(tasks.len(), 2, "{text}");
    assert_eq!(field(tasks[0], "task"), "0");
    assert_eq!(field(tasks[1], "task"), "1");
    let host = host_mnt_ns();
    for t in &tasks {
        assert_eq!(field(t, "together"), "2", "the tasks ran at once: {t}");
        assert_eq!(field(t, "fixture"), "one", "the image's Env: {t}");
        assert_eq!(field(t, "sh"), "busybox", "the image's /bin/sh: {t}");
        assert_ne!(field(t, "mnt"), host, "a mount namespace of its own: {t}");
    }
    assert_ne!(
        field(tasks[0], "mnt"),
        field(tasks[1], "mnt"),
        "one container per task"
    );
    assert_eq!(field(tasks[0], "job"), field(tasks[1], "job"));
}

#[test]
fn sbatch_script_with_a_batch_step_and_a_parallel_step() {
    let Some(s) = slurm() else { return };
    let img = s.image("one");
    let lpmx = bin();
    let script = s.script(
        "job.sh",
        &format!(
            "#SBATCH -n 2\n#SBATCH -J lpmx-two-steps\nset -e\n\
             {b} -q run {img} sh -c 'echo \"batch fixture=$FIXTURE job=$SLURM_JOB_ID\"'\n\
             srun --kill-on-bad-exit=1 {b} -q run {img} sh -c '{p}'\n\
             echo done\n",
            b = lpmx.display(),
            p = probe(&probe_dir(&s, "up"), 2)
        ),
    );
    let (job, text) = s.job(&script, "job.out");
    assert!(
        text.contains(&format!("batch fixture=one job={job}\n")),
        "the batch step ran in the image: {text}"
    );
    let tasks = lines_with(&text, "task=");
    assert_eq!(tasks.len(), 2, "{text}");
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(field(t, "task"), i.to_string());
        assert_eq!(field(t, "job"), job);
        assert_eq!(field(t, "fixture"), "one");
        assert_eq!(field(t, "sh"), "busybox");
        assert_eq!(field(t, "together"), "2");
    }
    assert_ne!(field(tasks[0], "mnt"), field(tasks[1], "mnt"));
    assert!(text.ends_with("done\n"), "{text}");
}

#[test]
fn four_jobs_at_once_download_each_blob_once() {
    let Some(s) = slurm() else { return };
    let repo = private_copy(&s.reg, "layers3", &s.env);
    let img = format!("{}/{repo}", s.reg);
    let lpmx = bin();
    let started = s.env.path("started");
    std::fs::create_dir(&started).unwrap();
    // Each job says when it started and waits until all four have (up to 100 s, within the
    // jobs' time limit), so the four `run`s race for the uncached image for real.
    let script = s.script(
        "race.sh",
        &format!(
            "touch {st}/$SLURM_JOB_ID\n\
             i=0; while [ $(ls {st} | wc -l) -lt 4 ] && [ $i -lt 1000 ]; do sleep 0.1; i=$((i+1)); done\n\
             echo \"together=$(ls {st} | wc -l)\"\n\
             exec {b} -q run {img} sh -c 'echo \"keep=$(cat /data/keep.txt) fixture=$FIXTURE\"'\n",
            st = started.display(),
            b = lpmx.display()
        ),
    );
    let children: Vec<_> = (0..4)
        .map(|i| {
            let out = s.env.path(&format!("race-{i}.out"));
            let child = s
                .cmd("sbatch")
                .args(["--wait", "--parsable", "-n1", "-t", "3", "-o"])
                .arg(&out)
                .arg(&script)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (out, child)
        })
        .collect();
    for (out_file, child) in children {
        let out = child.wait_with_output().unwrap();
        let text = std::fs::read_to_string(&out_file).unwrap_or_default();
        assert_eq!(
            out.status.code(),
            Some(0),
            "job failed: {}\noutput:\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("together=4\n"),
            "the four jobs ran at once: {text}"
        );
        assert!(text.contains("keep=v2 fixture=layers3\n"), "{text}");
    }
    let gets = blob_gets(&repo);
    assert_eq!(
        gets.len(),
        5,
        "4 layers and a config were fetched: {gets:?}"
    );
    for (digest, n) in &gets {
        assert_eq!(*n, 1, "blob {digest} downloaded {n} times: {gets:?}");
    }
}

/// A cold step of eight tasks sends one manifest request for its tag between them, not
/// eight (Docker Hub counts each against its pull limit), and fetches each blob once.
#[test]
fn a_cold_eight_task_step_asks_for_its_tag_once() {
    let Some(s) = slurm() else { return };
    let repo = private_copy(&s.reg, "one", &s.env);
    let img = format!("{}/{repo}", s.reg);
    let out = run(s
        .cmd("srun")
        .args(["--overcommit", "-n8", "-t", "3", "--kill-on-bad-exit=1"])
        .arg(bin())
        .args(["-q", "run", &img, "true"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        manifest_gets(&repo),
        1,
        "one manifest request for 8 cold tasks"
    );
    let gets = blob_gets(&repo);
    assert_eq!(gets.len(), 2, "a layer and a config: {gets:?}");
    for (digest, n) in &gets {
        assert_eq!(*n, 1, "blob {digest} downloaded {n} times");
    }
}

#[test]
fn a_job_ended_by_the_scheduler_delivers_sigterm_inside_the_container() {
    let Some(s) = slurm() else { return };
    let img = s.image("one");
    // Warm the cache first, so the job reaches its task quickly.
    let out = run(s.cmd(&bin().to_string_lossy()).args(["-q", "pull", &img]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = s.env.dir.path();
    let inner = format!(
        "trap \"echo got TERM in \\$FIXTURE > {d}/term; exit 0\" TERM; \
         echo ready > {d}/ready; sleep 300 & wait",
        d = dir.display()
    );
    let script = s.script(
        "long.sh",
        &format!(
            "srun {b} -q run {img} sh -c '{inner}'\n",
            b = bin().display()
        ),
    );
    let out = run(s
        .cmd("sbatch")
        .args(["--parsable", "-n1", "-t", "3", "-o"])
        .arg(s.env.path("long.out"))
        .arg(&script));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = stdout(&out).trim().split(';').next().unwrap().to_string();
    let ready = wait_for_file(&dir.join("ready"), Duration::from_secs(60));
    if !ready {
        let _ = run(s.cmd("scancel").arg(&job));
        panic!(
            "the task never started; job output:\n{}",
            std::fs::read_to_string(s.env.path("long.out")).unwrap_or_default()
        );
    }
    // scancel ends a job as its time limit does: SIGCONT and SIGTERM to every step's tasks,
    // then SIGKILL after KillWait (5 s in the test slurm.conf).
    let out = run(s.cmd("scancel").arg(&job));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        wait_for_file(&dir.join("term"), Duration::from_secs(20)),
        "the task in the container saw no SIGTERM; job output:\n{}",
        std::fs::read_to_string(s.env.path("long.out")).unwrap_or_default()
    );
    assert_eq!(read(&dir.join("term")), "got TERM in one\n");
    // The job leaves the queue.
    let t0 = Instant::now();
    loop {
        let out = s
            .cmd("squeue")
            .args(["-h", "-j", &job, "-o", "%T"])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state.is_empty() || state == "CANCELLED" || state == "COMPLETED" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "job {job} still {state}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `stage: always` (the cache here is on a local disk, so `auto` would not stage): the two
/// tasks of a step on this node share one node-local copy of the tree, made by one of them,
/// the image behaves the same from it (hard links, symbolic links, whiteouts), and the
/// epilog removes it after the job.
#[test]
fn staging_copies_the_tree_once_per_node_per_job_and_the_epilog_removes_it() {
    let Some(s) = slurm() else { return };
    let img = s.image("layers3");
    let out = run(s.cmd(&bin().to_string_lossy()).args(["-q", "pull", &img]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let nodetmp = s.env.path("nodetmp");
    std::fs::create_dir(&nodetmp).unwrap();
    let up = probe_dir(&s, "up");
    let check = "test $(stat -c %i /data/hard1) = $(stat -c %i /data/hard2) && echo same-inode; \
                 test -e /etc/gone.txt || echo whiteout-applied; echo keep=$(cat /data/rel); \
                 cat /proc/self/mountinfo";
    let script = s.script(
        "stage.sh",
        &format!(
            "#SBATCH -n 2\nset -e\n\
             srun -n2 {b} -v run {img} sh -c '{p}; {check}' 2>{d}/stage.err\n\
             echo staged: $(ls $TMPDIR/lpmx-stage-$(id -u)/job-$SLURM_JOB_ID | grep -v lock)\n",
            b = bin().display(),
            p = probe(&up, 2),
            d = s.env.dir.path().display()
        ),
    );
    let out_file = s.env.path("stage.out");
    let mut c = s.cmd("sbatch");
    c.env("TMPDIR", &nodetmp).env("LPMX_STAGE", "always");
    let out = run(c
        .args(["--wait", "--parsable", "-t", "3", "-o"])
        .arg(&out_file)
        .arg(&script));
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let err = std::fs::read_to_string(s.env.path("stage.err")).unwrap_or_default();
    eprintln!("job output:\n{text}\ntasks' stderr:\n{err}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = stdout(&out).trim().split(';').next().unwrap().to_string();
    assert_eq!(text.matches("same-inode").count(), 2, "{text}");
    assert_eq!(text.matches("whiteout-applied").count(), 2, "{text}");
    assert_eq!(text.matches("keep=v2").count(), 2, "{text}");
    assert_eq!(
        err.matches(&format!("staged for job {job} into")).count(),
        1,
        "one copy per node per job: {err}"
    );
    assert_eq!(
        err.matches("using the staged copy").count(),
        1,
        "the other task reused it: {err}"
    );
    let uid = unsafe { libc::getuid() };
    let staged = nodetmp.join(format!("lpmx-stage-{uid}/job-{job}"));
    assert!(staged.is_dir(), "staged under the job's TMPDIR");
    assert!(
        text.contains(&format!("lpmx-stage-{uid}/job-{job}/")),
        "the containers' root is the staged copy (mountinfo): {text}"
    );
    assert!(text.contains("staged: "), "{text}");
    // The cache's own tree was not what the tasks ran from, and it is untouched.
    let out = run(s.env.cmd().args(["cache", "verify"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // The epilog (as slurmd would call it on this node) removes the job's staging.
    let mut c = Command::new(repo().join("integrations/slurm/epilog.sh"));
    s.env_of(&mut c);
    c.env("SLURM_JOB_ID", &job)
        .env("LPMX_BIN", bin())
        .env("TMPDIR", &nodetmp)
        .env("LPMX_HOOK_LOG", s.env.path("hooks.log"));
    let out = run(&mut c);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !staged.exists(),
        "{}",
        std::fs::read_to_string(s.env.path("hooks.log")).unwrap_or_default()
    );
}

/// The prolog and epilog of integrations/slurm, run as slurmd runs them (environment with
/// SLURM_JOB_ID, SLURM_JOB_USER, SLURM_JOB_UID and nothing of the job's), for a real job that
/// names its image in its comment. As an ordinary user they act as that user.
#[test]
fn slurm_prolog_prefetches_and_epilog_cleans_up() {
    let Some(s) = slurm() else { return };
    let repo_name = private_copy(&s.reg, "one", &s.env);
    let img = format!("{}/{repo_name}", s.reg);
    // A held job, so it exists in the controller with its comment but never runs.
    let out = run(s.cmd("sbatch").args([
        "--parsable",
        "--hold",
        "-t",
        "1",
        &format!("--comment=lpmx:{img}"),
        "--wrap",
        "true",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = stdout(&out).trim().split(';').next().unwrap().to_string();
    let hook_log = s.env.path("hooks.log");
    let tmpdir = s.env.path("nodetmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let user = std::env::var("USER").unwrap_or_else(|_| "lpmxtest".into());
    let hook = |name: &str, job: &str| {
        let mut c = Command::new(repo().join("integrations/slurm").join(name));
        s.env_of(&mut c);
        c.env("SLURM_JOB_ID", job)
            .env("SLURM_JOB_USER", &user)
            .env("SLURM_JOB_UID", unsafe { libc::getuid() }.to_string())
            .env("SLURMD_NODENAME", lpmx_host())
            .env("LPMX_BIN", bin())
            .env("LPMX_HOOK_LOG", &hook_log)
            .env("TMPDIR", &tmpdir);
        let out = run(&mut c);
        assert_eq!(out.status.code(), Some(0), "{name} never fails a job");
        assert!(stdout(&out).is_empty() && stderr(&out).is_empty(), "quiet");
        std::fs::read_to_string(&hook_log).unwrap_or_default()
    };

    let log = hook("prolog.sh", &job);
    assert!(log.contains(&format!("prefetched {img}")), "{log}");
    let images = crate::support::json(&run(s.env.cmd().args(["images", "--json"])));
    assert_eq!(
        images.as_array().unwrap().len(),
        1,
        "in the job user's cache"
    );
    let blobs = blob_gets(&repo_name);
    assert_eq!(blobs.len(), 2, "a layer and a config: {blobs:?}");
    assert!(blobs.values().all(|&n| n == 1), "{blobs:?}");
    // The tree is assembled too: a run right after needs nothing more.
    let trees = std::fs::read_dir(s.env.path("cache/lpmx/trees-v1"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(trees >= 1, "the prefetch assembled the image's tree");
    // Warm: the second prolog (another node, another job of the same user) asks nothing.
    let before = manifest_gets(&repo_name);
    hook("prolog.sh", &job);
    assert_eq!(
        manifest_gets(&repo_name),
        before,
        "warm prefetch: no network"
    );
    assert_eq!(blob_gets(&repo_name), blobs);

    // The epilog removes this job's staging on the node, read-only trees included, and
    // leaves other jobs' alone.
    let uid = unsafe { libc::getuid() };
    let mine = tmpdir.join(format!("lpmx-stage-{uid}/job-{job}"));
    let other = tmpdir.join(format!("lpmx-stage-{uid}/job-{job}9"));
    for d in [&mine, &other] {
        std::fs::create_dir_all(d.join("tree/bin")).unwrap();
        std::fs::write(d.join("tree/bin/sh"), "x").unwrap();
        set_mode(&d.join("tree/bin"), 0o555);
        set_mode(&d.join("tree"), 0o555);
    }
    let log = hook("epilog.sh", &job);
    assert!(!mine.exists(), "the job's staging is gone: {log}");
    assert!(other.join("tree/bin/sh").exists(), "another job's stays");
    assert!(
        log.contains(&format!("removed {}", mine.display())),
        "{log}"
    );
    let _ = run(s.cmd("scancel").arg(&job));

    // A job naming an image that cannot be pulled: the prolog logs it and still exits 0.
    let out = run(s.cmd("sbatch").args([
        "--parsable",
        "--hold",
        "-t",
        "1",
        &format!("--comment=lpmx:{}/lpmx/no-such-image", s.reg),
        "--wrap",
        "true",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bad = stdout(&out).trim().split(';').next().unwrap().to_string();
    let log = hook("prolog.sh", &bad);
    assert!(
        log.contains("failed") && log.contains("no-such-image"),
        "{log}"
    );
    let _ = run(s.cmd("scancel").arg(&bad));
}

fn lpmx_host() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    full.trim().split('.').next().unwrap().to_string()
}

/// A hook run with nothing but what its scheduler gives it, plus the test's private home and
/// cache (the hooks run as this ordinary user here, as root at a site).
fn hook_cmd(env: &Env, reg: &str, path: &str) -> Command {
    let mut c = Command::new(repo().join(path));
    c.env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                env.path("bin").display()
            ),
        )
        .env("HOME", env.path("home"))
        .env("XDG_CONFIG_HOME", env.path("config"))
        .env("XDG_CACHE_HOME", env.path("cache"))
        .env("LPMX_SITE_CONFIG", env.path("site/config.yaml"))
        .env("LPMX_INSECURE_REGISTRIES", reg)
        .env("LPMX_BIN", bin())
        .current_dir(env.dir.path());
    c
}

fn image_count(env: &Env) -> usize {
    let out = run(env.cmd().args(["images", "--json"]));
    crate::support::json(&out).as_array().unwrap().len()
}

/// A staged tree as `run` leaves it (read-only directories), for a hook to remove.
fn fake_staging(base: &Path, job: &str) -> PathBuf {
    let uid = unsafe { libc::getuid() };
    let d = base.join(format!("lpmx-stage-{uid}/job-{job}"));
    std::fs::create_dir_all(d.join("abc/root/bin")).unwrap();
    std::fs::write(d.join("abc/root/bin/sh"), "x").unwrap();
    set_mode(&d.join("abc/root/bin"), 0o555);
    d
}

/// OpenPBS's contract: pbs_mom runs `prologue JOBID USER GROUP` and `epilogue JOBID USER
/// GROUP JOBNAME SESSION REQ USED QUEUE ACCOUNT EXIT` with no job environment; the images
/// come from the job's Variable_List as `qstat -f` prints it (long lines wrapped with a tab).
#[test]
fn pbs_prologue_and_epilogue_follow_the_pbs_mom_contract() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let job = "4242.pbs-server";
    let img = format!("{reg}/lpmx/one");
    // A stand-in for qstat (no PBS is packaged here), printing the real format.
    let var = format!("LPMX_PREFETCH={img}");
    let (head, tail) = var.split_at(9);
    let qstat = env.write(
        "bin/qstat",
        &format!(
            "#!/bin/sh\n[ \"$1\" = -f ] && [ \"$2\" = {job} ] || {{ echo \"qstat: Unknown Job Id $2\" >&2; exit 153; }}\n\
             printf 'Job Id: {job}\\n    Job_Name = sim\\n    Job_Owner = u@h\\n    Variable_List = PBS_O_HOME=/home/u,PBS_O_LANG=C.UTF-8,PBS_O_PATH=/usr/bin:/bin,{head}\\n\\t{tail},PBS_O_WORKDIR=/home/u\\n    comment = Job run\\n'\n"
        ),
    );
    set_mode(&qstat, 0o755);
    let user = std::env::var("USER").unwrap_or_else(|_| "lpmxtest".into());
    let out = run(hook_cmd(&env, &reg, "integrations/pbs/prologue").args([job, &user, &user]));
    assert_eq!(out.status.code(), Some(0), "0: the job runs");
    assert!(
        stdout(&out).is_empty() && stderr(&out).is_empty(),
        "quiet in the job's files"
    );
    assert_eq!(
        image_count(&env),
        1,
        "prefetched {img} from the Variable_List"
    );

    let nodetmp = env.path("nodetmp");
    let mine = fake_staging(&nodetmp, job);
    let other = fake_staging(&nodetmp, "4243.pbs-server");
    let out = run(hook_cmd(&env, &reg, "integrations/pbs/epilogue")
        .env("LPMX_STAGE_DIRS", &nodetmp)
        .args([
            job,
            &user,
            &user,
            "sim",
            "12345",
            "ncpus=1",
            "cput=00:00:01",
            "workq",
            "",
            "0",
        ]));
    assert_eq!(out.status.code(), Some(0));
    assert!(!mine.exists(), "the job's staging is gone");
    assert!(other.exists(), "another job's stays");

    // An image that cannot be pulled: said in the job's error file, and still exit 0.
    let bad = env.write(
        "bin/qstat",
        &format!(
            "#!/bin/sh\nprintf 'Job Id: {job}\\n    Variable_List = LPMX_PREFETCH={reg}/lpmx/no-such-image,X=1\\n'\n"
        ),
    );
    set_mode(&bad, 0o755);
    let out = run(hook_cmd(&env, &reg, "integrations/pbs/prologue").args([job, &user, &user]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "a failed prefetch never requeues the job"
    );
    assert!(stderr(&out).contains("no-such-image"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&nodetmp);
}

/// Grid Engine's contract: sge_shepherd runs the queue's prolog and epilog as the job's owner
/// in the job's environment (JOB_ID, SGE_TASK_ID, TMPDIR, the job's -v variables). Between
/// them, a task of the job runs with `stage: always` and stages under the job's TMPDIR.
#[test]
fn sge_prolog_prefetches_the_job_stages_and_the_epilog_cleans_up() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let img = format!("{reg}/lpmx/layers3");
    let tmpdir = env.path("sge-tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let sge = |c: &mut Command| {
        c.env("JOB_ID", "31")
            .env("SGE_TASK_ID", "undefined")
            .env("TMPDIR", &tmpdir)
            .env("LPMX_PREFETCH", &img);
    };
    let mut c = hook_cmd(&env, &reg, "integrations/sge/prolog.sh");
    sge(&mut c);
    let out = run(&mut c);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert_eq!(image_count(&env), 1);

    let mut c = env.cmd();
    sge(&mut c);
    let out = run(c
        .env("LPMX_STAGE", "always")
        .args(["-v", "run", &img, "cat", "/data/keep.txt"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "v2\n");
    assert!(
        stderr(&out).contains("staged for job 31"),
        "{}",
        stderr(&out)
    );
    let uid = unsafe { libc::getuid() };
    let staged = tmpdir.join(format!("lpmx-stage-{uid}/job-31"));
    assert!(staged.is_dir());

    let mut c = hook_cmd(&env, &reg, "integrations/sge/epilog.sh");
    sge(&mut c);
    let out = run(&mut c);
    assert_eq!(out.status.code(), Some(0));
    assert!(!staged.exists(), "{}", stderr(&out));
}

/// The MPI image of tests/setup/slurm.sh (Debian bookworm, Open MPI 4.1, an allreduce
/// program), or None to skip (CI requires it).
pub(crate) fn mpi_image() -> Option<String> {
    built_image("LPMX_TEST_MPI_IMAGE")
}

/// An MPI image tests/run.sh built with mmdebstrap. Its absence (no Debian mirror) fails the
/// test, as the scheduler's own absence does under CI, unless LPMX_TEST_ALLOW_SKIP=mpi.
fn built_image(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            crate::support::skip(
                "mpi",
                &format!(
                    "{var} is not set: tests/run.sh could not build the MPI image (mmdebstrap)"
                ),
            );
            None
        }
    }
}

pub(crate) fn ranks_agree(text: &str, n: usize) {
    let sum = n * (n + 1) / 2;
    let mut lines = lines_with(text, "rank=");
    lines.sort_by_key(|l| field(l, "rank").parse::<usize>().unwrap());
    assert_eq!(lines.len(), n, "{text}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("rank={i} size={n} sum={sum}"), "{text}");
    }
}

/// `srun --mpi=pmix -n2 lpmx-job run IMG prog`: each rank in its own container, the image's
/// own Open MPI wired up by slurmd's PMIx server, an MPI_Allreduce across the containers,
/// with nothing bound by the user.
#[test]
fn mpi_allreduce_in_the_image_under_srun_pmix() {
    let Some(s) = slurm() else { return };
    let Some(img) = mpi_image() else { return };
    let out = s.srun_mpi_hello("pmix", &[], &img);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    ranks_agree(&stdout(&out), 2);
    // One container per task cannot use CMA between tasks: `run` turns it off for Open MPI
    // (environ::TASK_DEFAULTS), which would otherwise warn.
    assert!(!stderr(&out).contains("CMA"), "{}", stderr(&out));
    // PMIx's server directory lies under slurmd's spool (outside /tmp in the test cluster,
    // as on real nodes): `run` binds it, or PMIx complains that its store is unreachable.
    assert!(
        !stderr(&out).contains("PMIX ERROR"),
        "PMIx reached everything it needs: {}",
        stderr(&out)
    );
}

/// `mpirun -np 2 lpmx-job run IMG prog` from the host, inside a Slurm allocation: the host's
/// mpirun (same Open MPI 4.1 as the image's) starts one container per rank.
#[test]
fn mpi_allreduce_under_the_hosts_mpirun_in_a_job() {
    let Some(s) = slurm() else { return };
    let Some(img) = mpi_image() else { return };
    s.prefetch(&img);
    let script = s.script(
        "mpirun.sh",
        &format!(
            "#SBATCH -n 2\nmpirun -np 2 {} -q run {img} /usr/local/bin/mpi-hello\n",
            bin().display()
        ),
    );
    let out_file = s.env.path("mpirun.out");
    let out = s.sbatch_wait(&script, &out_file, &[]);
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{}\n{text}", stderr(&out));
    ranks_agree(&text, 2);
}

/// The test cluster's slurm.conf installs integrations/slurm's prolog and epilog as a site
/// would (`Prolog=`, `Epilog=`, `PrologFlags=Alloc`): slurmd runs them as root. A job naming
/// its image in its comment finds it prefetched, as the job's user, into that user's own
/// cache, before its script starts.
#[test]
fn slurmd_runs_the_prolog_as_root_and_prefetches_as_the_job_user() {
    let Some(s) = slurm() else { return };
    let repo_name = private_copy(&s.reg, "one", &s.env);
    let img = format!("{}/{repo_name}", s.reg);
    // The prolog prefetches into the user's default cache (~/.cache/lpmx of the real home),
    // so the job looks there, offline: the image is there before the script runs.
    let home = PathBuf::from(std::env::var("HOME").expect("HOME"));
    let user_cache = home.join(".cache/lpmx");
    // An earlier run's blobs there would make the prolog's downloads vanish from the log.
    let _ = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&user_cache)
        .status();
    let script = s.script(
        "prolog-job.sh",
        &format!(
            "{b} --cache {c} -q pull --offline {img} && echo ready-before-start\n",
            b = bin().display(),
            c = user_cache.display()
        ),
    );
    let out_file = s.env.path("prolog-job.out");
    let out = s.sbatch_wait(&script, &out_file, &[&format!("--comment=lpmx:{img}")]);
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let log = PathBuf::from(service("LPMX_TEST_LOGS").unwrap()).join("slurm-hooks.log");
    let hooks = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\njob output: {text}\nhooks: {hooks}",
        stderr(&out)
    );
    assert!(
        text.contains("ready-before-start"),
        "{text}\nhooks: {hooks}"
    );
    assert!(hooks.contains(&format!("prefetched {img}")), "{hooks}");
    let blobs = blob_gets(&repo_name);
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    assert!(blobs.values().all(|&n| n == 1), "{blobs:?}");
    // Written as the user (runuser), not as root.
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(&user_cache).unwrap().uid();
    assert_eq!(
        owner,
        unsafe { libc::getuid() },
        "the user's cache stays the user's"
    );
}

/// Host-command bridging inside a real job: the container asks the host's Slurm about its
/// own job, starts a nested step and submits another job.
#[test]
fn bridged_slurm_commands_work_inside_a_job() {
    let Some(s) = slurm() else { return };
    let img = s.image("one");
    let inner_out = s.env.path("inner.out");
    // Run by the image's busybox sh; squeue, srun and sbatch reach the host through the bridge.
    // `-w "$PWD"`: the image's WorkingDir is `/`, which the host commands could not run in.
    let inside = s.env.write(
        "inside.sh",
        &format!(
            "echo \"queued=$(squeue -h -j $SLURM_JOB_ID -o %i)\"\n\
             srun -n1 sh -c 'echo \"step=$SLURM_STEP_ID job=$SLURM_JOB_ID\"'\n\
             echo \"step-status=$?\"\n\
             jid=$(sbatch --parsable -t 1 -o {out} --wrap 'echo inner ran')\n\
             echo \"submitted=$jid\"\n\
             long=$(sbatch --parsable -t 2 -o /dev/null --wrap 'sleep 120')\n\
             scancel $long\n\
             echo \"cancelled=$long status=$?\"\n\
             squeue -h -j 999999 2>/dev/null\n\
             echo \"failing-status=$?\"\n",
            out = inner_out.display()
        ),
    );
    // The bridged names come from the site configuration's set, not from flags.
    s.env
        .write("site/config.yaml", "bridge:\n  commands: [\"@slurm\"]\n");
    let script = s.script(
        "bridge.sh",
        &format!(
            "#SBATCH -n 1\n{b} -q run -w \"$PWD\" {img} sh {inside}\n",
            b = bin().display(),
            inside = inside.display()
        ),
    );
    let (job, text) = s.job(&script, "bridge.out");
    assert!(
        text.contains(&format!("queued={job}\n")),
        "squeue sees the job: {text}"
    );
    assert!(
        text.contains(&format!("job={job}\n")) && text.contains("step-status=0"),
        "a nested step ran: {text}"
    );
    let submitted = text
        .lines()
        .find_map(|l| l.strip_prefix("submitted="))
        .unwrap_or("");
    assert!(
        submitted.trim().parse::<u64>().is_ok(),
        "sbatch submitted a job: {text}"
    );
    assert!(
        wait_for_file(&inner_out, Duration::from_secs(60)),
        "the submitted job ran"
    );
    let t0 = Instant::now();
    while !read(&inner_out).contains("inner ran") && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(read(&inner_out), "inner ran\n");
    // scancel from inside cancelled the other job, as the controller records it.
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("cancelled="))
        .unwrap_or("");
    let (long, status) = line.split_once(' ').unwrap_or(("", ""));
    assert_eq!(status, "status=0", "scancel ran: {text}");
    let out = run(s.cmd("scontrol").args(["show", "job", long]));
    assert!(
        stdout(&out).contains("JobState=CANCELLED"),
        "job {long} cancelled: {}",
        stdout(&out)
    );
    // A host command's failure comes back as its own status (squeue: 1 for an unknown job).
    assert!(text.contains("failing-status=1"), "{text}");
}

/// The MPICH image of tests/setup/slurm.sh (Debian bookworm, MPICH 4.0, the same allreduce
/// program), or None to skip (CI requires it).
fn mpich_image() -> Option<String> {
    built_image("LPMX_TEST_MPICH_IMAGE")
}

/// The libraries among `names` the loader initialised, as paths, from `LD_DEBUG=libs`
/// output.
fn loaded_libs<'a>(stderr: &'a str, names: &[&str]) -> Vec<&'a str> {
    stderr
        .lines()
        .filter_map(|l| l.split("calling init: ").nth(1))
        .filter(|p| names.iter().any(|n| p.contains(n)))
        .collect()
}

/// `srun --mpi=pmi2`: slurmd's PMI2 server wires up the image's own MPICH, one container per
/// rank; then `--mpi host` makes the same program use the host's MPICH (bound at
/// /.lpmx/mpi), still wired by PMI2 across the containers.
#[test]
fn mpich_allreduce_under_srun_pmi2_with_the_images_and_the_hosts_library() {
    let Some(s) = slurm() else { return };
    let Some(img) = mpich_image() else { return };
    s.prefetch(&img);
    for (mode, host) in [("image", false), ("host", true)] {
        let out = s.srun_mpi_hello("pmi2", &["--mpi", mode, "-e", "LD_DEBUG=libs"], &img);
        assert_eq!(out.status.code(), Some(0), "--mpi {mode}: {}", stderr(&out));
        ranks_agree(&stdout(&out), 2);
        let err = stderr(&out);
        let loaded = loaded_libs(&err, &["libmpich.so"]);
        assert_eq!(
            loaded.len(),
            2,
            "--mpi {mode}: one libmpich per rank: {loaded:?}"
        );
        assert!(
            loaded.iter().all(|p| p.starts_with("/.lpmx/mpi/") == host),
            "--mpi {mode}: libmpich from the {}: {loaded:?}",
            if host { "host (/.lpmx/mpi)" } else { "image" }
        );
    }
}

/// `--mpi host` refuses what cannot work, naming both sides: the host's Open MPI for an
/// MPICH image, the host's MPICH for an Open MPI image, and any host MPI for an image
/// without MPI. `doctor` says what would be injected.
#[test]
fn host_mpi_of_another_abi_is_refused_and_doctor_shows_the_injection() {
    let Some(s) = slurm() else { return };
    let (Some(mpich), Some(ompi)) = (mpich_image(), mpi_image()) else {
        return;
    };
    let lib = |n: &str| format!("/usr/lib/x86_64-linux-gnu/{n}");
    let cases = [
        (
            &mpich,
            lib("libmpi.so.40"),
            "Open MPI 3.x/4.x",
            "the MPICH ABI",
        ),
        (
            &ompi,
            lib("libmpich.so.12"),
            "the MPICH ABI",
            "Open MPI 3.x/4.x",
        ),
    ];
    for (img, host_lib, host_abi, image_abi) in cases {
        s.env.write(
            "config/lpmx/config.yaml",
            &format!("mpi:\n  host:\n    libs: [{host_lib}]\n"),
        );
        let out = run(s
            .cmd(&bin().to_string_lossy())
            .args(["-q", "run", "--mpi", "host", img, "true"]));
        assert_eq!(out.status.code(), Some(125), "{img}");
        let err = stderr(&out);
        assert!(
            err.contains("ABI mismatch")
                && err.contains(&format!("host's MPI is {host_abi}"))
                && err.contains(&format!(" at {host_lib} but"))
                && err.contains(&format!("built against {image_abi}")),
            "{err}"
        );
    }
    std::fs::remove_file(s.env.path("config/lpmx/config.yaml")).unwrap();
    let out = run(s.cmd(&bin().to_string_lossy()).args([
        "-q",
        "run",
        "--mpi",
        "host",
        &s.image("one"),
        "true",
    ]));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("the image has no MPI library"),
        "{}",
        stderr(&out)
    );
    let out = run(s.cmd(&bin().to_string_lossy()).args(["doctor", "--json"]));
    let report = crate::support::json(&out);
    let mpi: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "MPI host")
        .map(|c| c["detail"].as_str().unwrap().to_string())
        .collect();
    assert!(
        mpi.iter()
            .any(|d| d.contains("the MPICH ABI") && d.contains("libmpich.so.12")),
        "{mpi:?}"
    );
    assert!(
        mpi.iter().any(|d| d.contains("libopen-pal.so.40")),
        "{mpi:?}"
    );
}

/// `cleanup --job ID` with no `--dir` also searches the configured `stage.dir` (from a config
/// file or LPMX_STAGE_DIR), where `run` staged: an epilog needs no more than the job id. A
/// broken configuration still cleans the default places, and says so.
#[test]
fn cleanup_searches_the_configured_stage_dir() {
    let env = Env::new();
    let base = env.path("node-local");
    let staged = fake_staging(&base, "77");
    env.write(
        "config/lpmx/config.yaml",
        &format!("stage:\n  dir: {}\n", base.display()),
    );
    let out = run(env.cmd().args(["-v", "cleanup", "--job", "77"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!staged.exists(), "{}", stderr(&out));

    let other = env.path("env-dir");
    let staged = fake_staging(&other, "78");
    let out = run(env
        .cmd()
        .env("LPMX_STAGE_DIR", &other)
        .args(["cleanup", "--job", "78"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(!staged.exists());

    env.write("config/lpmx/config.yaml", "stage: [oops\n");
    let tmpdir = env.path("tmpdir");
    let staged = fake_staging(&tmpdir, "79");
    let out = run(env
        .cmd()
        .env("TMPDIR", &tmpdir)
        .args(["cleanup", "--job", "79"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(!staged.exists());
    assert!(
        stderr(&out).contains("configuration unreadable"),
        "{}",
        stderr(&out)
    );
}

/// `--mpi host` with Open MPI: the host's Open MPI 4.1 (the same Debian build as the image's,
/// so the ABI matches) replaces the image's, with its component directory bound through
/// `mpi.host.binds`; `srun --mpi=pmix` wires the ranks up as before.
#[test]
fn host_open_mpi_replaces_the_images_under_srun_pmix() {
    let Some(s) = slurm() else { return };
    let Some(img) = mpi_image() else { return };
    s.prefetch(&img);
    s.env.write(
        "config/lpmx/config.yaml",
        "mpi:\n  host:\n    libs: [/usr/lib/x86_64-linux-gnu/libmpi.so.40]\n    \
         binds: [/usr/lib/x86_64-linux-gnu/openmpi]\n",
    );
    let out = s.srun_mpi_hello("pmix", &["--mpi", "host", "-e", "LD_DEBUG=libs"], &img);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    ranks_agree(&stdout(&out), 2);
    let err = stderr(&out);
    let loaded = loaded_libs(&err, &["libmpi.so.40", "libopen-pal.so.40"]);
    assert_eq!(
        loaded.len(),
        4,
        "libmpi and libopen-pal in each rank: {loaded:?}"
    );
    assert!(
        loaded.iter().all(|p| p.starts_with("/.lpmx/mpi/")),
        "from the host's: {loaded:?}"
    );
}
