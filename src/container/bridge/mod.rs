//! The host command bridge, container to host (issue 6): inside a container started with
//! `lpmx-job run --host-cmd NAME`, `NAME` runs the host's `NAME`.
//!
//! ```text
//! host                                          container (user + mount namespace)
//! lpmx-job run (supervisor)                     the task's command
//!   forwards signals, returns the status          PATH=/.lpmx/bin:...
//!   serves DIR/sock ------- bound at ---------> /.lpmx/bridge/sock
//!   per call: a thread  <-- request + fds 0,1,2 -- /.lpmx/bin/NAME: lpmx-job (the client)
//!     spawns the host's NAME with those fds        forwards its signals, exits with the
//!     reports its status ----------------------->  host process's status
//! ```
//!
//! The supervisor ([`supervise`]) forks before entering the namespaces: the child enters and
//! execs the command, the parent stays on the host, outside the namespaces, as the same user.
//! The socket lives in a private host directory (mode 0700, removed at exit) bound at
//! [`SOCKET_DIR`]. The client is this same executable ([`client`]), bound read-only at
//! `/.lpmx/lib/lpmx-bridge`. An image may have no C library, or another version, so a
//! dynamically linked lpmx-job runs inside through the host's own loader and libraries, bound
//! at `/.lpmx/lib/lpmx-job.libs/` (the executable's DT_RPATH is `$ORIGIN/lpmx-job.libs`,
//! set by build.rs): each bridged name is a one-line `#!` script in [`BIN_DIR`],
//! `#!/.lpmx/lib/lpmx-job.libs/ld-linux-x86-64.so.2 /.lpmx/lib/lpmx-bridge`, which the kernel
//! runs without anything from the image. A static lpmx-job gets plain symlinks instead. All
//! of `/.lpmx` is a directory of the task's tmpfs, bound read-only: nothing is written to
//! the image's root or to a `--write=DIR`.
//!
//! Protocol (one Unix stream connection per call, version [`MAGIC`]):
//! 1. client → server: a 4-byte little-endian length carrying, as SCM_RIGHTS, the caller's
//!    stdin, stdout and stderr (a closed one is replaced by /dev/null); then the request of
//!    that length ([`Request::encode`]): NUL-terminated fields `MAGIC NAME CWD ARGC ARG...
//!    ENVC KEY=VALUE...`.
//! 2. client → server, any number: `SIG\0` + signal number (i32 LE), a signal the caller got.
//! 3. server → client, once: `EXIT` + status or `SIGN` + signal number (i32 LE).
//!
//! The server checks the peer's uid (SO_PEERCRED) and the name, finds the name on the host's
//! PATH, maps the working directory to a bind ([`host_cwd`]) and opens it beneath the bind's
//! source with no symlink followed ([`open_beneath`]; the child fchdirs to it), builds the
//! environment ([`host_env`], without the [`DENIED`] start-up variables of loaders and
//! shells), spawns the host program with the received descriptors (nothing is copied) and
//! waits. Everything in the request is the container's to choose (a raw client can send
//! anything), so nothing in it is trusted beyond what a bind already lets it reach.
//! Statuses: the host program's own; 127 for a name not bridged or not found on the host;
//! 126 when it cannot be executed or the working directory exists only in the container
//! ([`CWD_NOT_ON_HOST`]); 125 when the bridge itself fails. Each failure writes one line to
//! the caller's stderr.

pub mod client;
mod fdpass;
pub mod server;
pub mod supervise;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Everything the bridge puts inside: a directory of the task's tmpfs, read-only.
pub const TOP_DIR: &str = "/.lpmx";
/// Where the bridged names appear inside (first on the container's PATH).
pub const BIN_DIR: &str = "/.lpmx/bin";
/// Where the client executable and the host's loader and libraries appear inside.
pub const LIB_DIR: &str = "/.lpmx/lib";
/// The client executable's name in [`LIB_DIR`]: lpmx-job under this name is a client.
pub const EXE_NAME: &str = "lpmx-bridge";
/// The directory of [`LIB_DIR`] holding the host's loader and libraries: the executable's
/// DT_RPATH is `$ORIGIN/lpmx-job.libs` (see build.rs).
pub const LIBS_NAME: &str = "lpmx-job.libs";
/// Where the supervisor's socket directory appears inside.
pub const SOCKET_DIR: &str = "/.lpmx/bridge";
/// The socket's name in its directory.
pub const SOCKET_NAME: &str = "sock";
/// Set inside the container to the socket's path: lpmx-job started under another name with
/// this set is a bridge client. Never passed to a host command.
pub const SOCKET_ENV: &str = "LPMX_BRIDGE_SOCKET";
/// Signals the supervisor forwards to the container's command and the client to the host
/// process.
pub const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
    libc::SIGWINCH,
];
/// The status of a call whose working directory does not exist on the host: like a command
/// that cannot be executed (126), since the host program was found but cannot run there.
pub const CWD_NOT_ON_HOST: u8 = crate::exit::NOT_EXECUTABLE;
/// Protocol name and version, the request's first field.
pub const MAGIC: &[u8] = b"lpmx-bridge/1";
/// Largest request accepted (argv and environment together).
pub const MAX_REQUEST: usize = 64 << 20;
/// Environment names always taken from the host: the container's would name container paths.
pub const HOST_ONLY: &[&str] = &["PATH", "LD_LIBRARY_PATH"];

/// Variables the caller can never pass to a host command, whatever it sets them to: each
/// makes the host's loader, shells or a common interpreter load or run code named by the
/// value, before or besides what the host program does. A caller inside the container
/// reaches the host only through the bridged names; with these it could run anything there
/// (`LD_PRELOAD=evil.so hostname`), outside every bind. The host keeps its own value of
/// each. A name ending in `*` is a prefix.
pub const DENIED: &[(&str, &str)] = &[
    (
        "LD_*",
        "the dynamic loader: LD_PRELOAD, LD_AUDIT and LD_LIBRARY_PATH load libraries into the          host program; the rest (LD_DEBUG_OUTPUT, LD_PROFILE...) write files or change loading",
    ),
    ("GLIBC_TUNABLES", "parsed by the loader of every program"),
    ("GCONV_PATH", "glibc loads iconv modules from it"),
    ("BASH_ENV", "bash runs this file before every script"),
    ("ENV", "sh, dash, ksh and bash in POSIX mode run this file at start"),
    (
        "BASH_FUNC_*",
        "exported bash functions: they override commands a host script calls",
    ),
    ("SHELLOPTS", "bash imports it: xtrace with PS4 runs code"),
    ("BASHOPTS", "bash imports it: extdebug and others change how scripts run"),
    ("PS4", "expanded, command substitutions included, before each traced line"),
    ("PROMPT_COMMAND", "run by bash before each prompt"),
    ("IFS", "older shells import it, and a script's words split differently"),
    ("ZDOTDIR", "zsh runs $ZDOTDIR/.zshenv at every start, scripts included"),
    ("FPATH", "ksh and zsh autoload functions from it"),
    ("PYTHONSTARTUP", "run by an interactive python"),
    ("PYTHONPATH", "python imports from it first"),
    ("PYTHONHOME", "python's standard library is read from it"),
    ("PERL5OPT", "options, -M included, of every perl"),
    ("PERL5LIB", "perl loads modules from it first"),
    ("PERLLIB", "perl loads modules from it first"),
    ("PERL5DB", "code run by perl -d"),
    ("RUBYOPT", "options, -r included, of every ruby"),
    ("RUBYLIB", "ruby loads libraries from it first"),
    ("NODE_OPTIONS", "options, --require included, of every node"),
    ("LUA_INIT*", "code every lua runs first"),
    ("JAVA_TOOL_OPTIONS", "options, -javaagent included, of every JVM"),
    ("_JAVA_OPTIONS", "options of every JVM"),
    ("JDK_JAVA_OPTIONS", "options of every java launcher"),
];

/// Whether `name` is on [`DENIED`].
pub fn denied(name: &OsStr) -> bool {
    let name = name.as_bytes();
    DENIED.iter().any(|(d, _)| match d.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => name == d.as_bytes(),
    })
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{image}: --host-cmd {name:?}: {why}")]
    Name {
        image: String,
        name: String,
        why: &'static str,
    },
    #[error("{image}: host command bridge: {what} {path} on {host}: {source}")]
    Setup {
        image: String,
        what: &'static str,
        path: PathBuf,
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{image}: host command bridge: {what} on {host}: {source}")]
    Process {
        image: String,
        what: &'static str,
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{name} (host command bridge): {what} {path} in the container on {host}: {source}")]
    Client {
        name: String,
        what: &'static str,
        path: PathBuf,
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{name} (host command bridge): {why} (in the container on {host})")]
    Protocol {
        name: String,
        why: String,
        host: String,
    },
}

/// Named sets for `--host-cmd @NAME` and `bridge.commands`: the commands of a batch system
/// or MPI launcher a workflow inside the container typically calls.
pub const SETS: &[(&str, &[&str])] = &[
    (
        "slurm",
        &[
            "srun", "sbatch", "salloc", "squeue", "scancel", "sacct", "scontrol", "sinfo", "sstat",
        ],
    ),
    ("sge", &["qsub", "qstat", "qdel", "qalter", "qhost", "qrsh"]),
    (
        "pbs",
        &["qsub", "qstat", "qdel", "qalter", "pbsnodes", "pbsdsh"],
    ),
    ("lsf", &["bsub", "bjobs", "bkill", "bqueues"]),
    ("condor", &["condor_submit", "condor_q", "condor_rm"]),
    ("mpi", &["mpirun", "mpiexec"]),
];

/// The names to bridge: `--host-cmd` and `bridge.commands` together, `@SET`s expanded, each
/// checked, sorted, once each.
pub fn expand_names(image: &str, given: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for g in given {
        match g.strip_prefix('@') {
            Some(set) => match SETS.iter().find(|(n, _)| *n == set) {
                Some((_, names)) => out.extend(names.iter().map(|n| n.to_string())),
                None => {
                    return Err(Error::Name {
                        image: image.into(),
                        name: g.clone(),
                        why: "no such set; the sets are @slurm, @sge, @pbs, @lsf, @condor, @mpi",
                    })
                }
            },
            None => {
                check_name(image, g)?;
                out.push(g.clone());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Checks a `--host-cmd` name: a plain file name.
pub fn check_name(image: &str, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("the name is empty")
    } else if name.contains('/') {
        Some("give a command name, not a path (it is looked up on the host's PATH)")
    } else if name == "." || name == ".." || name.contains('\0') {
        Some("not a command name")
    } else if name == EXE_NAME || name == "lpmx-job" {
        Some("lpmx-job itself cannot be bridged")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::Name {
            image: image.into(),
            name: name.into(),
            why,
        }),
        None => Ok(()),
    }
}

/// The environment the container's command starts with when bridging: [`BIN_DIR`] first on
/// PATH, and [`SOCKET_ENV`].
pub fn container_env(vars: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = vars.iter().cloned().collect();
    let path = match env.get(OsStr::new("PATH")) {
        Some(p) if !p.is_empty() => {
            let mut v = OsString::from(format!("{BIN_DIR}:"));
            v.push(p);
            v
        }
        _ => OsString::from(format!(
            "{BIN_DIR}:{}",
            crate::container::environ::DEFAULT_PATH
        )),
    };
    env.insert("PATH".into(), path);
    env.insert(
        SOCKET_ENV.into(),
        format!("{SOCKET_DIR}/{SOCKET_NAME}").into(),
    );
    env.into_iter().collect()
}

/// The environment of a host command: the host's (the supervisor's), with the caller's own
/// changes replayed on it. A variable the caller has with the value the container started
/// with came from the container's setup (the image's Env, LPMXENV_, -e) and is not passed:
/// the host keeps its value, or has none. A variable the caller set or changed is passed; one
/// the caller unset is removed. [`HOST_ONLY`] and [`DENIED`] names are always the host's
/// (set, changed or unset by the caller, they keep the host's value or stay unset);
/// [`SOCKET_ENV`] and lpmx-job's internal markers never pass.
pub fn host_env(
    host: &[(OsString, OsString)],
    container: &[(OsString, OsString)],
    caller: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let start: BTreeMap<&OsStr, &OsStr> = container
        .iter()
        .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
        .collect();
    let mut env: BTreeMap<OsString, OsString> = host.iter().cloned().collect();
    for (k, v) in caller {
        if start.get(k.as_os_str()) != Some(&v.as_os_str()) && !denied(k) {
            env.insert(k.clone(), v.clone());
        }
    }
    for k in start.keys() {
        if !caller.iter().any(|(c, _)| c == k) && !denied(k) {
            env.remove(*k);
        }
    }
    for k in HOST_ONLY {
        match host.iter().find(|(h, _)| h == k) {
            Some((_, v)) => env.insert(k.into(), v.clone()),
            None => env.remove(OsStr::new(k)),
        };
    }
    env.retain(|k, _| {
        k != SOCKET_ENV
            && !k
                .as_bytes()
                .starts_with(crate::container::environ::INTERNAL_PREFIX.as_bytes())
    });
    env.into_iter().collect()
}

/// The bind that shows container directory `cwd`, the deepest winning (the later one on a
/// tie, as mounted), as its index in `binds` (container `dst`, host `src`) and the relative
/// path beneath it (no `..`, no `.`). None when no bind covers `cwd`: the directory is the
/// image's.
pub fn host_cwd(binds: &[(PathBuf, PathBuf)], cwd: &Path) -> Option<(usize, PathBuf)> {
    let cwd = crate::container::runtime::paths::normalize(cwd);
    let (i, (dst, _)) = binds
        .iter()
        .enumerate()
        .filter(|(_, (dst, _))| cwd.starts_with(dst))
        .max_by_key(|(_, (dst, _))| dst.components().count())?;
    let rest = cwd.strip_prefix(dst).ok()?;
    Some((i, rest.to_path_buf()))
}

/// Why a working directory cannot be opened beneath its bind.
#[derive(Debug)]
pub enum Beneath {
    /// A component is missing or not a directory.
    Missing(PathBuf),
    /// A component is a symlink on the host: never followed.
    Symlink(PathBuf),
    /// `..` (a raw client's; the real one sends a normalized path).
    Escapes,
    Io(PathBuf, io::Error),
}

/// Opens the directory `rest` beneath the directory `root` (a bind's source, opened when
/// the container started) one component at a time, each O_NOFOLLOW: no symlink on the host
/// is followed, and nothing above `root` is reached, however the path was spelled or the
/// tree changed. A per-component walk rather than openat2(RESOLVE_BENEATH|
/// RESOLVE_NO_SYMLINKS), which kernels before 5.6 (RHEL 8's 4.18) lack.
pub fn open_beneath(
    root: std::os::fd::BorrowedFd,
    shown: &Path,
    rest: &Path,
) -> std::result::Result<std::os::fd::OwnedFd, Beneath> {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::path::Component;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut here = rustix::fs::openat(root, ".", flags | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Beneath::Io(shown.to_path_buf(), e.into()))?;
    let mut at = shown.to_path_buf();
    for c in rest.components() {
        let name = match c {
            Component::Normal(n) => n,
            Component::CurDir => continue,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Beneath::Escapes)
            }
        };
        at.push(name);
        let next = match rustix::fs::openat(&here, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Err(Beneath::Missing(at)),
            Err(e) => return Err(Beneath::Io(at, e.into())),
        };
        let st = rustix::fs::fstat(&next).map_err(|e| Beneath::Io(at.clone(), e.into()))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => here = next,
            FileType::Symlink => return Err(Beneath::Symlink(at)),
            _ => return Err(Beneath::Missing(at)),
        }
    }
    Ok(here)
}

/// `name` as `execvp` would find it along `path` (an executable file), or None.
pub fn find_on_path(name: &OsStr, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.as_bytes()
        .split(|b| *b == b':')
        .map(|d| if d.is_empty() { &b"."[..] } else { d })
        .map(|d| Path::new(OsStr::from_bytes(d)).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                && rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok()
        })
}

/// One call: what the client sends after the descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The bridged name (the client's `argv[0]` without its directory).
    pub name: OsString,
    /// The caller's working directory, a container path (empty when unknown).
    pub cwd: OsString,
    /// The arguments after `argv[0]`.
    pub args: Vec<OsString>,
    /// The caller's environment.
    pub env: Vec<(OsString, OsString)>,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut field = |b: &[u8]| {
            out.extend(b.iter().filter(|c| **c != 0));
            out.push(0);
        };
        field(MAGIC);
        field(self.name.as_bytes());
        field(self.cwd.as_bytes());
        field(self.args.len().to_string().as_bytes());
        for a in &self.args {
            field(a.as_bytes());
        }
        field(self.env.len().to_string().as_bytes());
        for (k, v) in &self.env {
            field(&[k.as_bytes(), b"=", v.as_bytes()].concat());
        }
        out
    }

    pub fn decode(data: &[u8]) -> std::result::Result<Request, String> {
        let Some(body) = data.strip_suffix(b"\0") else {
            return Err("the request does not end with a NUL".into());
        };
        let mut fields = body.split(|b| *b == 0);
        let mut next = |what: &str| {
            fields
                .next()
                .map(|f| OsString::from_vec(f.to_vec()))
                .ok_or_else(|| format!("the request ends before its {what}"))
        };
        let magic = next("version")?;
        if magic.as_bytes() != MAGIC {
            return Err(format!(
                "protocol {:?}, expected {:?} (a different lpmx-job inside and outside?)",
                magic,
                String::from_utf8_lossy(MAGIC)
            ));
        }
        let name = next("name")?;
        let cwd = next("working directory")?;
        let count = |s: OsString| {
            s.to_str()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|n| *n <= MAX_REQUEST)
                .ok_or_else(|| format!("bad count {s:?}"))
        };
        let argc = count(next("argument count")?)?;
        let args = (0..argc)
            .map(|_| next("arguments"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let envc = count(next("environment count")?)?;
        let mut env = Vec::with_capacity(envc.min(4096));
        for _ in 0..envc {
            let e = next("environment")?.into_vec();
            if let Some(i) = e.iter().position(|b| *b == b'=').filter(|i| *i > 0) {
                env.push((
                    OsString::from_vec(e[..i].to_vec()),
                    OsString::from_vec(e[i + 1..].to_vec()),
                ));
            }
        }
        if next("end").is_ok() {
            return Err("the request has trailing fields".into());
        }
        Ok(Request {
            name,
            cwd,
            args,
            env,
        })
    }
}

/// How a host command ended, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exit(u8),
    Signal(i32),
}

impl Status {
    pub fn encode(self) -> [u8; 8] {
        let (tag, n) = match self {
            Status::Exit(c) => (b"EXIT", i32::from(c)),
            Status::Signal(s) => (b"SIGN", s),
        };
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(tag);
        out[4..].copy_from_slice(&n.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8; 8]) -> Option<Status> {
        let n = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        match &b[..4] {
            b"EXIT" => u8::try_from(n).ok().map(Status::Exit),
            b"SIGN" => Some(Status::Signal(n)),
            _ => None,
        }
    }

    pub fn from_wait(s: std::process::ExitStatus) -> Status {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Status::Exit(c as u8),
            (None, Some(sig)) => Status::Signal(sig),
            _ => Status::Exit(crate::exit::OWN_FAILURE),
        }
    }
}

/// The host's dynamic loader this process runs under (None for a static executable) and
/// the shared libraries it loaded, named as the loader found them (by their sonames).
pub fn loaded_libraries() -> (Option<PathBuf>, Vec<PathBuf>) {
    struct Found {
        interp: Option<PathBuf>,
        libs: Vec<PathBuf>,
    }
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader hands a valid dl_phdr_info; `data` is the &mut Found below.
        unsafe {
            let found = &mut *data.cast::<Found>();
            let info = &*info;
            let name = if info.dlpi_name.is_null() {
                &[][..]
            } else {
                std::ffi::CStr::from_ptr(info.dlpi_name).to_bytes()
            };
            if name.is_empty() {
                // The executable: its PT_INTERP names the loader.
                for i in 0..info.dlpi_phnum as usize {
                    let ph = &*info.dlpi_phdr.add(i);
                    if ph.p_type == libc::PT_INTERP {
                        let p =
                            (info.dlpi_addr as usize + ph.p_vaddr as usize) as *const libc::c_char;
                        let s = std::ffi::CStr::from_ptr(p).to_bytes();
                        found.interp = Some(PathBuf::from(OsStr::from_bytes(s)));
                    }
                }
            } else if name.starts_with(b"/") {
                found.libs.push(PathBuf::from(OsStr::from_bytes(name)));
            }
        }
        0
    }
    let mut found = Found {
        interp: None,
        libs: Vec::new(),
    };
    // SAFETY: the callback only reads what the loader gives it and writes to `found`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut found as *mut Found).cast()) };
    let libs = found
        .libs
        .into_iter()
        .filter(|l| Some(l) != found.interp.as_ref())
        .collect();
    (found.interp, libs)
}

/// A signal frame, client to server.
pub fn signal_frame(sig: i32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(b"SIG\0");
    out[4..].copy_from_slice(&sig.to_le_bytes());
    out
}

pub fn parse_signal_frame(b: &[u8; 8]) -> Option<i32> {
    let sig = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    (&b[..4] == b"SIG\0" && FORWARDED.contains(&sig)).then_some(sig)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn sets_expand_and_merge() {
        let n = super::expand_names(
            "img",
            &[
                "@slurm".into(),
                "srun".into(),
                "@mpi".into(),
                "hostname".into(),
            ],
        )
        .unwrap();
        assert!(n.contains(&"sbatch".to_string()) && n.contains(&"mpirun".to_string()));
        assert_eq!(n.iter().filter(|x| *x == "srun").count(), 1);
        assert!(n.windows(2).all(|w| w[0] < w[1]));
        let e = super::expand_names("img", &["@nope".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("@nope") && e.contains("@slurm"), "{e}");
        assert!(super::expand_names("img", &["/bin/sh".into()]).is_err());
    }

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn get<'a>(env: &'a [(OsString, OsString)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn request_round_trip() {
        let r = Request {
            name: "sbatch".into(),
            cwd: "/home/u/job dir".into(),
            args: vec!["--wrap".into(), "echo 'a b'".into(), "".into()],
            env: vars(&[("A", "1=2"), ("EMPTY", "")]),
        };
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        let none = Request {
            name: "x".into(),
            cwd: "".into(),
            args: vec![],
            env: vec![],
        };
        assert_eq!(Request::decode(&none.encode()).unwrap(), none);
        for bad in [
            &b""[..],
            b"lpmx-bridge/1\0x\0/\x001\0",
            b"lpmx-bridge/9\0x\0/\x000\x000\0",
            b"lpmx-bridge/1\0x\0/\0zz\x000\0",
            b"lpmx-bridge/1\0x\0/\x000\x000\0extra\0",
        ] {
            assert!(Request::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_and_signal_frames() {
        for s in [Status::Exit(0), Status::Exit(255), Status::Signal(15)] {
            assert_eq!(Status::decode(&s.encode()), Some(s));
        }
        assert_eq!(Status::decode(b"WHAT\0\0\0\0"), None);
        assert_eq!(
            parse_signal_frame(&signal_frame(libc::SIGTERM)),
            Some(libc::SIGTERM)
        );
        assert_eq!(parse_signal_frame(&signal_frame(libc::SIGKILL)), None);
    }

    #[test]
    fn names() {
        for ok in ["srun", "sbatch", "my-tool.sh"] {
            check_name("img", ok).unwrap();
        }
        for bad in ["", "/usr/bin/srun", "a/b", "..", "lpmx-job"] {
            let e = check_name("img", bad).unwrap_err().to_string();
            assert!(e.starts_with("img: --host-cmd"), "{e}");
        }
    }

    #[test]
    fn container_env_puts_the_bridge_first() {
        let env = container_env(&vars(&[("PATH", "/usr/bin:/bin"), ("A", "1")]));
        assert_eq!(get(&env, "PATH"), Some("/.lpmx/bin:/usr/bin:/bin"));
        assert_eq!(get(&env, SOCKET_ENV), Some("/.lpmx/bridge/sock"));
        assert_eq!(get(&env, "A"), Some("1"));
    }

    #[test]
    fn host_env_replays_the_callers_changes() {
        let host = vars(&[
            ("PATH", "/host/bin"),
            ("LD_LIBRARY_PATH", "/host/lib"),
            ("HOME", "/home/u"),
            ("FIXTURE", "host"),
            ("SLURM_JOB_ID", "42"),
            ("DROPPED_BY_CLEANENV", "x"),
            ("LPMX_INTERNAL_PULLED", "sha256:00"),
        ]);
        let container = container_env(&vars(&[
            ("PATH", "/usr/bin"),
            ("LD_LIBRARY_PATH", "/image/lib"),
            ("HOME", "/home/u"),
            ("FIXTURE", "one"),
            ("IMAGE_ONLY", "y"),
            ("SLURM_JOB_ID", "42"),
            ("UNSET_BY_CALLER", "z"),
        ]));
        let mut caller: Vec<_> = container
            .iter()
            .filter(|(k, _)| k != "UNSET_BY_CALLER")
            .cloned()
            .collect();
        caller.retain(|(k, _)| k != "SLURM_JOB_ID");
        caller.extend(vars(&[("SLURM_JOB_ID", "7"), ("NEW", "n")]));
        let env = host_env(&host, &container, &caller);
        assert_eq!(get(&env, "PATH"), Some("/host/bin"));
        assert_eq!(get(&env, "LD_LIBRARY_PATH"), Some("/host/lib"));
        assert_eq!(get(&env, "FIXTURE"), Some("host"), "the image's undone");
        assert_eq!(get(&env, "IMAGE_ONLY"), None);
        assert_eq!(get(&env, "SLURM_JOB_ID"), Some("7"), "the caller's change");
        assert_eq!(get(&env, "NEW"), Some("n"));
        assert_eq!(get(&env, "UNSET_BY_CALLER"), None);
        assert_eq!(get(&env, "DROPPED_BY_CLEANENV"), Some("x"));
        assert_eq!(get(&env, "HOME"), Some("/home/u"));
        assert_eq!(get(&env, SOCKET_ENV), None);
        assert_eq!(get(&env, "LPMX_INTERNAL_PULLED"), None);
        let none = host_env(&[], &container, &caller);
        assert_eq!(get(&none, "PATH"), None);
    }

    #[test]
    fn cwd_through_the_binds() {
        let binds: Vec<(PathBuf, PathBuf)> = [
            ("/tmp", "/tmp"),
            ("/home/u", "/home/u"),
            ("/data", "/lustre/proj/data"),
            ("/data/sub", "/scratch/sub"),
        ]
        .iter()
        .map(|(d, s)| (PathBuf::from(d), PathBuf::from(s)))
        .collect();
        let h = |c: &str| host_cwd(&binds, Path::new(c)).map(|(i, rest)| binds[i].1.join(rest));
        assert_eq!(h("/home/u/job"), Some("/home/u/job".into()));
        assert_eq!(h("/tmp"), Some("/tmp".into()));
        assert_eq!(h("/data/x/../y"), Some("/lustre/proj/data/y".into()));
        assert_eq!(h("/data/sub/z"), Some("/scratch/sub/z".into()));
        assert_eq!(
            host_cwd(&binds, Path::new("/data/../data/./a")),
            Some((2, "a".into()))
        );
        assert_eq!(h("/"), None);
        assert_eq!(h("/etc"), None);
        assert_eq!(h("/tmpx"), None);
    }

    /// D9: what makes the host's loader or shells run code never passes, whoever set it;
    /// the host's own value stays.
    #[test]
    fn host_env_drops_the_loaders_and_shells_start_up_variables() {
        let host = vars(&[
            ("PATH", "/host/bin"),
            ("LD_LIBRARY_PATH", "/host/lib"),
            ("ENV", "/home/u/.shrc"),
        ]);
        let container = container_env(&vars(&[("PATH", "/usr/bin"), ("ENV", "/home/u/.shrc")]));
        let mut caller = container.clone();
        caller.retain(|(k, _)| k != "ENV");
        caller.extend(vars(&[
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("LD_AUDIT", "/tmp/evil.so"),
            ("LD_LIBRARY_PATH", "/tmp"),
            ("GLIBC_TUNABLES", "glibc.x=1"),
            ("BASH_ENV", "/tmp/evil.sh"),
            ("BASH_FUNC_hostname%%", "() { touch /tmp/pwned; }"),
            ("SHELLOPTS", "xtrace"),
            ("PS4", "$(touch /tmp/pwned)"),
            ("PERL5OPT", "-Mevil"),
            ("LUA_INIT_5_4", "os.execute('x')"),
            ("LD_ANYTHING_NEW", "x"),
            ("OLD_LD_PRELOAD", "kept: not the loader's"),
            ("SBATCH_ACCOUNT", "proj"),
        ]));
        let env = host_env(&host, &container, &caller);
        for k in [
            "LD_PRELOAD",
            "LD_AUDIT",
            "GLIBC_TUNABLES",
            "BASH_ENV",
            "BASH_FUNC_hostname%%",
            "SHELLOPTS",
            "PS4",
            "PERL5OPT",
            "LUA_INIT_5_4",
            "LD_ANYTHING_NEW",
        ] {
            assert_eq!(get(&env, k), None, "{k} passed");
        }
        assert_eq!(get(&env, "LD_LIBRARY_PATH"), Some("/host/lib"));
        // Unset by the caller, still the host's: a denied name is the host's either way.
        assert_eq!(get(&env, "ENV"), Some("/home/u/.shrc"));
        assert_eq!(get(&env, "OLD_LD_PRELOAD"), Some("kept: not the loader's"));
        assert_eq!(get(&env, "SBATCH_ACCOUNT"), Some("proj"));
        for (name, why) in DENIED {
            assert!(!why.is_empty());
            assert!(denied(OsStr::new(&name.replace('*', "X"))), "{name}");
        }
        assert!(!denied(OsStr::new("LD")) && !denied(OsStr::new("ENVIRONMENT")));
    }

    /// D9: a working directory is opened beneath its bind with no symlink followed.
    #[test]
    fn a_working_directory_through_a_host_symlink_is_not_followed() {
        use std::os::fd::AsFd;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("bound");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", src.join("a/out")).unwrap();
        std::os::unix::fs::symlink("b", src.join("a/inner")).unwrap();
        std::fs::write(src.join("file"), "").unwrap();
        let root = std::fs::File::open(&src).unwrap();
        let open = |rest: &str| open_beneath(root.as_fd(), &src, Path::new(rest));
        let fd = open("a/b").unwrap();
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(real, src.join("a/b"));
        open("").unwrap();
        for (rest, bad) in [
            ("a/out", "a/out"),
            ("a/out/ssl", "a/out"),
            ("a/inner", "a/inner"),
        ] {
            match open(rest) {
                Err(Beneath::Symlink(at)) => assert_eq!(at, src.join(bad)),
                other => panic!("{rest}: {other:?}"),
            }
        }
        assert!(matches!(open("../bound"), Err(Beneath::Escapes)));
        assert!(matches!(open("nope/x"), Err(Beneath::Missing(_))));
        assert!(matches!(open("file"), Err(Beneath::Missing(_))));
    }

    #[test]
    fn lookup_on_path() {
        let p = find_on_path(OsStr::new("sh"), OsStr::new("/nonexistent:/bin:/usr/bin"));
        assert!(p.is_some_and(|p| p.ends_with("sh")));
        assert_eq!(
            find_on_path(OsStr::new("no-such-cmd-xyz"), OsStr::new("/bin")),
            None
        );
        // Not executable.
        assert_eq!(find_on_path(OsStr::new("passwd"), OsStr::new("/etc")), None);
    }
}
