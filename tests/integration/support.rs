//! What every integration test needs: the binary, a private home, and a guard against root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `lpmx-job` under test: `LPMX_BIN` (set by tests/run.sh, which copies the build where an
/// ordinary user can reach it) or the one cargo built.
pub fn bin() -> PathBuf {
    std::env::var_os("LPMX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lpmx-job")))
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A service's address from the environment tests/run.sh sets. Without it the test is
/// skipped, except under CI, where a missing service is a failure.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if in_ci() => panic!(
            "{var} is not set: run the tests through tests/run.sh, which starts the services"
        ),
        _ => {
            eprintln!("skipped: {var} is not set (run tests/run.sh to start the services)");
            None
        }
    }
}

/// A private home, config and cache for one test, and the assertion that we are not root.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let uid = unsafe { libc::getuid() };
        assert_ne!(
            uid, 0,
            "integration tests must run as an ordinary user; run `tests/run.sh` as root, \
             which runs them as the user it creates"
        );
        let dir = tempfile::Builder::new()
            .prefix("lpmx-it.")
            .tempdir()
            .expect("temp dir");
        for d in ["home", "config", "cache"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Env { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `lpmx-job` with a clean environment: a private HOME and XDG dirs, and no site file.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("LPMX_SITE_CONFIG", self.path("site/config.yaml"))
            .current_dir(self.dir.path());
        c
    }
}

pub fn run(c: &mut Command) -> Output {
    let out = c.output().expect("spawn lpmx-job");
    eprintln!(
        "$ {:?}\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
        c,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[allow(dead_code)]
pub fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// Copies a fixture (all its platforms) into a repository of this test's own, so the
/// registry's access log can be read for this test alone.
pub fn private_copy(reg: &str, fixture: &str, env: &Env) -> String {
    let tag = env
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "-")
        .to_lowercase();
    let repo = format!("lpmx/{fixture}-{}-{tag}", std::process::id());
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--insecure-policy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{reg}/lpmx/{fixture}:latest"))
        .arg(format!("docker://{reg}/{repo}:latest"))
        .env("HOME", env.path("home"))
        .output()
        .expect("skopeo is installed by tests/run.sh");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    repo
}

/// Successful blob downloads (200, or 206 for a resumed one) per digest for one repository,
/// from the plain-HTTP registry's access log.
pub fn blob_gets(repo: &str) -> std::collections::BTreeMap<String, usize> {
    blob_get_statuses(repo)
        .into_iter()
        .map(|(digest, statuses)| {
            let ok = statuses
                .iter()
                .filter(|s| *s == "200" || *s == "206")
                .count();
            (digest, ok)
        })
        .filter(|(_, ok)| *ok > 0)
        .collect()
}

/// The second ordinary user of the trust-boundary tests (tests/run.sh creates it, in
/// [`group`] with the test user), or None outside the harness (a failure under CI).
#[allow(dead_code)]
pub fn attacker() -> Option<String> {
    service("LPMX_TEST_ATTACKER")
}

/// The group the test user and the attacker share.
#[allow(dead_code)]
pub fn group() -> Option<String> {
    service("LPMX_TEST_GROUP")
}

/// A command run as the attacker (`sudo -n -u ATTACKER`), with a clean environment but
/// `PATH` and what the caller adds. Its HOME is the attacker's own.
#[allow(dead_code)]
pub fn as_attacker(program: impl AsRef<std::ffi::OsStr>) -> Option<Command> {
    let who = attacker()?;
    let mut c = Command::new("sudo");
    c.args(["-n", "-H", "-u", &who, "--", "env", "-i"])
        .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .arg(program)
        .current_dir("/");
    Some(c)
}

/// A command run as root the way a scheduler runs a hook: `PROGRAM` must be an `lpmx-job`
/// executable or a script under `integrations/`, every directory above it root's
/// (tests/setup/as-root.sh checks). `vars` are its whole environment besides PATH.
#[allow(dead_code)]
pub fn as_root(vars: &[(&str, &str)], program: &Path) -> Option<Command> {
    let helper = service("LPMX_TEST_AS_ROOT")?;
    let mut c = Command::new("sudo");
    c.args(["-n", &helper]);
    for (k, v) in vars {
        c.arg(format!("{k}={v}"));
    }
    c.arg(program).current_dir("/");
    Some(c)
}

/// The root-owned files an attack on a root-run hook aims at (`id`, `dir/`, `secret`), and
/// the check that each is still as tests/run.sh made it.
#[allow(dead_code)]
pub fn root_targets_intact() -> Option<Result<(), String>> {
    use std::os::unix::fs::MetadataExt;
    let d = PathBuf::from(service("LPMX_TEST_ROOT_TARGETS")?);
    let check = |rel: &str, kind: &str, mode: u32| -> Result<(), String> {
        let p = d.join(rel);
        let m = p
            .symlink_metadata()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        let is = if m.is_dir() {
            "dir"
        } else if m.is_file() {
            "file"
        } else {
            "other"
        };
        if is != kind || m.uid() != 0 || m.gid() != 0 || m.mode() & 0o7777 != mode {
            return Err(format!(
                "{} is now a {is} of {}:{} mode {:o} (was a root {kind} of mode {mode:o})",
                p.display(),
                m.uid(),
                m.gid(),
                m.mode() & 0o7777
            ));
        }
        Ok(())
    };
    Some(
        check("id", "file", 0o755)
            .and_then(|_| check("dir", "dir", 0o755))
            .and_then(|_| check("secret", "file", 0o600)),
    )
}

/// Manifest requests (any answer) for one repository, from the plain-HTTP registry's log.
#[allow(dead_code)]
pub fn manifest_gets(repo: &str) -> usize {
    let log = PathBuf::from(service("LPMX_TEST_LOGS").unwrap()).join("registry-http.log");
    let text = std::fs::read_to_string(&log).unwrap();
    text.lines()
        .filter(|l| l.contains(&format!("\"GET /v2/{repo}/manifests/")))
        .count()
}

/// Whether the skip `name` was asked for: `LPMX_TEST_ALLOW_SKIP` lists names, `,`-separated
/// (`mpi`, `openat2`, `multi-platform`...). A test that cannot check what it claims fails
/// unless its skip is listed there.
#[allow(dead_code)]
pub fn skip_allowed(name: &str) -> bool {
    std::env::var("LPMX_TEST_ALLOW_SKIP")
        .is_ok_and(|v| v.split(',').any(|s| s.trim() == name || s.trim() == "all"))
}

/// A skip of `name` for `why`: allowed (printed, returns) only when LPMX_TEST_ALLOW_SKIP
/// lists `name`; otherwise the test fails, saying how to skip it.
#[allow(dead_code)]
pub fn skip(name: &str, why: &str) {
    if skip_allowed(name) {
        eprintln!("skipped ({name}, as LPMX_TEST_ALLOW_SKIP asks): {why}");
    } else {
        panic!(
            "{why}: this test cannot check what it claims; LPMX_TEST_ALLOW_SKIP={name} skips it"
        );
    }
}

/// Polls `cond` every 20 ms until it holds, failing with `what` after `limit`.
#[allow(dead_code)]
pub fn wait_until(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The statuses of the blob GETs for one repository, per digest, in the order the
/// plain-HTTP registry logged them.
pub fn blob_get_statuses(repo: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let log = PathBuf::from(service("LPMX_TEST_LOGS").unwrap()).join("registry-http.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let prefix = format!("\"GET /v2/{repo}/blobs/");
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in text.lines() {
        let Some(i) = line.find(&prefix) else {
            continue;
        };
        let rest = &line[i + prefix.len()..];
        let digest = rest.split_whitespace().next().unwrap().to_string();
        let status = rest
            .split('"')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("")
            .to_string();
        out.entry(digest).or_default().push(status);
    }
    out
}

/// Waits until the plain-HTTP registry's access log holds every request made before this
/// call: it sends a request of its own, with a unique path, and waits for that line (the
/// log is written in order), instead of sleeping and hoping.
#[allow(dead_code)]
pub fn registry_log_flushed(reg: &str) {
    use std::io::{Read, Write};
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let marker = format!(
        "/v2/lpmx-log-marker-{}-{}/tags/list",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let mut s = std::net::TcpStream::connect(reg).unwrap();
    write!(
        s,
        "GET {marker} HTTP/1.1\r\nHost: {reg}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    let log = PathBuf::from(service("LPMX_TEST_LOGS").unwrap()).join("registry-http.log");
    wait_until(
        "the registry logged the marker request",
        std::time::Duration::from_secs(30),
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&marker)),
    );
}

/// A loopback port that refuses every connection and that no other process can take while
/// this lives: a TCP socket bound to it that never listens (connecting gets ECONNREFUSED).
/// A port merely released after binding could be bound by anything on the machine.
#[allow(dead_code)]
pub struct DeadPort {
    fd: std::os::fd::OwnedFd,
    pub addr: String,
}

impl DeadPort {
    #[allow(dead_code)]
    pub fn new() -> DeadPort {
        use std::os::fd::FromRawFd;
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            let r = libc::bind(raw, &sa as *const _ as *const libc::sockaddr, len);
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let mut got: libc::sockaddr_in = std::mem::zeroed();
            let mut glen = len;
            let r = libc::getsockname(raw, &mut got as *mut _ as *mut libc::sockaddr, &mut glen);
            assert_eq!(r, 0, "getsockname: {}", std::io::Error::last_os_error());
            let addr = format!("127.0.0.1:{}", u16::from_be(got.sin_port));
            DeadPort { fd, addr }
        }
    }
}

/// `cache verify` of this test's cache finds nothing.
#[allow(dead_code)]
pub fn verify_ok(env: &Env) {
    verify_ok_with(env.cmd());
}

/// `cache verify` with `cmd` (its environment names the cache) finds nothing.
#[allow(dead_code)]
pub fn verify_ok_with(mut cmd: Command) {
    let out = run(cmd.args(["cache", "verify"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "cache verify: {}{}",
        stdout(&out),
        stderr(&out)
    );
}
