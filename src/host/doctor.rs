//! `lpmx-job doctor`: what this host allows, each line a verdict and, on failure, the fix.
//! Everything that matters is tried for real (a namespace, a mount, a lock between two
//! processes); sysctls are only read to explain a refusal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cache::lock;
use crate::config::Config;
use crate::host::{self, FsClass};
use crate::host::{scheduler, userns};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    Info,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Info => "info",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub host: String,
    pub user: String,
    pub uid: u32,
    pub kernel: String,
    pub arch: String,
    pub cache_dir: Option<PathBuf>,
    /// The lock mode the cache will use; None when the cache directory is unusable.
    pub lock_mode: Option<&'static str>,
    pub can_run: bool,
    pub checks: Vec<Check>,
}

/// Below this, pulling even a small MPI image will fail half-way.
const LOW_SPACE: u64 = 2 << 30;
/// Overlayfs became mountable inside a user namespace in Linux 5.11.
const OVERLAY_USERNS_KERNEL: (u32, u32) = (5, 11);
const LOCK_PROBE_DEADLINE: Duration = Duration::from_secs(10);

fn check(
    name: &'static str,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
        fix,
    }
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

pub fn run(config: &Config) -> Report {
    let mut checks = Vec::new();
    let kernel = host::kernel_release();
    let uid = host::uid();

    if uid == 0 && host::in_user_namespace() {
        checks.push(check(
            "identity",
            Verdict::Info,
            "uid 0 inside a user namespace (not root on the host)",
            None,
        ));
    } else if uid == 0 {
        checks.push(check(
            "identity",
            Verdict::Warn,
            "running as root: these checks say what root may do, not what your users may",
            Some("run `lpmx-job doctor` as an ordinary user".into()),
        ));
    } else {
        checks.push(check(
            "identity",
            Verdict::Ok,
            format!("ordinary user {} (uid {uid})", host::user_name()),
            None,
        ));
    }

    let version = host::parse_kernel_version(&kernel);
    checks.push(match version {
        Some(v) if v >= OVERLAY_USERNS_KERNEL => {
            check("kernel", Verdict::Ok, format!("Linux {kernel}"), None)
        }
        Some(_) => check(
            "kernel",
            Verdict::Warn,
            format!("Linux {kernel}: older than 5.11, so overlayfs is not mountable without root"),
            Some(
                "nothing to do: lpmx-job flattens layers instead (slower first start per image)"
                    .into(),
            ),
        ),
        None => check(
            "kernel",
            Verdict::Warn,
            format!("cannot parse kernel release {kernel:?}"),
            None,
        ),
    });

    let can_enter = namespace_checks(&mut checks);

    checks.push(fuse_check());

    let (cache_ok, lock_mode) = cache_checks(config, &mut checks);

    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    checks.push(match scheduler::detect_batch(&env) {
        Some(d) => check(
            "batch system",
            Verdict::Info,
            format!("inside a {} job", d.describe()),
            None,
        ),
        None => check(
            "batch system",
            Verdict::Info,
            "not inside a batch job (Slurm, PBS, SGE, LSF, HTCondor, Flux)",
            None,
        ),
    });
    checks.push(match scheduler::detect_mpi(&env) {
        Some(d) => check(
            "MPI launch",
            Verdict::Info,
            format!("started by {}", d.describe()),
            None,
        ),
        None => check(
            "MPI launch",
            Verdict::Info,
            "no MPI launcher environment (PMIx, PMI2, PMI1, mpirun)",
            None,
        ),
    });

    checks.extend(mpi_checks(config));

    Report {
        host: host::hostname().to_string(),
        user: host::user_name(),
        uid,
        kernel,
        arch: host::machine(),
        cache_dir: config.settings.cache.dir.clone(),
        lock_mode,
        can_run: can_enter && cache_ok,
        checks,
    }
}

/// What `run --mpi host` would inject, per MPI ABI the host has.
fn mpi_checks(config: &Config) -> Vec<Check> {
    use crate::container::mpi::{host_injection, Family};
    let h = &config.settings.mpi.host;
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let mut last_err = None;
    for fam in [Family::Mpich, Family::OpenMpi] {
        match host_injection("doctor", &h.libs, &h.binds, Some(fam)) {
            Ok(inj) if !seen.contains(&inj.main) => {
                seen.push(inj.main.clone());
                let names: Vec<&str> = inj.libs.keys().map(String::as_str).collect();
                let binds = if inj.binds.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; binds {}",
                        inj.binds
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                out.push(check(
                    "MPI host",
                    Verdict::Info,
                    format!(
                        "run --mpi host injects {} from {} into images built against it, at {}: {}{binds}",
                        inj.abi,
                        inj.main.display(),
                        crate::container::mpi::LIB_DIR,
                        names.join(" ")
                    ),
                    None,
                ));
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    if out.is_empty() {
        let configured = !h.libs.is_empty();
        out.push(check(
            "MPI host",
            if configured {
                Verdict::Warn
            } else {
                Verdict::Info
            },
            match last_err {
                Some(e) => e.to_string().replacen("doctor: ", "", 1),
                None => "no host MPI library found".into(),
            },
            configured.then(|| "fix mpi.host.libs in the configuration".to_string()),
        ));
    }
    out
}

/// Returns whether containers can be entered (user+mount namespace and tmpfs work).
fn namespace_checks(checks: &mut Vec<Check>) -> bool {
    let scratch = match tempdir("lpmx-doctor") {
        Ok(d) => d,
        Err(e) => {
            checks.push(check(
                "user namespace",
                Verdict::Fail,
                format!("cannot make a probe directory: {e}"),
                None,
            ));
            return false;
        }
    };
    let report = userns::probe(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let r = match report {
        Ok(r) => r,
        Err(e) => {
            checks.push(check(
                "user namespace",
                Verdict::Fail,
                format!("probe failed: {e}"),
                None,
            ));
            return false;
        }
    };
    if let userns::Step::Failed(errno) = r.userns {
        let why = userns::explain_denial(errno, &userns::HostFacts::read());
        checks.push(check(
            "user namespace",
            Verdict::Fail,
            format!("unprivileged user namespaces are denied: {}", why.reason),
            Some(why.fix),
        ));
        return false;
    }
    if let userns::Step::Failed(errno) = r.uid_map {
        checks.push(check(
            "user namespace",
            Verdict::Fail,
            format!(
                "a user namespace was created but mapping your uid/gid failed: {}",
                errno_text(errno)
            ),
            Some(
                "ask the site's administrators; a security module may restrict /proc/self/uid_map"
                    .into(),
            ),
        ));
        return false;
    }
    checks.push(check(
        "user namespace",
        Verdict::Ok,
        "user namespaces can be created and your uid and gid mapped",
        None,
    ));
    if let userns::Step::Failed(errno) = r.mountns {
        checks.push(check(
            "mount namespace",
            Verdict::Fail,
            format!("mount namespace refused: {}", errno_text(errno)),
            Some(
                "ask the site's administrators to allow mount namespaces (user.max_mnt_namespaces)"
                    .into(),
            ),
        ));
        return false;
    }
    checks.push(check(
        "mount namespace",
        Verdict::Ok,
        "private mount namespace inside the user namespace",
        None,
    ));
    if let userns::Step::Failed(errno) = r.tmpfs {
        checks.push(check(
            "tmpfs",
            Verdict::Fail,
            format!("tmpfs cannot be mounted inside the namespace: {}", errno_text(errno)),
            Some("ask the site's administrators; per-task scratch space needs tmpfs in a user namespace".into()),
        ));
        return false;
    }
    checks.push(check(
        "tmpfs",
        Verdict::Ok,
        "tmpfs mounts inside the namespace (per-task scratch)",
        None,
    ));
    checks.push(match r.overlay {
        userns::Step::Ok => check("overlayfs", Verdict::Ok, "overlayfs mounts inside the namespace (layers are stacked, not copied)", None),
        userns::Step::Failed(errno) => check(
            "overlayfs",
            Verdict::Warn,
            format!("overlayfs refused inside the namespace: {}", errno_text(errno)),
            Some("nothing to do: lpmx-job builds a flattened tree of hard links once per image instead".into()),
        ),
        userns::Step::Skipped => check("overlayfs", Verdict::Warn, "not tried", None),
    });
    true
}

fn fuse_check() -> Check {
    let dev = Path::new("/dev/fuse");
    let detail = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => {
            "/dev/fuse is present and usable (not needed: lpmx-job unions layers without FUSE)"
                .to_string()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "/dev/fuse is absent (not needed: lpmx-job unions layers without FUSE)".to_string()
        }
        Err(e) => format!(
            "/dev/fuse cannot be opened: {e} (not needed: lpmx-job unions layers without FUSE)"
        ),
    };
    check("/dev/fuse", Verdict::Info, detail, None)
}

/// Returns (cache usable, lock mode).
fn cache_checks(config: &Config, checks: &mut Vec<Check>) -> (bool, Option<&'static str>) {
    let origin = config
        .origins
        .get("cache.dir")
        .map(|(_, s)| s.to_string())
        .unwrap_or_default();
    let dir = match config.settings.cache_dir() {
        Ok(d) => d.to_path_buf(),
        Err(e) => {
            checks.push(check(
                "cache directory",
                Verdict::Fail,
                e.to_string(),
                Some("set LPMX_CACHE or pass --cache DIR".into()),
            ));
            return (false, None);
        }
    };
    if let Err(e) = fs_err::create_dir_all(&dir) {
        checks.push(check(
            "cache directory",
            Verdict::Fail,
            format!("cannot create the cache directory ({origin}): {e}"),
            Some("set LPMX_CACHE or --cache to a directory you can write".into()),
        ));
        return (false, None);
    }
    let fs = match host::filesystem_of(&dir) {
        Ok(fs) => fs,
        Err(e) => {
            checks.push(check(
                "cache directory",
                Verdict::Fail,
                format!("statfs {}: {e}", dir.display()),
                None,
            ));
            return (false, None);
        }
    };
    let class = match fs.class {
        FsClass::Local => "local disk",
        FsClass::Memory => "memory of this node; gone at reboot and not shared with other nodes",
        FsClass::Network => "network filesystem, shared between nodes",
        FsClass::Parallel => "parallel filesystem, shared between nodes",
        FsClass::Stacked => "stacked filesystem",
        FsClass::Unknown => "unrecognised filesystem",
    };
    checks.push(check(
        "cache directory",
        Verdict::Ok,
        format!("{} ({origin}) on {}: {class}", dir.display(), fs.name),
        None,
    ));

    let mode = match lock::probe(&dir, LOCK_PROBE_DEADLINE) {
        Ok(r) => {
            // The mode every node of this cache uses: forced by config, else recorded in the
            // cache by whoever opened it first, else what this host's probe would record.
            let recorded = std::fs::read_to_string(dir.join(crate::cache::LOCKS).join("MODE"))
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse::<lock::Mode>().ok());
            let (in_use, why) = match (config.settings.cache.lock_mode.forced(), recorded) {
                (Some(m), _) => (m, "forced by cache.lock_mode"),
                (None, Some(m)) => (m, "recorded in the cache"),
                (None, None) => (r.mode, "probed here; recorded by the first pull"),
            };
            let mut detail = format!(
                "mode {} ({why}): flock: {}; fcntl OFD locks: {} (in {})",
                in_use.as_str(),
                lock::describe(r.flock),
                lock::describe(r.fcntl_ofd),
                dir.display()
            );
            let works_here = match in_use {
                lock::Mode::Flock => r.flock == lock::Trial::Excludes,
                lock::Mode::FcntlOfd => r.fcntl_ofd == lock::Trial::Excludes,
                lock::Mode::LockDir => true,
            };
            let (verdict, fix) = if !works_here {
                detail.push_str("; this host cannot take the locks the cache's other users take");
                (
                    Verdict::Fail,
                    Some("set cache.lock_mode: lockdir for every user of this cache, or mount its filesystem with working locks".into()),
                )
            } else if in_use == lock::Mode::LockDir {
                detail.push_str("; lock directories with a heartbeat (slower than a kernel lock)");
                (Verdict::Warn, Some("mount the filesystem with flock support (Lustre: -o flock; NFS: a working lockd)".into()))
            } else {
                (Verdict::Ok, None)
            };
            let usable = works_here;
            checks.push(check("cache locking", verdict, detail, fix));
            if !usable {
                return (false, Some(in_use.as_str()));
            }
            Some(in_use.as_str())
        }
        Err(e) => {
            checks.push(check(
                "cache locking",
                Verdict::Fail,
                e.to_string(),
                Some("the cache directory must be writable by you".into()),
            ));
            return (false, None);
        }
    };

    let free = format!(
        "{} free of {} on {}",
        host::human_bytes(fs.free_bytes),
        host::human_bytes(fs.total_bytes),
        fs.path.display()
    );
    checks.push(if fs.free_bytes < LOW_SPACE {
        check(
            "free space",
            Verdict::Warn,
            free,
            Some("free space or point LPMX_CACHE at a larger filesystem".into()),
        )
    } else {
        check("free space", Verdict::Ok, free, None)
    });
    (true, mode)
}

/// A fresh private directory under the temporary directory.
fn tempdir(prefix: &str) -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let p = base.join(format!("{prefix}.{}.{}", std::process::id(), n));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", p.display()),
                ))
            }
        }
    }
    Err(std::io::Error::other(format!(
        "no free name for {prefix} in {}",
        base.display()
    )))
}

impl Report {
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "lpmx-job doctor on {} (Linux {}, {}), user {} (uid {})\n",
            self.host, self.kernel, self.arch, self.user, self.uid
        );
        for c in &self.checks {
            out.push_str(&format!(
                "  {:<5} {:<16} {}\n",
                c.verdict.label(),
                c.name,
                c.detail
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("  {:<5} {:<16} fix: {fix}\n", "", ""));
            }
        }
        out.push_str(if self.can_run {
            "verdict: containers can run on this host\n"
        } else {
            "verdict: containers cannot run on this host (see FAIL lines above)\n"
        });
        out
    }
}
