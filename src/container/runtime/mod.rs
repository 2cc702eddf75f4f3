//! Entering a container, as Charliecloud's `ch-run` does: this process itself unshares a user
//! and a mount namespace (nothing else: network, IPC, PID and UTS stay the host's), builds
//! the container's root over the image tree, pivots into it and execs the command in place.
//! No supervisor, no fork: the command is this process, with the job's stdin, stdout, stderr
//! and signals, and its exit status is ours. (With `run --host-cmd`, the only exception, a
//! forked child enters and the parent stays on the host as the bridge's supervisor: see
//! `crate::container::bridge`; [`BridgeMounts`] are then mounted at `/.lpmx`.)
//!
//! The image tree `D` (from `rootfs::image_tree`) holds `D/root/`, the image's files (hard
//! links into the shared cache, never written), and `D/mnt/`, an empty directory where a
//! per-task tmpfs is mounted in the private mount namespace:
//!
//! ```text
//! D/mnt            tmpfs (this task only)
//! D/mnt/root       the container's root: D/root itself bound read-only when the task
//!                  writes nothing there (read-only, and every mount point already in the
//!                  image: see [`Ctx::direct_possible`]), as ch-run does; else
//!                  overlay(lower D/root, upper D/mnt/upper), or, where
//!                  overlayfs is refused, the tmpfs with every top-level entry of D/root
//!                  bound read-only into it
//! D/mnt/passwd     /etc/passwd and /etc/group with the user's entry, bound over the image's
//! D/mnt/lpmx       with --host-cmd only: the bridge's entries, bound read-only at /.lpmx
//! ```
//! Then the host's directories ([`DEFAULT_BINDS`]) and the user's `--bind`s are mounted, the
//! root is made read-only (unless `--write`), and `pivot_root` makes it `/`.
//!
//! Every system call goes through [`syscall::Syscall`], so the whole plan is tested without
//! privileges against [`syscall::Recorder`].

pub mod identity;
pub mod paths;
pub mod syscall;

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::host::userns::{explain_denial, HostFacts};
use identity::Identity;
use paths::{normalize, walk_in_root};
use syscall::{Kind, Syscall};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{image}: lpmx-job must enter the namespaces from a single thread, but the process \
         has {threads} threads on {host} (a bug in lpmx-job: please report it)"
    )]
    Threads {
        image: String,
        threads: usize,
        host: String,
    },
    #[error("{image}: {host} refuses an unprivileged user namespace: {reason}; {fix}")]
    Userns {
        image: String,
        host: String,
        reason: String,
        fix: String,
    },
    #[error("{image}: {what} {path} on {host}: {source}")]
    Setup {
        image: String,
        what: String,
        path: PathBuf,
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{image}: bind source {src} does not exist on {host} (--bind {spec})")]
    BindSource {
        image: String,
        src: PathBuf,
        spec: String,
        host: String,
    },
    #[error("{image}: cannot mount {src} on {dst}: {why}")]
    MountPoint {
        image: String,
        src: PathBuf,
        dst: PathBuf,
        why: String,
    },
    #[error(
        "{image}: --write={dir} needs overlayfs, which {host} refuses here ({source}); use \
         --write (a scratch root that vanishes with the task) or a DIR on a local disk"
    )]
    PersistentNeedsOverlay {
        image: String,
        dir: PathBuf,
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{image}: working directory {dir}: {why}")]
    Workdir {
        image: String,
        dir: PathBuf,
        why: String,
    },
    #[error("{image}: no command: the image has no Entrypoint or Cmd; give one after the image")]
    NoCommand { image: String },
    #[error("{image}: {cmd}: command not found in the container (PATH={path})")]
    NotFound {
        image: String,
        cmd: String,
        path: String,
    },
    #[error("{image}: {cmd}: {why}")]
    NotExecutable {
        image: String,
        cmd: String,
        why: String,
    },
}

impl Error {
    /// The exit status the command-line contract gives this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotFound { .. } => crate::exit::NOT_FOUND,
            Error::NotExecutable { .. } => crate::exit::NOT_EXECUTABLE,
            _ => crate::exit::OWN_FAILURE,
        }
    }
}

/// Where the host side of a default bind comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Path(&'static str),
    /// `$HOME`, else the password database's home.
    Home,
    /// The directory lpmx-job was started in.
    Cwd,
    /// `$TMPDIR`, when set.
    TmpDir,
}

/// A host path bound at the same path inside every container.
#[derive(Debug, Clone, Copy)]
pub struct DefaultBind {
    pub from: From,
    pub ro: bool,
    pub why: &'static str,
}

/// Host paths every container sees, in mount order (as `ch-run`'s `BINDS_DEFAULT[]`). A
/// source missing on this host is skipped. Directories are bound recursively.
pub const DEFAULT_BINDS: &[DefaultBind] = &[
    DefaultBind {
        from: From::Path("/proc"),
        ro: false,
        why: "the host's /proc (a new proc needs a PID namespace)",
    },
    DefaultBind {
        from: From::Path("/sys"),
        ro: true,
        why: "devices and topology (hwloc, NUMA), read-only",
    },
    // Recursive, so /dev/shm (MPI shared memory) comes with it, whether it is a mount of
    // its own or not: one mount call less per task than binding it again.
    DefaultBind {
        from: From::Path("/dev"),
        ro: false,
        why: "GPUs, InfiniBand, /dev/null, /dev/shm...",
    },
    DefaultBind {
        from: From::Path("/tmp"),
        ro: false,
        why: "the host's /tmp: PMIx rendezvous, MPI session dirs",
    },
    DefaultBind {
        from: From::Home,
        ro: false,
        why: "the user's home",
    },
    DefaultBind {
        from: From::Cwd,
        ro: false,
        why: "the directory the task started in",
    },
    DefaultBind {
        from: From::TmpDir,
        ro: false,
        why: "the job's $TMPDIR",
    },
    DefaultBind {
        from: From::Path("/etc/hosts"),
        ro: false,
        why: "the cluster's host names",
    },
    DefaultBind {
        from: From::Path("/etc/resolv.conf"),
        ro: false,
        why: "the cluster's DNS",
    },
];

/// Host directories never bound as $HOME, the cwd or $TMPDIR (nor anything below them): they
/// would hide the image's own system files.
pub const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr",
];

/// `PATH` searched when the container's environment has none.
const FALLBACK_PATH: &str = crate::container::environ::DEFAULT_PATH;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub ro: bool,
    /// What the user wrote, for messages; None for a default bind.
    pub spec: Option<String>,
}

/// The host paths the default binds take their sources from.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    pub home: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub tmpdir: Option<PathBuf>,
}

impl HostView {
    pub fn from_process() -> HostView {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        HostView {
            home: var("HOME").or_else(crate::host::passwd_home),
            cwd: std::env::current_dir().ok(),
            tmpdir: var("TMPDIR"),
        }
    }
}

/// The default binds for this host, in order: each user directory ($HOME, cwd, $TMPDIR)
/// must be absolute, outside [`SYSTEM_DIRS`], and not already inside an earlier bind (the
/// same files would be bound twice).
pub fn default_binds(host: &HostView) -> Vec<Bind> {
    let mut out: Vec<Bind> = Vec::new();
    for d in DEFAULT_BINDS {
        let src = match d.from {
            From::Path(p) => PathBuf::from(p),
            From::Home => match &host.home {
                Some(p) => p.clone(),
                None => continue,
            },
            From::Cwd => match &host.cwd {
                Some(p) => p.clone(),
                None => continue,
            },
            From::TmpDir => match &host.tmpdir {
                Some(p) => p.clone(),
                None => continue,
            },
        };
        if !matches!(d.from, From::Path(_)) {
            if !src.is_absolute() {
                continue;
            }
            let n = normalize(&src);
            if n == Path::new("/")
                || SYSTEM_DIRS.iter().any(|s| n.starts_with(s))
                || out.iter().any(|b| n.starts_with(&b.dst))
            {
                continue;
            }
        }
        let dst = normalize(&src);
        out.push(Bind {
            src,
            dst,
            ro: d.ro,
            spec: None,
        });
    }
    out
}

/// Adds, after the user's binds, the host directories the job's MPI launcher names in the
/// environment ([`crate::host::scheduler::JOB_DIR_VARS`]: PMIx's server directory and stores
/// under slurmd's spool), each bound at its own path, unless a default bind or an earlier
/// bind already covers it, or it lies in a system directory.
pub fn with_job_binds(mut binds: Vec<Bind>, note: &dyn Fn(&str)) -> Vec<Bind> {
    use std::path::Path;
    let var = |n: &str| std::env::var_os(n).map(PathBuf::from);
    let mut covered: Vec<PathBuf> = ["/tmp", "/dev/shm", "/dev", "/proc", "/sys"]
        .iter()
        .map(PathBuf::from)
        .chain(var("TMPDIR"))
        .chain(var("HOME"))
        .chain(std::env::current_dir().ok())
        .filter(|p| p.is_absolute() && p != Path::new("/"))
        .collect();
    covered.extend(binds.iter().map(|b| b.dst.clone()));
    let system = |p: &Path| SYSTEM_DIRS.iter().any(|d| p.starts_with(d));
    for name in crate::host::scheduler::JOB_DIR_VARS {
        let Some(p) = var(name) else { continue };
        let Ok(p) = p.canonicalize() else { continue };
        if !p.is_dir() || p == Path::new("/") || system(&p) {
            continue;
        }
        if covered.iter().any(|c| p.starts_with(c)) {
            continue;
        }
        note(&format!("binding {} (from {name})", p.display()));
        covered.push(p.clone());
        binds.push(Bind {
            src: p.clone(),
            dst: p,
            ro: false,
            spec: None,
        });
    }
    binds
}

/// Parses `-b/--bind SRC[:DST[:ro|rw]]`; a relative SRC is taken from `cwd`.
pub fn parse_bind(spec: &str, cwd: &Path) -> std::result::Result<Bind, String> {
    let bad = |why: &str| format!("--bind {spec:?}: {why}; give SRC[:DST[:ro]]");
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opt) = match parts.as_slice() {
        [s] => (*s, *s, None),
        [s, d] => (*s, *d, None),
        [s, d, o] => (*s, *d, Some(*o)),
        _ => return Err(bad("too many `:`")),
    };
    if src.is_empty() {
        return Err(bad("SRC is empty"));
    }
    let ro = match opt {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => return Err(bad(&format!("unknown option {o:?} (ro or rw)"))),
    };
    let src = if Path::new(src).is_absolute() {
        PathBuf::from(src)
    } else {
        cwd.join(src)
    };
    let dst = if dst == parts[0] {
        normalize(&src)
    } else {
        if !Path::new(dst).is_absolute() {
            return Err(bad("DST must be an absolute path inside the container"));
        }
        normalize(Path::new(dst))
    };
    if dst == Path::new("/") {
        return Err(bad("DST cannot be the container's root"));
    }
    Ok(Bind {
        src,
        dst,
        ro,
        spec: Some(spec.to_string()),
    })
}

/// The command to run: with a user CMD, that CMD (the Entrypoint in front only with
/// `--use-entrypoint`); without, the image's Entrypoint + Cmd.
pub fn command_line(
    entrypoint: &[String],
    image_cmd: &[String],
    user_cmd: &[String],
    use_entrypoint: bool,
) -> Vec<String> {
    match (user_cmd.is_empty(), use_entrypoint) {
        (true, _) => entrypoint.iter().chain(image_cmd).cloned().collect(),
        (false, true) => entrypoint.iter().chain(user_cmd).cloned().collect(),
        (false, false) => user_cmd.to_vec(),
    }
}

/// How writable the container's root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// The default: the root is remounted read-only (binds keep their own mode).
    ReadOnly,
    /// `--write`: writes land in the task's tmpfs and vanish with it.
    Scratch,
    /// `--write=DIR`: writes land in DIR/upper (overlay work dir DIR/work) and persist.
    Persistent(PathBuf),
}

/// The id the user namespace maps: `inside` is seen in the container for the host's `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub inside_uid: u32,
    pub outside_uid: u32,
    pub inside_gid: u32,
    pub outside_gid: u32,
}

/// Everything `enter` needs; built by the `run` verb from flags, the image config and the host.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The image as the user named it, for messages.
    pub image: String,
    /// The image tree: `tree/root` (never written) and `tree/mnt` (an empty mount point).
    pub tree: PathBuf,
    pub ids: IdMap,
    pub identity: Identity,
    pub write: Write,
    pub default_binds: Vec<Bind>,
    pub user_binds: Vec<Bind>,
    /// `-w/--workdir`.
    pub workdir: Option<PathBuf>,
    /// The image config's `WorkingDir`.
    pub image_workdir: Option<PathBuf>,
    /// The host directory lpmx-job started in.
    pub host_cwd: Option<PathBuf>,
    /// The user gave the command (`run IMG CMD...`), rather than running the image's own
    /// Entrypoint + Cmd: the bound host directory then comes before the image's WorkingDir.
    pub command_given: bool,
    /// `size=` of the task's tmpfs; None for the kernel's default (half the memory).
    pub tmpfs_size: Option<String>,
    /// Try overlayfs first (false: go straight to the bind fallback, for tests).
    pub try_overlay: bool,
    /// `--host-cmd`: what the host command bridge needs inside (see `crate::container::bridge`).
    pub bridge: Option<BridgeMounts>,
    /// `--mpi host`: host libraries bound at `crate::container::mpi::LIB_DIR`/NAME.
    pub mpi_libs: Option<BTreeMap<String, PathBuf>>,
}

/// The in-container end of the host command bridge (see `crate::container::bridge`): the lpmx-job
/// executable bound read-only at `/.lpmx/lib/lpmx-bridge`, the host's dynamic loader and C
/// libraries it needs at `/.lpmx/lib/lpmx-job.libs/`, an entry in `/.lpmx/bin/` for each
/// bridged name (a `#!` script running the executable through the host's loader, or a
/// symlink to a static executable), created in the task's scratch layer, and the
/// supervisor's private socket directory bound at `/.lpmx/bridge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeMounts {
    /// The executable to bind.
    pub exe: PathBuf,
    /// The host's dynamic loader, when the executable has one.
    pub loader: Option<PathBuf>,
    /// The shared libraries the executable loaded (host paths, named as loaded).
    pub libs: Vec<PathBuf>,
    /// The host directory (mode 0700) holding the supervisor's socket.
    pub socket_dir: PathBuf,
    /// The bridged names.
    pub names: Vec<String>,
}

/// What `enter` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    /// Whether the root is an overlay (else the image tree bound directly, or the bind
    /// fallback).
    pub overlay: bool,
    /// Whether the root is the image tree itself, bound read-only.
    pub direct: bool,
    /// The working directory inside.
    pub workdir: PathBuf,
}

/// Checks that this process has one thread: `unshare(CLONE_NEWUSER)` refuses otherwise, and
/// threads started earlier (a pull's) would stay behind in the host's namespaces.
pub fn ensure_single_threaded(sys: &dyn Syscall, image: &str) -> Result<()> {
    let threads = sys
        .thread_count()
        .map_err(|e| setup(image, "reading", "/proc/self/status", e))?;
    if threads != 1 {
        return Err(Error::Threads {
            image: image.into(),
            threads,
            host: crate::host::hostname().into(),
        });
    }
    Ok(())
}

fn setup(image: &str, what: &str, path: impl Into<PathBuf>, source: io::Error) -> Error {
    Error::Setup {
        image: image.into(),
        what: what.into(),
        path: path.into(),
        host: crate::host::hostname().into(),
        source,
    }
}

const MS_BIND_REC: libc::c_ulong = libc::MS_BIND | libc::MS_REC;

/// Why a mount point cannot be created somewhere: a path below it is a host directory or a
/// read-only image directory.
struct NoCreate {
    under: PathBuf,
    why: &'static str,
}

struct Ctx<'a> {
    sys: &'a dyn Syscall,
    spec: &'a Spec,
    log: &'a dyn Fn(&str),
    /// The container's root on the host: `tree/mnt/root`.
    root: PathBuf,
    scratch: PathBuf,
    overlay: bool,
    no_create: Vec<NoCreate>,
    /// Host paths of the tmpfs patches of a direct root (see [`Ctx::direct_plan`]).
    patches: Vec<PathBuf>,
    /// Bind sources already looked at (by [`Ctx::direct_plan`]), so as not to look twice.
    src_kinds: std::cell::RefCell<Vec<(PathBuf, Kind)>>,
}

impl Ctx<'_> {
    fn fail(&self, what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let (image, what, path) = (
            self.spec.image.clone(),
            what.to_string(),
            path.to_path_buf(),
        );
        move |e| setup(&image, &what, path, e)
    }

    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> Result<()> {
        self.sys
            .mount(src, target, fstype, flags, data)
            .map_err(self.fail(&format!("mounting {}", fstype.unwrap_or("a bind")), target))
    }

    /// A bind, then, if read-only, made so: a directory's with every mount below it (the
    /// host's /sys holds cgroup and other file systems).
    fn bind(&self, src: &Path, target: &Path, dir: bool, ro: bool) -> io::Result<()> {
        let flags = if dir { MS_BIND_REC } else { libc::MS_BIND };
        self.sys.mount(Some(src), target, None, flags, None)?;
        if ro {
            self.remount_ro(target, dir)?;
        }
        Ok(())
    }

    /// Read-only by mount_setattr, one call for a whole tree. Where that fails (a kernel
    /// before 5.12, a seccomp filter that does not know the call), a remount of the top mount
    /// alone, repeating the flags the kernel locked on it (nosuid, nodev, noexec, atime): a
    /// user namespace may add flags, never clear them.
    fn remount_ro(&self, target: &Path, recursive: bool) -> io::Result<()> {
        match self.sys.set_read_only(target, recursive) {
            Ok(()) => return Ok(()),
            Err(e) if recursive => (self.log)(&format!(
                "mount_setattr on {}: {e}; the mounts below it keep their own flags",
                target.display()
            )),
            Err(_) => {}
        }
        let locked = self.sys.mount_flags(target)?;
        self.sys.mount(
            None,
            target,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | locked,
            None,
        )
    }

    /// The host path of container path `dst`, created (with its parents) in the scratch layer
    /// if the image lacks it. Where it cannot be created, says why.
    fn mount_point(&self, dst: &Path, dir: bool) -> std::result::Result<PathBuf, String> {
        let w =
            walk_in_root(self.sys, &self.root, dst).map_err(|e| format!("resolving it: {e}"))?;
        self.mount_point_at(w, dir)
    }

    /// [`Ctx::mount_point`] where the walk to it is done.
    fn mount_point_at(
        &self,
        w: paths::Resolved,
        dir: bool,
    ) -> std::result::Result<PathBuf, String> {
        let want = if dir { "directory" } else { "file" };
        match w.kind {
            Some(Kind::Dir) if dir => return Ok(w.path),
            Some(Kind::File | Kind::Other) if !dir => return Ok(w.path),
            Some(k) => {
                return Err(format!(
                    "the container has a {} there but the source is a {want}",
                    match k {
                        Kind::Dir => "directory",
                        _ => "file",
                    }
                ))
            }
            None => {}
        }
        let target = w.path.clone();
        let patched = self.patches.iter().any(|p| target.starts_with(p));
        if let Some(n) = self
            .no_create
            .iter()
            .find(|n| target.starts_with(&n.under))
            .filter(|_| !patched)
        {
            let inside = Path::new("/").join(n.under.strip_prefix(&self.root).unwrap_or(&n.under));
            return Err(format!(
                "it does not exist and would have to be created in {} ({}); create it there \
                 first or choose another destination",
                inside.display(),
                n.why
            ));
        }
        // Only what is missing is made: the walk found the rest.
        let mut p = w.existing().to_path_buf();
        let comps: Vec<_> = target
            .strip_prefix(&p)
            .unwrap_or(Path::new(""))
            .components()
            .collect();
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            let r = if i + 1 == comps.len() && !dir {
                self.sys.create_file(&p, 0o644)
            } else {
                self.sys.mkdir(&p, 0o755)
            };
            r.map_err(|e| format!("creating {}: {e}", p.display()))?;
        }
        Ok(target)
    }

    /// Mounts one bind. A default bind whose source or mount point is missing is skipped.
    fn apply_bind(&mut self, b: &Bind) -> Result<()> {
        let known = self
            .src_kinds
            .borrow()
            .iter()
            .find(|k| k.0 == b.src)
            .map(|k| k.1);
        let kind = match known.map_or_else(|| self.sys.stat_kind(&b.src), Ok) {
            Ok(k) => k,
            Err(e) => {
                return match &b.spec {
                    None => {
                        (self.log)(&format!("not binding {}: {e}", b.src.display()));
                        Ok(())
                    }
                    Some(spec) if e.kind() == io::ErrorKind::NotFound => Err(Error::BindSource {
                        image: self.spec.image.clone(),
                        src: b.src.clone(),
                        spec: spec.clone(),
                        host: crate::host::hostname().into(),
                    }),
                    Some(_) => Err(setup(&self.spec.image, "bind source", &b.src, e)),
                };
            }
        };
        let dir = kind == Kind::Dir;
        let target = match self.mount_point(&b.dst, dir) {
            Ok(t) => t,
            Err(why) if b.spec.is_none() => {
                (self.log)(&format!("not binding {}: {why}", b.dst.display()));
                return Ok(());
            }
            Err(why) => {
                return Err(Error::MountPoint {
                    image: self.spec.image.clone(),
                    src: b.src.clone(),
                    dst: b.dst.clone(),
                    why,
                })
            }
        };
        self.bind(&b.src, &target, dir, b.ro)
            .map_err(self.fail("binding", &b.src))?;
        if dir {
            self.no_create.push(NoCreate {
                under: target,
                why: "a host directory",
            });
        }
        Ok(())
    }

    /// Whether the image tree itself can be the root, bound read-only (cheaper per task than
    /// an overlay, whose set-up and teardown cost about 0.2 ms), and if so the image's empty
    /// directories to cover with a directory of the task's tmpfs each (writable, like the
    /// rest of the task's scratch: a read-only remount costs 30 µs each), so that mount
    /// points missing below them can be made there (`/home` for `/home/alice`, as ch-run's `--home` does). Nothing may
    /// be written in the tree: the root must stay read-only, nothing go to `/.lpmx`, and
    /// every mount point exist in the image with the kind its source has (`/etc/passwd` and
    /// `/etc/group` included) or lie below such an empty directory (not `/`, not a system
    /// directory), none inside another bind (it would then be looked for in the host's
    /// directory, not the image's), and the working directory asked for must exist.
    fn direct_plan(&self) -> Option<Vec<PathBuf>> {
        let s = self.spec;
        if s.write != Write::ReadOnly || s.bridge.is_some() || s.mpi_libs.is_some() {
            return None;
        }
        let lower = s.tree.join("root");
        // Each destination is walked once: the walk says what is there, and if nothing,
        // which ancestor the image has.
        let walk = |p: &Path| walk_in_root(self.sys, &lower, p).ok();
        let is = |p: &Path, dir: bool| match walk(p).and_then(|w| w.kind) {
            Some(Kind::Dir) => dir,
            Some(Kind::File | Kind::Other) => !dir,
            _ => false,
        };
        let mut patches: Vec<PathBuf> = Vec::new();
        let mut dsts: Vec<&Path> = Vec::new();
        for b in s.default_binds.iter().chain(&s.user_binds) {
            let kind = match self.sys.stat_kind(&b.src) {
                Ok(k) => k,
                // A default bind whose source is missing is skipped anyway.
                Err(_) if b.spec.is_none() => continue,
                Err(_) => return None,
            };
            self.src_kinds.borrow_mut().push((b.src.clone(), kind));
            if dsts.iter().any(|d| b.dst.starts_with(d)) {
                return None;
            }
            dsts.push(&b.dst);
            let w = walk(&b.dst)?;
            match w.kind {
                Some(Kind::Dir) if kind == Kind::Dir => continue,
                Some(Kind::File | Kind::Other) if kind != Kind::Dir => continue,
                Some(_) => return None, // there, but of the other kind
                None => {}
            }
            // The deepest ancestor the image has: an empty directory, or no plan. `a` is that
            // ancestor as the container names it, `host` where the image's symlinks lead
            // (`/home` -> `var/home`): the patch goes there, so that nothing is mounted
            // through a link and mount points resolve into it.
            let mut a = b.dst.as_path();
            for _ in 0..w.missing {
                a = a.parent()?;
            }
            let host = w.existing();
            let real = Path::new("/").join(host.strip_prefix(&lower).ok()?);
            let system = [a, real.as_path()]
                .iter()
                .any(|p| *p == Path::new("/") || SYSTEM_DIRS.iter().any(|d| p.starts_with(d)));
            let empty =
                w.existing_kind == Kind::Dir && self.sys.read_dir(host).is_ok_and(|e| e.is_empty());
            let in_bind = |p: &Path| dsts[..dsts.len() - 1].iter().any(|d| p.starts_with(d));
            if system || !empty || in_bind(a) || in_bind(&real) {
                return None;
            }
            if !patches.contains(&real) {
                patches.push(real);
            }
        }
        let ok = ["/etc/passwd", "/etc/group"]
            .iter()
            .all(|f| is(Path::new(f), false))
            && s.workdir
                .iter()
                .chain(&s.image_workdir)
                .all(|w| is(w, true));
        ok.then_some(patches)
    }

    /// The image tree bound read-only as the root, with a directory of the task's tmpfs bound
    /// on each of `patches` (empty image directories where mount points will be made: a bind
    /// costs far less than a tmpfs of its own, whose superblock is made and torn down with
    /// every task); nothing can be created in the tree itself.
    fn direct_root(&mut self, patches: &[PathBuf]) -> Result<()> {
        let (lower, root) = (self.spec.tree.join("root"), self.root.clone());
        self.bind(&lower, &root, true, true)
            .map_err(self.fail("binding", &lower))?;
        let base = self.scratch.join("patch");
        if !patches.is_empty() {
            self.sys
                .mkdir(&base, 0o755)
                .map_err(self.fail("creating", &base))?;
        }
        for (i, p) in patches.iter().enumerate() {
            let (src, at) = (
                base.join(i.to_string()),
                root.join(p.strip_prefix("/").unwrap_or(p)),
            );
            self.sys
                .mkdir(&src, 0o755)
                .map_err(self.fail("creating", &src))?;
            self.mount(Some(&src), &at, None, libc::MS_BIND, None)?;
        }
        self.no_create.push(NoCreate {
            under: root,
            why: "the image's own tree, shared by every task",
        });
        Ok(())
    }

    /// The overlay root, or the error that makes us fall back.
    fn overlay_root(&self) -> Result<io::Result<()>> {
        let (upper, work) = match &self.spec.write {
            Write::Persistent(dir) => {
                for d in [dir.clone(), dir.join("upper"), dir.join("work")] {
                    mkdir_p(self.sys, &d).map_err(self.fail("creating", &d))?;
                }
                (dir.join("upper"), dir.join("work"))
            }
            _ => {
                let (u, w) = (self.scratch.join("upper"), self.scratch.join("work"));
                for d in [&u, &w] {
                    self.sys.mkdir(d, 0o755).map_err(self.fail("creating", d))?;
                }
                (u, w)
            }
        };
        let lower = self.spec.tree.join("root");
        self.premake_parents(&lower, &upper);
        let opts = [&lower, &upper, &work]
            .iter()
            .map(|p| overlay_escape(p))
            .collect::<Option<Vec<_>>>();
        let Some(o) = opts else {
            return Ok(Err(io::Error::other(
                "a path holds a comma, which overlayfs options cannot carry",
            )));
        };
        let data = format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            o[0], o[1], o[2]
        );
        Ok(self.sys.mount(
            Some(Path::new("overlay")),
            &self.root,
            Some("overlay"),
            0,
            Some(&data),
        ))
    }

    /// Makes, in the upper layer before overlayfs is mounted, the directories that mount
    /// points will be created in, where the image's own belong to ids this namespace does not
    /// map. Creating `/home/USER` in the overlay copies `/home` up first, and copy-up gives the
    /// copy the lower directory's owner and group: for a tree of a group cache (group-owned,
    /// or another member's) those are not mapped and the kernel refuses with EOVERFLOW, so
    /// the default binds of $HOME, /etc/hosts and /etc/resolv.conf used to vanish (issue 11
    /// D13). A rootless user namespace can map only the caller's own uid and gid, so the ids
    /// cannot be mapped; a directory already in the upper layer needs no copy-up, and the
    /// overlay merges it with the image's as usual. It takes the image directory's mode and
    /// is owned by the user, as a copy-up in a private cache would be.
    fn premake_parents(&self, lower: &Path, upper: &Path) {
        let s = self.spec;
        let mut dsts: Vec<&Path> = s
            .default_binds
            .iter()
            .chain(&s.user_binds)
            .map(|b| b.dst.as_path())
            .collect();
        dsts.extend([Path::new("/etc/passwd"), Path::new("/etc/group")]);
        dsts.extend(
            s.workdir
                .iter()
                .chain(&s.image_workdir)
                .map(PathBuf::as_path),
        );
        let mapped =
            |(uid, gid, _): (u32, u32, u32)| uid == s.ids.outside_uid && gid == s.ids.outside_gid;
        for dst in dsts {
            let Ok(w) = walk_in_root(self.sys, lower, dst) else {
                continue;
            };
            // Only a mount point that must be created, in a directory of the image.
            if w.kind.is_some() || w.existing_kind != Kind::Dir {
                continue;
            }
            let Ok(rel) = w.existing().strip_prefix(lower) else {
                continue;
            };
            let chain: Vec<PathBuf> = rel
                .components()
                .scan(PathBuf::new(), |acc, c| {
                    acc.push(c);
                    Some(acc.clone())
                })
                .collect();
            let ids: Vec<_> = chain
                .iter()
                .map(|r| self.sys.lstat_ids(&lower.join(r)))
                .collect();
            if ids.iter().all(|i| i.as_ref().is_ok_and(|&i| mapped(i)))
                || ids.iter().any(|i| i.is_err())
            {
                continue;
            }
            for (r, i) in chain.iter().zip(ids) {
                let mode = i.map_or(0o755, |(_, _, m)| m & 0o7777);
                let u = upper.join(r);
                match self.sys.mkdir(&u, mode) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        (self.log)(&format!("not preparing {}: {e}", u.display()));
                        break;
                    }
                }
            }
        }
    }

    /// Without overlayfs: the root is a directory of the tmpfs, made a mount point by binding
    /// it onto itself, holding every top-level entry of the image: directories and files bound
    /// read-only, symlinks copied.
    fn fallback_root(&mut self) -> Result<()> {
        let root = self.root.clone();
        self.mount(Some(&root), &root, None, MS_BIND_REC, None)?;
        let lower = self.spec.tree.join("root");
        let entries = self
            .sys
            .read_dir(&lower)
            .map_err(self.fail("reading", &lower))?;
        for (name, kind) in entries {
            let (src, dst) = (lower.join(&name), root.join(&name));
            match kind {
                Kind::Dir | Kind::File => {
                    let dir = kind == Kind::Dir;
                    let made = if dir {
                        self.sys.mkdir(&dst, 0o755)
                    } else {
                        self.sys.create_file(&dst, 0o644)
                    };
                    made.map_err(self.fail("creating", &dst))?;
                    self.bind(&src, &dst, dir, true)
                        .map_err(self.fail("binding", &src))?;
                    if dir {
                        self.no_create.push(NoCreate {
                            under: dst,
                            why: "an image directory, read-only where overlayfs is refused",
                        });
                    }
                }
                Kind::Symlink => {
                    let t = self
                        .sys
                        .read_link(&src)
                        .map_err(self.fail("reading", &src))?;
                    self.sys
                        .symlink(&t, &dst)
                        .map_err(self.fail("creating", &dst))?;
                }
                Kind::Other => (self.log)(&format!(
                    "skipping {} (not a file, directory or symlink)",
                    src.display()
                )),
            }
        }
        Ok(())
    }

    /// /etc/passwd and /etc/group with the user's entry: new files in the tmpfs, bound over
    /// the image's (which stay untouched).
    fn identity_files(&mut self) -> Result<()> {
        let id = &self.spec.identity;
        let mut id = id.clone();
        let shell = walk_in_root(self.sys, &self.root, Path::new(&id.shell));
        if !shell.is_ok_and(|w| w.kind.is_some()) {
            id.shell = "/bin/sh".into();
        }
        type Gen = fn(&str, &Identity) -> String;
        let files: [(&str, Gen); 2] = [
            ("passwd", identity::passwd_with),
            ("group", identity::group_with),
        ];
        for (name, make) in files {
            let dst = Path::new("/etc").join(name);
            let w = walk_in_root(self.sys, &self.root, &dst);
            let image = match &w {
                Ok(w) if w.kind.is_some() => self.sys.read_file(&w.path).unwrap_or_default(),
                _ => Vec::new(),
            };
            let text = make(&String::from_utf8_lossy(&image), &id);
            let src = self.scratch.join(name);
            self.sys
                .write_file(&src, text.as_bytes())
                .map_err(self.fail("writing", &src))?;
            let made = match w {
                Ok(w) => self.mount_point_at(w, false),
                Err(e) => Err(format!("resolving it: {e}")),
            };
            let target = match made {
                Ok(t) => t,
                Err(why) => {
                    (self.log)(&format!("not providing {}: {why}", dst.display()));
                    continue;
                }
            };
            // Not remounted read-only with the root: these are the task's own copies in its
            // tmpfs, and two mount calls less per task start.
            self.bind(&src, &target, false, false)
                .map_err(self.fail("binding", &src))?;
        }
        Ok(())
    }

    /// `/.lpmx`, before the root is made read-only: a directory of the task's tmpfs (never
    /// the image's root nor a `--write=DIR`), filled with the host command bridge's entries
    /// and `--mpi host`'s libraries, bound read-only; then the host files are bound onto
    /// the entries made for them.
    fn lpmx_dir(
        &mut self,
        bridge: Option<&BridgeMounts>,
        mpi: Option<&BTreeMap<String, PathBuf>>,
    ) -> Result<()> {
        use crate::container::bridge::{
            BIN_DIR, EXE_NAME, LIBS_NAME, LIB_DIR, SOCKET_DIR, TOP_DIR,
        };
        let image = self.spec.image.clone();
        let top = self.scratch.join("lpmx");
        // A container path under /.lpmx, in the tmpfs.
        let at = |p: &str| top.join(Path::new(p).strip_prefix(TOP_DIR).unwrap_or(Path::new(p)));
        let mut dirs = vec![top.clone()];
        let mut files: Vec<(&Path, PathBuf)> = Vec::new();
        if let Some(b) = bridge {
            let lib = at(LIB_DIR);
            let libs = lib.join(LIBS_NAME);
            dirs.extend([at(BIN_DIR), lib.clone(), libs.clone(), at(SOCKET_DIR)]);
            files.push((&b.exe, lib.join(EXE_NAME)));
            for l in b.loader.iter().chain(&b.libs) {
                if let Some(name) = l.file_name() {
                    files.push((l, libs.join(name)));
                }
            }
        }
        if let Some(m) = mpi {
            let dir = at(crate::container::mpi::LIB_DIR);
            dirs.push(dir.clone());
            for (name, src) in m {
                files.push((src, dir.join(name)));
            }
        }
        for d in &dirs {
            self.sys.mkdir(d, 0o755).map_err(self.fail("creating", d))?;
        }
        for (_, dst) in &files {
            self.sys
                .create_file(dst, 0o755)
                .map_err(self.fail("creating", dst))?;
        }
        if let Some(b) = bridge {
            let exe_inside = Path::new(LIB_DIR).join(EXE_NAME);
            for name in &b.names {
                let entry = at(BIN_DIR).join(name);
                let made = match b.loader.as_ref().and_then(|l| l.file_name()) {
                    Some(loader) => {
                        let interp = Path::new(LIB_DIR).join(LIBS_NAME).join(loader);
                        let script = format!("#!{} {}\n", interp.display(), exe_inside.display());
                        self.sys
                            .create_file(&entry, 0o755)
                            .and_then(|()| self.sys.write_file(&entry, script.as_bytes()))
                    }
                    None => self.sys.symlink(&exe_inside, &entry),
                };
                made.map_err(self.fail("creating", &entry))?;
            }
        }
        let target =
            self.mount_point(Path::new(TOP_DIR), true)
                .map_err(|why| Error::MountPoint {
                    image,
                    src: top.clone(),
                    dst: TOP_DIR.into(),
                    why,
                })?;
        self.bind(&top, &target, true, true)
            .map_err(self.fail("binding", &top))?;
        let inside = |p: &Path| target.join(p.strip_prefix(&top).unwrap_or(p));
        for (src, dst) in &files {
            self.bind(src, &inside(dst), false, true)
                .map_err(self.fail("binding", src))?;
        }
        if let Some(b) = bridge {
            self.bind(&b.socket_dir, &inside(&at(SOCKET_DIR)), true, true)
                .map_err(self.fail("binding", &b.socket_dir))?;
        }
        Ok(())
    }

    /// The working directory (the contract in shared/DESIGN.md): `-w` always; then, with a
    /// CMD, the host's cwd when a bind shows it (relative paths in job scripts must work, as
    /// in Apptainer), else the image's WorkingDir; with the image's own command, its
    /// WorkingDir first (Docker's convention), else the bound cwd; else `/`. A missing `-w`
    /// or WorkingDir is created in the scratch layer when possible.
    fn workdir(&self) -> Result<PathBuf> {
        let s = self.spec;
        if let Some(w) = &s.workdir {
            if !w.is_absolute() {
                return Err(Error::Workdir {
                    image: s.image.clone(),
                    dir: w.clone(),
                    why: "must be an absolute path".into(),
                });
            }
            return self
                .mount_point(w, true)
                .map(|_| w.clone())
                .map_err(|why| Error::Workdir {
                    image: s.image.clone(),
                    dir: w.clone(),
                    why,
                });
        }
        let bound_cwd = || {
            let cwd = s.host_cwd.as_ref()?;
            let shown = s
                .default_binds
                .iter()
                .chain(&s.user_binds)
                .any(|b| b.src == b.dst && cwd.starts_with(&b.dst));
            let there =
                walk_in_root(self.sys, &self.root, cwd).is_ok_and(|w| w.kind == Some(Kind::Dir));
            (shown && there).then(|| cwd.clone())
        };
        if s.command_given {
            if let Some(cwd) = bound_cwd() {
                return Ok(cwd);
            }
        }
        if let Some(w) = s.image_workdir.as_ref().filter(|w| w.is_absolute()) {
            match self.mount_point(w, true) {
                Ok(_) => return Ok(w.clone()),
                Err(why) => (self.log)(&format!("image WorkingDir {}: {why}", w.display())),
            }
        }
        if !s.command_given {
            if let Some(cwd) = bound_cwd() {
                return Ok(cwd);
            }
        }
        Ok("/".into())
    }
}

fn mkdir_p(sys: &dyn Syscall, p: &Path) -> io::Result<()> {
    let mut cur = PathBuf::from("/");
    for c in p.components().skip(1) {
        cur.push(c);
        match sys.mkdir(&cur, 0o755) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An overlayfs option value: `:` and `\` escaped; a comma cannot be carried at all.
fn overlay_escape(p: &Path) -> Option<String> {
    let s = p.to_str()?;
    if s.contains(',') {
        return None;
    }
    Some(s.replace('\\', "\\\\").replace(':', "\\:"))
}

/// Enters the container: namespaces, id maps, the root, binds, identity files, read-only
/// root, `pivot_root`, working directory. After it returns this process lives in the
/// container; only [`exec`] is left.
pub fn enter(sys: &dyn Syscall, spec: &Spec, log: &dyn Fn(&str)) -> Result<Entered> {
    let image = spec.image.as_str();
    ensure_single_threaded(sys, image)?;
    if let Err(e) = sys.unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) {
        let errno = e.raw_os_error().unwrap_or(libc::EPERM);
        let d = explain_denial(errno, &HostFacts::read());
        return Err(Error::Userns {
            image: image.into(),
            host: crate::host::hostname().into(),
            reason: d.reason,
            fix: d.fix,
        });
    }
    let ids = spec.ids;
    match sys.write_file(Path::new("/proc/self/setgroups"), b"deny") {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(setup(image, "writing", "/proc/self/setgroups", e))
        }
        _ => {}
    }
    for (file, inside, outside) in [
        ("/proc/self/uid_map", ids.inside_uid, ids.outside_uid),
        ("/proc/self/gid_map", ids.inside_gid, ids.outside_gid),
    ] {
        sys.write_file(Path::new(file), format!("{inside} {outside} 1").as_bytes())
            .map_err(|e| setup(image, "writing", file, e))?;
    }
    // No `mount --make-rprivate /`: a mount namespace made with a new user namespace gets
    // the host's shared mounts as slaves (the kernel's CL_SHARED_TO_SLAVE), so nothing
    // mounted here can propagate back to the host, and pivot_root accepts them. The remount
    // would visit every mount of the host, once per task.

    let scratch = spec.tree.join("mnt");
    let mut ctx = Ctx {
        sys,
        spec,
        log,
        root: scratch.join("root"),
        scratch: scratch.clone(),
        overlay: false,
        no_create: Vec::new(),
        patches: Vec::new(),
        src_kinds: Default::default(),
    };
    let data = match &spec.tmpfs_size {
        Some(s) => format!("mode=0755,size={s}"),
        None => "mode=0755".into(),
    };
    ctx.mount(
        Some(Path::new("tmpfs")),
        &scratch,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&data),
    )?;
    sys.mkdir(&ctx.root, 0o755)
        .map_err(ctx.fail("creating", &ctx.root))?;
    let plan = ctx.direct_plan();
    let direct = plan.is_some();
    let overlay = if let Some(patches) = &plan {
        ctx.direct_root(patches)?;
        ctx.patches = patches
            .iter()
            .map(|p| ctx.root.join(p.strip_prefix("/").unwrap_or(p)))
            .collect();
        Ok(())
    } else if spec.try_overlay {
        ctx.overlay_root()?
    } else {
        Err(io::Error::other("not tried, as asked"))
    };
    match overlay {
        Ok(()) if direct => {}
        Ok(()) => ctx.overlay = true,
        Err(e) => {
            if let Write::Persistent(dir) = &spec.write {
                return Err(Error::PersistentNeedsOverlay {
                    image: image.into(),
                    dir: dir.clone(),
                    host: crate::host::hostname().into(),
                    source: e,
                });
            }
            log(&format!(
                "overlayfs unavailable ({e}); binding the image's top-level entries read-only instead"
            ));
            if spec.write == Write::Scratch {
                log("--write without overlayfs: only new top-level entries are writable");
            }
            ctx.fallback_root()?;
        }
    }
    for b in &spec.default_binds {
        ctx.apply_bind(b)?;
    }
    ctx.identity_files()?;
    for b in &spec.user_binds {
        ctx.apply_bind(b)?;
    }
    if spec.bridge.is_some() || spec.mpi_libs.is_some() {
        ctx.lpmx_dir(spec.bridge.as_ref(), spec.mpi_libs.as_ref())?;
    }
    let workdir = ctx.workdir()?;
    let root = ctx.root.clone();
    if spec.write == Write::ReadOnly && !direct {
        ctx.remount_ro(&root, false)
            .map_err(ctx.fail("making read-only", &root))?;
    }
    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves the new.
    sys.chdir(&root).map_err(ctx.fail("entering", &root))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(ctx.fail("pivot_root into", &root))?;
    sys.umount2(Path::new("."), libc::MNT_DETACH)
        .map_err(ctx.fail("detaching the host's root from", &root))?;
    sys.chdir(Path::new("/"))
        .map_err(ctx.fail("entering", Path::new("/")))?;
    sys.chdir(&workdir).map_err(|e| Error::Workdir {
        image: image.into(),
        dir: workdir.clone(),
        why: e.to_string(),
    })?;
    Ok(Entered {
        overlay: ctx.overlay,
        direct,
        workdir,
    })
}

/// Replaces this process with `argv`, found as `execvpe` finds it but along the container's
/// `PATH` from `env`. Returns only on failure: not found (127), not executable (126).
pub fn exec(
    sys: &dyn Syscall,
    image: &str,
    argv: &[String],
    env: &[(OsString, OsString)],
) -> Error {
    let Some(cmd) = argv.first() else {
        return Error::NoCommand {
            image: image.into(),
        };
    };
    let not_exec = |why: String| Error::NotExecutable {
        image: image.into(),
        cmd: cmd.clone(),
        why,
    };
    let c = |b: &[u8]| CString::new(b).map_err(|_| not_exec("an argument holds a NUL byte".into()));
    let args: std::result::Result<Vec<_>, _> = argv.iter().map(|a| c(a.as_bytes())).collect();
    let envp: std::result::Result<Vec<_>, _> = env
        .iter()
        .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect();
    let (args, envp) = match (args, envp) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if let Err(e) = sys.reset_signals() {
        return not_exec(format!("resetting signal dispositions: {e}"));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.to_string_lossy().into_owned())
        .unwrap_or_else(|| FALLBACK_PATH.into());
    let why_not = |e: &io::Error, p: &Path| -> String {
        match e.raw_os_error() {
            Some(libc::EACCES) => format!(
                "{}: permission denied (not an executable file, or on a noexec mount)",
                p.display()
            ),
            Some(libc::ENOEXEC) => format!(
                "{}: exec format error (not a program for {} nor a script starting with #!)",
                p.display(),
                std::env::consts::ARCH
            ),
            _ => format!("{}: {e}", p.display()),
        }
    };
    if cmd.contains('/') {
        let p = Path::new(cmd);
        let e = sys.execve(p, &args, &envp);
        return match e.raw_os_error() {
            Some(libc::ENOENT) if sys.stat_kind(p).is_ok() => not_exec(format!(
                "{}: its interpreter (the #! line) or dynamic loader is missing in the container",
                p.display()
            )),
            Some(libc::ENOENT | libc::ENOTDIR) => Error::NotFound {
                image: image.into(),
                cmd: cmd.clone(),
                path,
            },
            _ => not_exec(why_not(&e, p)),
        };
    }
    let mut denied: Option<(io::Error, PathBuf)> = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(OsStr::new(cmd));
        let e = sys.execve(&p, &args, &envp);
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT) => {}
            Some(libc::EACCES) => {
                denied.get_or_insert((e, p));
            }
            Some(libc::ENOEXEC) | Some(_) => return not_exec(why_not(&e, &p)),
            None => return not_exec(e.to_string()),
        }
    }
    match denied {
        Some((e, p)) => not_exec(why_not(&e, &p)),
        None => Error::NotFound {
            image: image.into(),
            cmd: cmd.clone(),
            path,
        },
    }
}

#[cfg(test)]
mod tests;
