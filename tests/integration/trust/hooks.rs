//! Root-run hooks, attacked (issue 11, D1, D8, D10): the attacker owns staging that root's
//! `cleanup` removes and swaps it for symbolic links while it does; the attacker squats the
//! victim's staging directory; a job's image list holds glob patterns the prolog expands.
//! Root runs the real `lpmx-job` and the real scripts of integrations/ (tests/setup/as-root.sh).

use std::io::BufRead;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The attacker's swapper: makes `JOBDIR` with N directories `dI` (mode 6077, a file in each:
/// root's old cleanup had to chmod each before listing it) and N symbolic links `lI` to the
/// targets given, prints `ready`, then exchanges every `dI` with its `lI` (renameat2
/// RENAME_EXCHANGE) in a tight loop until nothing is left to swap or SECONDS pass.
const SWAPPER: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: swapper JOBDIR N SECONDS TARGET...\n"); return 2; }
    const char *job = argv[1];
    int n = atoi(argv[2]), secs = atoi(argv[3]), ntargets = argc - 4;
    int flash = getenv("FLASH") != NULL;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", job);
    char *slash = strrchr(buf, '/');
    *slash = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) { perror(buf); return 1; }
    chmod(buf, 0755); /* so the victim's test can see what is left */
    if (mkdir(job, 0755) != 0) { perror(job); return 1; }
    int dfd = open(job, O_PATH | O_DIRECTORY);
    char a[32], b[32];
    for (int i = 0; i < n; i++) {
        snprintf(a, sizeof a, "d%d", i);
        /* named as root's files: through a link, the old cleanup unlinked root's */
        snprintf(b, sizeof b, "d%d/%s", i, i % 2 ? "secret" : "id");
        if (mkdirat(dfd, a, 0755) != 0) { perror(a); return 1; }
        int f = openat(dfd, b, O_CREAT | O_WRONLY, 0644);
        if (f >= 0) close(f);
        if (fchmodat(dfd, a, 06077, 0) != 0) { perror(a); return 1; }
        snprintf(b, sizeof b, "l%d", i);
        if (symlinkat(argv[4 + i % ntargets], dfd, b) != 0) { perror(b); return 1; }
    }
    printf("ready\n");
    fflush(stdout);
    time_t end = time(NULL) + secs;
    long swaps = 0;
    while (time(NULL) < end) {
        int ok = 0;
        for (int i = 0; i < n; i++) {
            snprintf(a, sizeof a, "d%d", i);
            snprintf(b, sizeof b, "l%d", i);
            if (syscall(SYS_renameat2, dfd, a, dfd, b, RENAME_EXCHANGE) == 0) {
                ok++;
                /* flash: the link stands in for the directory only for a moment */
                if (flash) syscall(SYS_renameat2, dfd, a, dfd, b, RENAME_EXCHANGE);
            }
        }
        swaps += ok;
        if (ok == 0) break; /* emptied or removed: nothing left to swap */
    }
    fprintf(stderr, "swaps=%ld\n", swaps);
    return 0;
}
"#;

/// A directory every user can read, for programs the attacker runs; removed on drop.
fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("lpmx-it-shared.")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Compiles the swapper with `cc` into `dir`; None (the test skipped) without a compiler.
fn build_swapper(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("swapper.c");
    std::fs::write(&src, SWAPPER).unwrap();
    let exe = dir.join("swapper");
    let out = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(exe),
        Ok(o) => panic!("cc failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("skipped: no C compiler ({e})");
            None
        }
    }
}

fn attacker_uid() -> u32 {
    let out = run(as_attacker("id").unwrap().arg("-u"));
    stdout(&out).trim().parse().unwrap()
}

/// Removes what the attacker left (as the attacker: it is theirs, in a sticky /tmp).
fn attacker_rm(path: &str) {
    let _ = run(as_attacker("/bin/sh").unwrap().args([
        "-c",
        "chmod -R u+rwx -- \"$1\" 2>/dev/null; rm -rf -- \"$1\"",
        "sh",
        path,
    ]));
}

/// Root's epilog `cleanup --job ID` (default bases, as slurmd or pbs_mom run it).
fn root_cleanup(job: &str, dirs: &[&str]) -> std::process::Output {
    let mut c = as_root(&[], &bin()).unwrap();
    c.args(["-v", "cleanup", "--job", job]);
    for d in dirs {
        c.args(["--dir", d]);
    }
    run(&mut c)
}

/// D1 as a race: the attacker's staging holds 200 directories of mode 6077 that root's
/// cleanup has to make writable before it can empty them, and the attacker exchanges each
/// with a symbolic link to root's files (`id`, `dir/`, and the directory holding `secret`)
/// as fast as it can, while root's cleanup runs, 50 times. Before the fix root chmod-ed,
/// listed and unlinked by path, and these links turned `id` setuid and world-writable,
/// `dir/` 6777, and deleted `secret`. Now root acts as the attacker, by descriptor: root's
/// files stay as they were, and the attacker's staging still goes.
#[test]
fn root_cleanup_under_a_symlink_swapping_race_touches_nothing_of_roots() {
    let _env = Env::new();
    let (Some(_), Some(targets)) = (attacker(), service("LPMX_TEST_ROOT_TARGETS")) else {
        return;
    };
    if as_root(&[], &bin()).is_none() {
        return;
    }
    assert_eq!(root_targets_intact(), Some(Ok(())), "intact before");
    let tools = shared_dir();
    let Some(swapper) = build_swapper(tools.path()) else {
        return;
    };
    let user_dir = format!("/tmp/lpmx-stage-{}", attacker_uid());
    let link_to = [
        format!("{targets}/id"),
        format!("{targets}/dir"),
        targets.clone(),
    ];
    let (rounds, limit) = (50, Duration::from_secs(150));
    let t0 = Instant::now();
    let (mut done, mut removed, mut failed, mut swaps) = (0, 0, 0, 0u64);
    for round in 0..rounds {
        let job = format!("race{}r{round}", std::process::id());
        let jobdir = format!("{user_dir}/job-{job}");
        // Two ways to swap, in turn: each link stays until the next pass (half the time a
        // link), or flashes in and out (the old cleanup's lstat then mostly saw a
        // directory and did not stop, and its chmod by path now and then saw the link).
        let mode = if round % 2 == 0 {
            "FLASH=1"
        } else {
            "TOGGLE=1"
        };
        let mut sw = as_attacker("/usr/bin/env").unwrap();
        sw.arg(mode)
            .arg(&swapper)
            .args([jobdir.as_str(), "200", "5"])
            .args(&link_to)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = sw.spawn().expect("swapper");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "round {round}: the swapper started");
        let out = root_cleanup(&job, &[]);
        let sw_out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&sw_out.stderr);
        swaps += said
            .trim()
            .strip_prefix("swaps=")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        // Checked after every round: one damage is the attack succeeding.
        assert_eq!(
            root_targets_intact(),
            Some(Ok(())),
            "round {round}: root's files changed by root's cleanup of {jobdir}: {}",
            stderr(&out)
        );
        done += 1;
        let gone = !Path::new(&jobdir).exists();
        if out.status.success() {
            assert!(
                gone,
                "round {round}: cleanup said it succeeded: {}",
                stderr(&out)
            );
            assert!(stderr(&out).contains(&format!("removed {jobdir}")));
            removed += 1;
        } else {
            // The swapper can make a directory change under the walk, which then stops
            // (said on stderr, status 125): no harm done, counted.
            failed += 1;
        }
        if !gone {
            attacker_rm(&jobdir);
        }
        if t0.elapsed() > limit {
            break;
        }
    }
    let _ = run(as_attacker("rmdir").unwrap().arg(&user_dir));
    eprintln!(
        "race: {done} rounds in {:.1}s, {swaps} exchanges, staging removed in {removed}, \
         cleanup stopped in {failed}",
        t0.elapsed().as_secs_f64()
    );
    assert!(done >= 50, "only {done} rounds in {limit:?}");
    assert!(
        removed * 2 >= done,
        "cleanup still does its job under the race: removed in {removed} of {done} rounds"
    );
    assert_eq!(root_targets_intact(), Some(Ok(())));
}

/// D1 without a race: links to root's files everywhere in the attacker's staging, with
/// directories root's old cleanup had to chmod (mode 0, 0500, 6077) and a link in place of a
/// whole job directory. Root's cleanup removes every link as a link and the directories as
/// their owner: root's files unchanged, the attacker's staging gone. (Root's old cleanup
/// also passed this one: it looked at each entry with lstat; only the race defeated it.)
#[test]
fn root_cleanup_removes_planted_links_as_links() {
    let _env = Env::new();
    let (Some(_), Some(targets)) = (attacker(), service("LPMX_TEST_ROOT_TARGETS")) else {
        return;
    };
    if as_root(&[], &bin()).is_none() {
        return;
    }
    let user_dir = format!("/tmp/lpmx-stage-{}", attacker_uid());
    let job = format!("plant{}", std::process::id());
    let script = r#"set -e
u=$1; j=$1/job-$2; t=$3
mkdir -p "$j/a/b" "$j/zero" "$j/ro"
chmod 755 "$u"
ln -s "$t" "$j/to-targets"
ln -s "$t/dir" "$j/a/to-dir"
ln -s "$t/id" "$j/a/b/to-id"
ln -s "$t/secret" "$j/zero/to-secret"
ln -s "$t/dir" "$j/ro/to-dir"
chmod 6077 "$j/a"; chmod 0 "$j/zero"; chmod 500 "$j/ro"
ln -s "$t" "$u/job-$2.link"
"#;
    let out = run(as_attacker("/bin/sh")
        .unwrap()
        .args(["-c", script, "sh", &user_dir, &job, &targets]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = root_cleanup(&job, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(root_targets_intact(), Some(Ok(())));
    let jobdir = format!("{user_dir}/job-{job}");
    assert!(!Path::new(&jobdir).exists(), "{}", stderr(&out));
    // A job named so that its directory is the link: the link goes, not what it points at.
    let out = root_cleanup(&format!("{job}.link"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!Path::new(&format!("{user_dir}/job-{job}.link")).exists());
    assert_eq!(root_targets_intact(), Some(Ok(())));
    let _ = run(as_attacker("rmdir").unwrap().arg(&user_dir));
}

/// D8: the attacker makes the victim's staging directory (`mkdir -m700 BASE/lpmx-stage-UID`)
/// before the victim's first job on the node. Before the fix every staged run of the victim
/// failed with 125. Now the run works, staged in a private directory of the victim's with a
/// random name, a one-line warning names the squatted directory and its owner, and root's
/// epilog removes the squat (as the attacker) and the victim's staging.
#[test]
fn a_squatted_staging_directory_neither_stops_the_victim_nor_outlives_root_cleanup() {
    let env = Env::new();
    let (Some(who), Some(reg)) = (attacker(), service("LPMX_TEST_REGISTRY")) else {
        return;
    };
    if as_root(&[], &bin()).is_none() {
        return;
    }
    // A node-local base both users can write in, like /tmp (sticky), private to this test.
    let base = shared_dir();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let uid = unsafe { libc::getuid() };
    let squat = base.path().join(format!("lpmx-stage-{uid}"));
    // Whatever happens, the attacker's squat goes (the victim cannot remove it).
    struct Unsquat(PathBuf);
    impl Drop for Unsquat {
        fn drop(&mut self) {
            if self
                .0
                .symlink_metadata()
                .is_ok_and(|m| m.uid() != unsafe { libc::getuid() })
            {
                attacker_rm(self.0.to_str().unwrap());
            }
        }
    }
    let _unsquat = Unsquat(squat.clone());
    let out = run(as_attacker("mkdir").unwrap().arg("-m700").arg(&squat));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::symlink_metadata(&squat).unwrap().mode() & 0o777,
        0o700
    );

    let job = format!("squat{}", std::process::id());
    let img = format!("{reg}/lpmx/one");
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .env("LPMX_STAGE", "always")
        .env("LPMX_STAGE_DIR", base.path())
        .env("SLURM_JOB_ID", &job)
        .args(["run", &img, "/bin/sh", "-c", "echo staged-run-ok"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("staged-run-ok"));
    let err = stderr(&out);
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warning.len(), 1, "{}", stderr(&out));
    assert!(
        warning[0].contains(&squat.display().to_string()) && warning[0].contains(&who),
        "names the squatted directory and its owner: {}",
        warning[0]
    );
    let mine: Vec<PathBuf> = std::fs::read_dir(base.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("lpmx-stage-{uid}."))
        })
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    let m = std::fs::symlink_metadata(&mine[0]).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (uid, 0o700));
    assert!(mine[0].join(format!("job-{job}")).is_dir(), "staged there");
    // The job's next task finds the same staging, and warns again.
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .env("LPMX_STAGE", "always")
        .env("LPMX_STAGE_DIR", base.path())
        .env("SLURM_JOB_ID", &job)
        .args(["-v", "run", &img, "/bin/true"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("using the staged copy"),
        "{}",
        stderr(&out)
    );

    // Root's epilog: the squat goes (removed by its owner's rights), and the job's staging.
    let b = base.path().to_str().unwrap();
    let out = root_cleanup(&job, &[b]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!squat.exists(), "the squat is gone: {}", stderr(&out));
    assert!(!mine[0].join(format!("job-{job}")).exists());
    assert!(stderr(&out).contains(&format!("removed {}", squat.display())));
    assert_eq!(root_targets_intact(), Some(Ok(())));
    // The victim's next job stages in lpmx-stage-UID again.
    let _ = std::fs::remove_dir(&mine[0]);
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .env("LPMX_STAGE", "always")
        .env("LPMX_STAGE_DIR", base.path())
        .env("SLURM_JOB_ID", format!("{job}b"))
        .args(["run", &img, "/bin/true"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(squat.join(format!("job-{job}b")).is_dir());
    let out = run(env
        .cmd()
        .args(["cleanup", "--job", &format!("{job}b"), "--dir", b]));
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_dir(&squat);
}

/// Names in root's own 0700 directory that a glob would bring back, and the patterns.
const GLOBS: &str = "/root/.* /etc/pass*";

fn no_expansion(text: &str) {
    assert!(
        text.contains("/root/.*"),
        "the pattern is passed on as is: {text}"
    );
    for name in [".bashrc", ".profile", "/etc/passwd"] {
        assert!(!text.contains(name), "{name} expanded from {GLOBS}: {text}");
    }
}

/// D10, Slurm: a job's comment names "images" that are glob patterns. Before the fix, the
/// prolog (root) expanded them (`set -- $images`), and the hook log listed root's /root. Now
/// the comment is read and split by the job's user, with globbing off.
#[test]
fn slurm_prolog_expands_no_pattern_from_the_job_comment() {
    let env = Env::new();
    let (Some(_), Some(conf)) = (service("LPMX_TEST_SLURM"), service("SLURM_CONF")) else {
        return;
    };
    if as_root(&[], &bin()).is_none() {
        return;
    }
    let comment = format!("--comment=lpmx:{}", GLOBS.replace(' ', ","));
    let out = run(Command::new("sbatch")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", env.path("home"))
        .env("SLURM_CONF", &conf)
        .current_dir(env.dir.path())
        .args([
            "--parsable",
            "--hold",
            "-t",
            "1",
            &comment,
            "--wrap",
            "true",
        ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = stdout(&out).trim().split(';').next().unwrap().to_string();
    let log = env.path("hooks.log");
    let user = std::env::var("USER").unwrap_or_else(|_| "lpmxtest".into());
    let uid = unsafe { libc::getuid() }.to_string();
    let bin = bin();
    let prolog = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integrations/slurm/prolog.sh");
    let out = run(&mut as_root(
        &[
            ("SLURM_JOB_ID", &job),
            ("SLURM_JOB_USER", &user),
            ("SLURM_JOB_UID", &uid),
            ("SLURM_CONF", &conf),
            ("LPMX_BIN", bin.to_str().unwrap()),
            ("LPMX_HOOK_LOG", log.to_str().unwrap()),
        ],
        &prolog,
    )
    .unwrap());
    let _ = run(Command::new("scancel").env("SLURM_CONF", &conf).arg(&job));
    assert_eq!(out.status.code(), Some(0), "never fails the job");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("prefetch of"), "{text}");
    no_expansion(&text);
}

/// D10, PBS: the job's `qsub -v LPMX_PREFETCH=...` holds glob patterns. Before the fix, the
/// prologue (root) expanded them and the job's error file listed root's /root. A stand-in
/// qstat prints the job's Variable_List (no PBS here); the prologue now runs it as the user.
#[test]
fn pbs_prologue_expands_no_pattern_from_the_job_variables() {
    let env = Env::new();
    if as_root(&[], &bin()).is_none() {
        return;
    }
    let job = "4711.pbs-server";
    let qstat = env.write(
        "bin/qstat",
        &format!(
            "#!/bin/sh\nprintf 'Job Id: {job}\\n    Variable_List = PBS_O_HOME=/home/u,LPMX_PREFETCH={GLOBS},PBS_O_WORKDIR=/home/u\\n'\n"
        ),
    );
    std::fs::set_permissions(&qstat, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = std::env::var("USER").unwrap_or_else(|_| "lpmxtest".into());
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        env.path("bin").display()
    );
    let bin = bin();
    let prologue = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integrations/pbs/prologue");
    let out = run(as_root(
        &[("PATH", &path), ("LPMX_BIN", bin.to_str().unwrap())],
        &prologue,
    )
    .unwrap()
    .args([job, &user, &user]));
    assert_eq!(out.status.code(), Some(0), "0: the job runs");
    let text = stderr(&out);
    assert!(text.contains("prefetch of"), "{text}");
    no_expansion(&text);
}
