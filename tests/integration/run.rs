//! `lpmx-job run`, for real, as an ordinary user: namespaces, the root over the image tree,
//! binds, identity, environment, exit statuses and signals, against the fixture images of
//! the plain-HTTP registry.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{json, private_copy, run, service, stderr, stdout, Env};

struct Ctx {
    env: Env,
    reg: String,
}

fn ctx() -> Option<Ctx> {
    let reg = service("LPMX_TEST_REGISTRY")?;
    Some(Ctx {
        env: Env::new(),
        reg,
    })
}

impl Ctx {
    fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("LPMX_INSECURE_REGISTRIES", &self.reg);
        c
    }

    fn image(&self, name: &str) -> String {
        format!("{}/lpmx/{name}", self.reg)
    }

    /// `lpmx-job run ARGS...`
    fn run(&self, args: &[&str]) -> Output {
        run(self.cmd().arg("run").args(args))
    }

    fn run_with(&self, vars: &[(&str, &str)], args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.envs(vars.iter().copied());
        run(c.arg("run").args(args))
    }

    /// Pulls `name` (so later runs are warm and their stderr holds no progress).
    fn pulled(&self, name: &str) -> String {
        let img = self.image(name);
        let out = run(self.cmd().args(["-q", "pull", &img]));
        assert_eq!(out.status.code(), Some(0), "pull {img}: {}", stderr(&out));
        img
    }

    fn verify_cache(&self) {
        let out = run(self.cmd().args(["cache", "verify"]));
        assert_eq!(
            out.status.code(),
            Some(0),
            "cache verify: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o)
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn host_name() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    full.trim().split('.').next().unwrap().to_string()
}

fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn cold_run_pulls_then_runs_the_images_cmd() {
    let Some(c) = ctx() else { return };
    let img = c.image("one");
    let before = json(&run(c.cmd().args(["images", "--json"])));
    assert_eq!(before.as_array().unwrap().len(), 0);
    // No CMD: the image's Cmd, in the image's WorkingDir.
    let out = c.run(&[&img]);
    assert_eq!(ok(&out), "hello from one\n");
    let after = json(&run(c.cmd().args(["images", "--json"])));
    assert_eq!(after.as_array().unwrap().len(), 1, "pulled by the run");
    // The pulling process re-executed itself: the container of a cold run (a fresh cache:
    // this very run pulls) sees no internal marker, and the image's Env.
    let Some(cold) = ctx() else { return };
    let out = cold.run(&[&img, "env"]);
    let e = env_map(&ok(&out));
    assert_eq!(e.get("FIXTURE").map(String::as_str), Some("one"), "{e:?}");
    assert!(
        !e.keys().any(|k| k.starts_with("LPMX_INTERNAL")),
        "the cold run's own environment: {e:?}"
    );
    let after = json(&run(cold.cmd().args(["images", "--json"])));
    assert_eq!(after.as_array().unwrap().len(), 1, "pulled by that run");
}

#[test]
fn image_config_and_workdir() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    // With a CMD, the bound host directory the job runs in (the Env's, under /tmp).
    let out = c.run(&[&img, "sh", "-c", "echo $FIXTURE; pwd"]);
    let here = c.env.dir.path().display().to_string();
    assert_eq!(ok(&out), format!("one\n{here}\n"), "image Env, host cwd");
    assert_eq!(ok(&c.run(&["-w", "/etc", &img, "pwd"])), "/etc\n");
    // A missing -w is created in the task's scratch layer, even with a read-only root.
    assert_eq!(
        ok(&c.run(&["--workdir", "/new/wd", &img, "pwd"])),
        "/new/wd\n"
    );
    let out = c.run(&["-w", "rel", &img, "pwd"]);
    assert_eq!(code(&out), Some(125));
    assert!(stderr(&out).contains("absolute"), "{}", stderr(&out));
    // `--` and arguments that look like options pass to the command.
    assert_eq!(ok(&c.run(&[&img, "--", "echo", "a", "-b"])), "a -b\n");
    assert_eq!(
        ok(&c.run(&[&img, "echo", "x", "-e", "--env", "-v"])),
        "x -e --env -v\n"
    );
    // --use-entrypoint with an image that has none: CMD alone.
    assert_eq!(ok(&c.run(&["--use-entrypoint", &img, "echo", "x"])), "x\n");
}

#[test]
fn layer_semantics_seen_from_inside() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("layers3");
    let script = "cat /data/keep.txt; \
        test -e /etc/gone.txt && echo gone-present; \
        ls /data/old; \
        test -e /data/old/a.txt && echo opaque-broken; \
        readlink /data/rel; cat /data/rel; readlink /data/abs; cat /data/abs; \
        test $(stat -c %i /data/hard1) = $(stat -c %i /data/hard2) && echo same-inode; \
        cat /data/hard2";
    let out = c.run(&[&img, "sh", "-c", script]);
    assert_eq!(
        ok(&out),
        "v2\nnew.txt\nkeep.txt\nv2\n/data/keep.txt\nv2\nsame-inode\nhard\n"
    );
    // The image's own Cmd.
    assert_eq!(ok(&c.run(&[&img])), "v2\n");
}

#[test]
fn identity_is_the_users_or_root() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    let uid = unsafe { libc::getuid() };
    let gid = unsafe { libc::getgid() };
    let name = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let out = c.run(&[&img, "sh", "-c", "id -u; id -g; id -un; cat /etc/passwd"]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], uid.to_string());
    assert_eq!(lines[1], gid.to_string());
    assert_eq!(
        format!("{}\n", lines[2]),
        name,
        "named by the added passwd line"
    );
    assert!(
        text.contains(&format!("{}:x:{uid}:{gid}:", name.trim())),
        "{text}"
    );
    assert!(
        text.contains("root:x:0:0:root:/root:/bin/sh"),
        "the image's lines stay"
    );

    let data = c.env.path("data");
    std::fs::create_dir(&data).unwrap();
    let bind = format!("{}:/in", data.display());
    let out = c.run(&[
        "--fakeroot",
        "-b",
        &bind,
        &img,
        "sh",
        "-c",
        "id -u; id -g; touch /in/made; stat -c %u /in/made",
    ]);
    assert_eq!(ok(&out), "0\n0\n0\n");
    let meta = std::fs::metadata(data.join("made")).unwrap();
    assert_eq!(meta.uid(), uid, "root inside is the user outside");
}

#[test]
fn environment_precedence() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    let host = [
        ("FIXTURE", "host"),
        ("SLURM_JOB_ID", "4242"),
        ("PMIX_RANK", "3"),
        ("CUDA_VISIBLE_DEVICES", "1"),
        ("LPMXENV_FOO", "bar"),
        ("TERM", "dumb"),
        ("EDITOR", "vi"),
    ];
    let out = c.run_with(&host, &[&img, "env"]);
    let e = env_map(&ok(&out));
    assert_eq!(e["FIXTURE"], "one", "the image's Env over the host's");
    assert_eq!(e["PATH"], "/usr/bin:/bin", "PATH is the image's");
    assert_eq!(e["SLURM_JOB_ID"], "4242");
    assert_eq!(e["PMIX_RANK"], "3");
    assert_eq!(e["CUDA_VISIBLE_DEVICES"], "1");
    assert_eq!(e["EDITOR"], "vi", "the host's passes through");
    assert_eq!(e["FOO"], "bar", "LPMXENV_FOO sets FOO");
    assert!(!e.contains_key("LPMXENV_FOO"));
    assert_eq!(e["HOME"], c.env.path("home").display().to_string());

    let out = c.run_with(&host, &["-e", "FIXTURE=cli", "--env", "X=a=b", &img, "env"]);
    let e = env_map(&ok(&out));
    assert_eq!((e["FIXTURE"].as_str(), e["X"].as_str()), ("cli", "a=b"));

    let out = c.run_with(&host, &["--cleanenv", &img, "env"]);
    let e = env_map(&ok(&out));
    let names: Vec<&str> = e.keys().map(String::as_str).collect();
    // Besides the MPI transport defaults one container per task needs (environ::TASK_DEFAULTS).
    assert_eq!(
        names,
        [
            "FIXTURE",
            "FOO",
            "HOME",
            "OMPI_MCA_btl_vader_single_copy_mechanism",
            "PATH",
            "TERM",
            "UCX_POSIX_USE_PROC_LINK"
        ]
    );
    assert!(
        !e.contains_key("SLURM_JOB_ID") && !e.contains_key("EDITOR"),
        "{e:?}"
    );
    assert_eq!(e["FIXTURE"], "one");
    assert_eq!(e["TERM"], "dumb");

    let out = c.run(&["-e", "NOVALUE", &img, "true"]);
    assert_eq!(code(&out), Some(125));
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));
}

#[test]
fn binds_default_user_read_only_and_missing() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    let data = c.env.path("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "host-data\n").unwrap();
    let d = data.display().to_string();

    // At a path the image lacks (no /mnt in the image).
    let out = c.run(&["-b", &format!("{d}:/mnt/in"), &img, "cat", "/mnt/in/f"]);
    assert_eq!(ok(&out), "host-data\n");
    // DST defaults to SRC; writes reach the host.
    let out = c.run(&["--bind", &d, &img, "sh", "-c", &format!("echo w > {d}/w")]);
    ok(&out);
    assert_eq!(std::fs::read_to_string(data.join("w")).unwrap(), "w\n");
    // Read-only: writing fails and nothing reaches the host.
    let out = c.run(&["-b", &format!("{d}:/ro:ro"), &img, "touch", "/ro/x"]);
    assert_ne!(code(&out), Some(0));
    assert!(stderr(&out).contains("Read-only"), "{}", stderr(&out));
    assert!(!data.join("x").exists());
    // A missing source: 125, naming it.
    let out = c.run(&["-b", "/no/such/src:/x", &img, "true"]);
    assert_eq!(code(&out), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("/no/such/src") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // Defaults: the host's /tmp, /dev, /proc, /etc/hosts. The file read from /tmp is in a
    // directory of its own, neither the task's directory (/) nor under HOME, so only the
    // /tmp bind shows it; and /tmp is a mount point of its own inside.
    let elsewhere = tempfile::Builder::new()
        .prefix("lpmx-tmpbind.")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(elsewhere.path().join("f"), "tmp-data\n").unwrap();
    let t = elsewhere.path().display();
    let out = run(c.cmd().current_dir("/").args([
        "run",
        &img,
        "sh",
        "-c",
        &format!("cat {t}/f; echo x > /dev/null && echo devnull; test -r /proc/self/status && echo proc; cat /etc/hosts"),
    ]));
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert_eq!(ok(&out), format!("tmp-data\ndevnull\nproc\n{hosts}"));
    let info = ok(&c.run(&[&img, "cat", "/proc/self/mountinfo"]));
    assert!(
        info.lines().any(|l| l.split(' ').nth(4) == Some("/tmp")),
        "/tmp is bound: {info}"
    );
    // /sys is read-only, with every mount below it (cgroup file systems...), as root inside
    // too: by the mount's options, since an ordinary user could not write there anyway.
    let sys_mounts = |info: &str| -> Vec<(String, String)> {
        info.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let (at, opts) = (*f.get(4)?, *f.get(5)?);
                (at == "/sys" || at.starts_with("/sys/")).then(|| (at.into(), opts.into()))
            })
            .collect()
    };
    let host = sys_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let out = c.run(&["--fakeroot", &img, "cat", "/proc/self/mountinfo"]);
    let inside = sys_mounts(&ok(&out));
    assert_eq!(
        inside.len(),
        host.len(),
        "the host's /sys mounts, all: {inside:?}"
    );
    for (at, opts) in &inside {
        assert!(opts.split(',').any(|o| o == "ro"), "{at} is {opts}");
    }
}

#[test]
fn exit_statuses() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    assert_eq!(code(&c.run(&[&img, "true"])), Some(0));
    assert_eq!(code(&c.run(&[&img, "false"])), Some(1));
    assert_eq!(code(&c.run(&[&img, "sh", "-c", "exit 7"])), Some(7));

    let out = c.run(&[&img, "/etc/passwd"]);
    assert_eq!(code(&out), Some(126));
    let err = stderr(&out);
    assert!(err.contains("/etc/passwd: permission denied"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = c.run(&[&img, "nosuchcmd", "arg"]);
    assert_eq!(code(&out), Some(127));
    assert_eq!(
        stderr(&out),
        format!(
            "lpmx-job[{}]: error: {img}: nosuchcmd: command not found in the container (PATH=/usr/bin:/bin)\n",
            host_name()
        )
    );
    assert_eq!(code(&c.run(&[&img, "/no/such/file"])), Some(127));

    let out = c.run(&[&c.image("no-such-image"), "true"]);
    assert_eq!(code(&out), Some(125));
}

#[test]
fn the_command_is_the_process_signals_and_stdin_reach_it() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    let mut child = c
        .cmd()
        .args(["run", &img, "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Same pid: lpmx-job becomes the command (no supervisor, no fork).
    let start = Instant::now();
    loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.starts_with(b"sleep\0") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pid {pid} never became sleep: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");

    let mut child = c
        .cmd()
        .args(["run", &img, "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

    // SIGPIPE is not left ignored (Rust ignores it; an ignored signal survives exec).
    let text = ok(&c.run(&[&img, "cat", "/proc/self/status"]));
    let ign = text
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(ign & (1 << (libc::SIGPIPE - 1)), 0, "SigIgn {ign:x}");
}

#[test]
fn multi_platform_image_runs_this_hosts_entry() {
    // The fixture's platforms (tests/setup/fixtures.sh), each with /arch naming it.
    let want = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => {
            return crate::support::skip(
                "multi-platform",
                &format!("the multi fixture has no entry for this host's {other}"),
            )
        }
    };
    let Some(c) = ctx() else { return };
    let out = c.run(&[&c.image("multi"), "cat", "/arch"]);
    assert_eq!(ok(&out).trim(), want);
}

#[test]
fn root_is_read_only_and_writes_never_reach_the_cache() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("layers3");
    let out = c.run(&[&img, "touch", "/y"]);
    assert_ne!(code(&out), Some(0));
    assert!(stderr(&out).contains("Read-only"), "{}", stderr(&out));

    let out = c.run(&[
        "--write",
        &img,
        "sh",
        "-c",
        "touch /x && echo changed > /data/keep.txt && rm /data/hard1 && cat /data/keep.txt",
    ]);
    assert_eq!(ok(&out), "changed\n");
    let out = c.run(&[
        &img,
        "sh",
        "-c",
        "test -e /x && echo x-left; cat /data/keep.txt /data/hard1",
    ]);
    assert_eq!(ok(&out), "v2\nhard\n", "the next task sees the image");
    c.verify_cache();
}

#[test]
fn write_dir_persists_where_asked() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    let dir = c.env.path("upper-of-mine");
    let w = format!("--write={}", dir.display());
    ok(&c.run(&[&w, &img, "sh", "-c", "echo p > /persist && mkdir /newdir"]));
    assert_eq!(ok(&c.run(&[&w, &img, "cat", "/persist"])), "p\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("upper/persist")).unwrap(),
        "p\n"
    );
    let out = c.run(&[&img, "test", "-e", "/persist"]);
    assert_eq!(code(&out), Some(1), "other runs do not see it");
    c.verify_cache();
}

#[test]
fn fallback_without_overlayfs() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("layers3");
    let no = [("LPMX_INTERNAL_NO_OVERLAY", "1")];
    let data = c.env.path("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "host-data\n").unwrap();
    let out = c.run_with(
        &no,
        &[
            "-v",
            "-b",
            &format!("{}:/in", data.display()),
            &img,
            "sh",
            "-c",
            "cat /data/keep.txt; test -e /etc/gone.txt || echo no-gone; ls /data/old; cat /in/f; id -un; env",
        ],
    );
    let text = ok(&out);
    assert!(
        text.starts_with("v2\nno-gone\nnew.txt\nhost-data\n"),
        "{text}"
    );
    assert!(!text.contains("LPMX_INTERNAL"), "{text}");
    assert!(stderr(&out).contains("bind-fallback"), "{}", stderr(&out));
    // Image files stay read-only even with --write; new top-level entries are allowed.
    let out = c.run_with(
        &no,
        &["--write", &img, "sh", "-c", "echo x > /data/keep.txt"],
    );
    assert_ne!(code(&out), Some(0));
    assert!(
        stderr(&out).contains("/data/keep.txt: Read-only file system"),
        "refused by the read-only image file, not some other failure: {}",
        stderr(&out)
    );
    let out = c.run_with(&no, &["--write", &img, "sh", "-c", "touch /top && echo ok"]);
    assert_eq!(ok(&out), "ok\n");
    // A mount point inside an image directory cannot be made without overlayfs.
    let out = c.run_with(
        &no,
        &["-b", &format!("{}:/data/in", data.display()), &img, "true"],
    );
    assert_eq!(code(&out), Some(125));
    assert!(stderr(&out).contains("/data/in"), "{}", stderr(&out));
    // --write=DIR needs overlayfs.
    let w = format!("--write={}", c.env.path("u").display());
    let out = c.run_with(&no, &[&w, &img, "true"]);
    assert_eq!(code(&out), Some(125));
    assert!(stderr(&out).contains("needs overlayfs"), "{}", stderr(&out));
    c.verify_cache();
}

#[test]
fn sixteen_concurrent_runs_of_one_image() {
    let Some(c) = ctx() else { return };
    let img = c.image("one");
    // Cold: the first arrivals pull and build the tree, the rest wait for them.
    let children: Vec<_> = (0..16)
        .map(|i| {
            c.cmd()
                .args(["-q", "run", &img, "sh", "-c", &format!("echo task-{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, ch) in children.into_iter().enumerate() {
        let out = ch.wait_with_output().unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned()
            ),
            (Some(0), format!("task-{i}\n")),
            "task {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c.verify_cache();
}

/// Every file and directory of the cache with its size and modification time.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            out.insert(e.path(), (m.len(), m.mtime(), m.mtime_nsec()));
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_warm_run_touches_neither_the_network_nor_the_cache() {
    let Some(c) = ctx() else { return };
    let repo = private_copy(&c.reg, "one", &c.env);
    let img = format!("{}/{repo}", c.reg);
    ok(&c.run(&[&img, "true"]));
    let log = PathBuf::from(service("LPMX_TEST_LOGS").unwrap()).join("registry-http.log");
    let requests = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("/v2/{repo}/")))
            .count()
    };
    let (asked, cache) = (requests(), snapshot(&c.env.path("cache/lpmx")));
    assert!(asked > 0, "the cold run asked the registry");
    for _ in 0..3 {
        ok(&c.run(&[&img, "true"]));
    }
    // Everything asked before this point is in the log.
    crate::support::registry_log_flushed(&c.reg);
    assert_eq!(requests(), asked, "a warm run asks the registry nothing");
    assert_eq!(
        snapshot(&c.env.path("cache/lpmx")),
        cache,
        "and writes nothing"
    );
}

#[test]
fn a_host_denying_user_namespaces_is_named() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    // As in doctor's test: a namespace of our own whose user.max_user_namespaces is 0.
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces || exit 99; exec \"{}\" \"$@\"",
        crate::support::bin().display()
    );
    let cmd = c.cmd();
    let mut u = Command::new("unshare");
    u.args(["-U", "-r", "sh", "-c", &script, "sh", "run", &img, "true"])
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .current_dir(c.env.dir.path());
    let out = run(&mut u);
    assert_ne!(
        code(&out),
        Some(99),
        "no denying namespace: {}",
        stderr(&out)
    );
    assert_eq!(code(&out), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(&img) && err.contains("user.max_user_namespaces is 0"),
        "{err}"
    );
    assert!(err.contains("sysctl -w user.max_user_namespaces="), "{err}");
}

/// An image that has every mount point a run needs (as images built for ch-run do) is its
/// own root, bound read-only, with no overlay: the same container as through the overlay,
/// and nothing written in the cache's tree. A bind whose mount point it lacks goes back to
/// the overlay, which creates it in the task's scratch layer.
#[test]
fn an_image_with_every_mount_point_runs_on_its_own_tree() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("mounts");
    let script = "id -un; grep -c \"^$(id -un):\" /etc/passwd; cat /proc/self/uid_map | wc -l; \
                  touch /newfile 2>/dev/null || echo ro-root; echo data > $HOME/from-inside; pwd";
    let out = c.run(&["-v", &img, "sh", "-c", script]);
    let text = ok(&out);
    assert!(
        stderr(&out).contains("direct read-only root"),
        "{}",
        stderr(&out)
    );
    let me = crate::support::stdout(&run(Command::new("id").arg("-un")));
    let here = c.env.dir.path().display().to_string();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [me.trim(), "1", "1", "ro-root", here.as_str()],
        "the user's entry, one uid mapped, a read-only root, the job's directory"
    );
    assert_eq!(
        std::fs::read_to_string(c.env.path("home/from-inside")).unwrap(),
        "data\n"
    );
    let out = c.run(&[
        "-v",
        "-b",
        "/etc/hostname:/new/hostname",
        &img,
        "cat",
        "/new/hostname",
    ]);
    ok(&out);
    assert!(stderr(&out).contains("overlay root"), "{}", stderr(&out));
    c.verify_cache();
    // The tree holds only what the image has: no mount point was made in it.
    let trees = c.env.path("cache/lpmx/trees-v1");
    for e in walkdir::WalkDir::new(&trees) {
        let p = e.unwrap().path().to_path_buf();
        assert!(
            !p.ends_with("new") && !p.ends_with("newfile"),
            "{}",
            p.display()
        );
    }
}

/// `scratch.size` bounds the task's tmpfs: with `--write`, a write beyond it fails inside
/// (ENOSPC) and lpmx-job itself is unharmed; below it, it succeeds.
#[test]
fn scratch_size_bounds_the_tasks_writable_layer() {
    let Some(c) = ctx() else { return };
    let img = c.pulled("one");
    let script = "dd if=/dev/zero of=/small bs=1k count=100 2>/dev/null && echo small-ok; \
                  dd if=/dev/zero of=/big bs=1k count=4096 2>/dev/null || echo big-refused";
    let out = c.run_with(
        &[("LPMX_SCRATCH_SIZE", "1m")],
        &["--write", &img, "sh", "-c", script],
    );
    assert_eq!(ok(&out), "small-ok\nbig-refused\n");
    let out = c.run(&["--write", &img, "sh", "-c", script]);
    assert_eq!(
        ok(&out),
        "small-ok\n",
        "no limit by default beyond the kernel's"
    );
}

/// lpmx-job changes no mount's propagation (a `--make-rprivate /` would visit every host
/// mount per task): the new user namespace makes the host's shared mounts slaves. A mount
/// made inside, on a directory of a shared host mount, must still not reach the host.
#[test]
fn mounts_made_inside_stay_inside() {
    let Some(c) = ctx() else { return };
    let Some(shared) = service("LPMX_TEST_SHARED") else {
        return;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines()
            .any(|l| l.contains(&format!(" {shared} ")) && l.contains(" shared:")),
        "the harness's {shared} is a shared mount: {info}"
    );
    let img = c.pulled("one");
    let dir = tempfile::Builder::new()
        .prefix("prop.")
        .tempdir_in(&shared)
        .unwrap();
    let at = dir.path().to_str().unwrap();
    let script = format!(
        "busybox mount -t tmpfs lpmx-prop-test {at} && touch {at}/inside && \
         busybox grep -c lpmx-prop-test /proc/self/mountinfo"
    );
    let out = c.run(&["--fakeroot", &img, "sh", "-c", &script]);
    assert_eq!(ok(&out), "1\n", "the mount exists inside");
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !after.contains("lpmx-prop-test"),
        "a mount made in the container reached the host: {after}"
    );
    assert!(
        !dir.path().join("inside").exists(),
        "written in the container's tmpfs only"
    );
}

/// The working-directory contract (shared/DESIGN.md) with an image whose WorkingDir is not
/// `/`, as Docker images often have (`/workspace`, `/app`): `cd ~/proj && run IMG ./solver`
/// must run in ~/proj; the image's own command runs in its WorkingDir; `-w` always wins; a
/// host directory no bind shows falls back to the WorkingDir.
#[test]
fn a_cmd_runs_in_the_jobs_directory_and_the_images_command_in_its_workdir() {
    let Some(c) = ctx() else { return };
    let Some(fixtures) = service("LPMX_TEST_FIXTURES") else {
        return;
    };
    let layout = c.env.path("layout");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(Path::new(&fixtures).join("oci"))
        .arg(&layout)
        .status()
        .unwrap();
    assert!(cp.success());
    let umoci = run(Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:one", layout.display()))
        .args([
            "--tag",
            "wd",
            "--config.workingdir",
            "/etc",
            "--config.cmd",
            "pwd",
        ]));
    assert!(umoci.status.success(), "{}", stderr(&umoci));
    let img = format!("oci:{}:wd", layout.display());
    let proj = c.env.path("home/proj");
    std::fs::create_dir_all(proj.join("sub")).unwrap();
    std::fs::write(proj.join("input.nml"), "x = 1\n").unwrap();
    let in_proj = |args: &[&str]| run(c.cmd().current_dir(&proj).arg("run").args(args));

    assert_eq!(
        ok(&in_proj(&[&img, "pwd"])),
        format!("{}\n", proj.display())
    );
    assert_eq!(ok(&in_proj(&[&img, "cat", "input.nml"])), "x = 1\n");
    assert_eq!(ok(&in_proj(&[&img])), "/etc\n", "the image's own command");
    assert_eq!(ok(&in_proj(&["-w", "/usr", &img, "pwd"])), "/usr\n");
    assert_eq!(ok(&in_proj(&["-w", "/usr", &img])), "/usr\n");
    // A host directory no bind shows (/ is not bound): the image's WorkingDir.
    let out = run(c.cmd().current_dir("/").args(["run", &img, "pwd"]));
    assert_eq!(ok(&out), "/etc\n");
}
