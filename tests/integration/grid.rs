//! The grid pilot (integrations/grid/bootstrap.sh) on a "worker node with nothing installed":
//! started with `env -i`, an empty HOME and PATH=/usr/bin:/bin, it fetches the static lpmx-job
//! that tests/run.sh built (contrib/build-static.sh), over HTTP from a loopback server or from
//! a path, checks its sha256, runs the payload in an image from the real registry, and must
//! leave the scratch directory as it found it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{blob_gets, private_copy, run, service, stderr, stdout, Env};

/// The static executable and its sha256, as tests/run.sh built them.
struct Static {
    bin: PathBuf,
    sha256: String,
}

fn static_bin() -> Option<Static> {
    Some(Static {
        bin: service("LPMX_TEST_STATIC_BIN")?.into(),
        sha256: service("LPMX_TEST_STATIC_SHA256")?,
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integrations/grid/bootstrap.sh")
}

/// A pilot's directories: an empty HOME and the job's scratch directory (also its cwd).
struct Pilot {
    env: Env,
}

impl Pilot {
    fn new() -> Pilot {
        let env = Env::new();
        for d in ["pilot-home", "scratch"] {
            std::fs::create_dir(env.path(d)).unwrap();
        }
        Pilot { env }
    }

    fn home(&self) -> PathBuf {
        self.env.path("pilot-home")
    }

    fn scratch(&self) -> PathBuf {
        self.env.path("scratch")
    }

    /// `env -i HOME=... PATH=/usr/bin:/bin VARS... bash bootstrap.sh ARGS...` in the scratch
    /// directory. VARS are what a pilot's job description would set.
    fn cmd(&self, vars: &[(&str, &str)], args: &[&str]) -> Command {
        let mut c = Command::new("env");
        c.arg("-i")
            .arg(format!("HOME={}", self.home().display()))
            .arg("PATH=/usr/bin:/bin");
        // tests/run.sh finds processes the tests left behind by this marker.
        if let Ok(w) = std::env::var("LPMX_TEST_WORK") {
            c.arg(format!("LPMX_TEST_WORK={w}"));
        }
        for (k, v) in vars {
            c.arg(format!("{k}={v}"));
        }
        c.arg("bash").arg(script()).args(args);
        c.current_dir(self.scratch());
        c
    }

    /// Asserts the pilot left nothing in its scratch directory nor in its HOME.
    fn assert_nothing_left(&self) {
        for d in [self.scratch(), self.home()] {
            let left: Vec<_> = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "{} still holds {left:?}", d.display());
        }
    }
}

/// `python3 -m http.server` on 127.0.0.1, a port the kernel picks, serving one directory.
struct Http {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Http {
    fn serve(dir: &Path, log: PathBuf) -> Http {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 is installed by tests/run.sh");
        // "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("http.server did not say its port: {line:?}"));
        Http { child, port, log }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn the_pilot_fetches_checks_and_runs_the_payload_in_the_image_with_its_status() {
    let Some(st) = static_bin() else { return };
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let p = Pilot::new();
    let http = Http::serve(st.bin.parent().unwrap(), p.env.path("http.log"));
    let name = st.bin.file_name().unwrap().to_str().unwrap();
    let url = http.url(name);
    let image = format!("{reg}/lpmx/layers3");
    // /data/keep.txt is the image's alone; `uname` is not in the image (busybox with a few
    // applets), so it runs on the host through the bridge, whose entry for a static
    // lpmx-job is a symlink to the client rather than a script naming a loader.
    let out = run(&mut p.cmd(
        &[
            ("_CONDOR_SCRATCH_DIR", &p.scratch().to_string_lossy()),
            ("LPMX_BOOTSTRAP_URL", &url),
            ("LPMX_BOOTSTRAP_SHA256", &st.sha256),
            ("LPMX_INSECURE_REGISTRIES", &reg),
        ],
        &[
            "--",
            "--host-cmd",
            "uname",
            &image,
            "sh",
            "-c",
            "cat /data/keep.txt; readlink /.lpmx/bin/uname; uname -s; exit 7",
        ],
    ));
    assert_eq!(
        code(&out),
        Some(7),
        "the payload's status: {}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "v2\n/.lpmx/lib/lpmx-bridge\nLinux\n",
        "{}",
        stderr(&out)
    );
    assert!(
        http.log()
            .contains(&format!("\"GET /{name} HTTP/1.1\" 200")),
        "fetched over HTTP: {}",
        http.log()
    );
    p.assert_nothing_left();
}

#[test]
fn a_wrong_or_missing_sha256_is_refused_and_nothing_runs() {
    let Some(st) = static_bin() else { return };
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let p = Pilot::new();
    let image = format!("{reg}/lpmx/one");
    let marker = p.env.path("ran");
    let payload = format!("touch {}", marker.display());
    let mut wrong = st.sha256.clone();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(63.., last);
    let bin = st.bin.to_string_lossy().into_owned();
    let scratch = p.scratch().to_string_lossy().into_owned();
    let out = run(&mut p.cmd(
        &[("TMPDIR", &scratch), ("LPMX_INSECURE_REGISTRIES", &reg)],
        &[
            "--url", &bin, "--sha256", &wrong, &image, "sh", "-c", &payload,
        ],
    ));
    assert_eq!(code(&out), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sha256 mismatch")
            && err.contains(&wrong)
            && err.contains(&st.sha256)
            && err.contains("refusing to run it")
            && err.contains(&bin),
        "names the file, both values and the refusal: {err}"
    );
    assert!(!marker.exists(), "the payload must not run");
    p.assert_nothing_left();

    let out = run(&mut p.cmd(
        &[("TMPDIR", &scratch), ("LPMX_INSECURE_REGISTRIES", &reg)],
        &["--url", &bin, &image, "sh", "-c", &payload],
    ));
    assert_eq!(code(&out), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("no sha256"), "{}", stderr(&out));
    assert!(!marker.exists(), "the payload must not run");
    p.assert_nothing_left();
}

#[test]
fn a_mounted_read_only_site_cache_is_used_and_an_absent_one_skipped() {
    let Some(st) = static_bin() else { return };
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let site = Env::new();
    let repo = private_copy(&reg, "layers3", &site);
    let image = format!("{reg}/{repo}");
    let out = run(site
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .args(["pull", &image]));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let before = blob_gets(&repo);
    assert!(!before.is_empty(), "the site pull fetched the blobs");
    let site_cache = site.path("cache/lpmx");
    let chmod = |mode: &str| {
        Command::new("chmod")
            .args(["-R", mode])
            .arg(&site_cache)
            .status()
            .unwrap()
    };
    assert!(chmod("a-w").success());

    let p = Pilot::new();
    let absent = p.env.path("no-cvmfs/lpmx");
    let sites = format!("{}:{}", absent.display(), site_cache.display());
    let out = run(&mut p.cmd(
        &[
            ("_CONDOR_SCRATCH_DIR", &p.scratch().to_string_lossy()),
            (
                "LPMX_BOOTSTRAP_URL",
                &format!("file://{}", st.bin.display()),
            ),
            ("LPMX_BOOTSTRAP_SHA256", &st.sha256),
            ("LPMX_BOOTSTRAP_SITE_CACHES", &sites),
            ("LPMX_INSECURE_REGISTRIES", &reg),
        ],
        &[&image, "cat", "/data/keep.txt"],
    ));
    chmod("u+w");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "v2\n");
    assert_eq!(
        blob_gets(&repo),
        before,
        "layers and config came from the site cache"
    );
    assert!(
        stderr(&out).contains(&format!("site cache {} is not mounted", absent.display())),
        "{}",
        stderr(&out)
    );
    p.assert_nothing_left();
}

#[test]
fn a_terminated_pilot_ends_its_payload_and_cleans_up() {
    let Some(st) = static_bin() else { return };
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let p = Pilot::new();
    let mut child = p
        .cmd(
            &[
                ("_CONDOR_SCRATCH_DIR", &p.scratch().to_string_lossy()),
                ("LPMX_BOOTSTRAP_URL", &st.bin.to_string_lossy()),
                ("LPMX_BOOTSTRAP_SHA256", &st.sha256),
                ("LPMX_INSECURE_REGISTRIES", &reg),
            ],
            &[
                &format!("{reg}/lpmx/one"),
                "sh",
                "-c",
                "echo started $$; exec sleep 300",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // The payload's pid (no pid namespace: the host's), as `sleep` once it execs.
    let payload: i32 = line
        .strip_prefix("started ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the payload started: {line:?}"));
    let is_payload = || {
        std::fs::read(format!("/proc/{payload}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
    };
    crate::support::wait_until(
        "the payload became sleep",
        Duration::from_secs(60),
        is_payload,
    );
    // `env` execs bash: this pid is the pilot's shell, as a batch system would signal it.
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // A guard against hanging the run, not a timing assertion.
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the pilot did not end after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    eprintln!("pilot stderr:\n{err}");
    assert_eq!(
        status.code(),
        Some(143),
        "the payload's end by SIGTERM, passed on"
    );
    // Ended with the pilot, not left running for the harness's stray-killer to find.
    let zombie_or_gone = || {
        std::fs::read_to_string(format!("/proc/{payload}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    };
    assert!(
        !is_payload() || zombie_or_gone(),
        "the payload {payload} survived its pilot"
    );
    p.assert_nothing_left();
}
