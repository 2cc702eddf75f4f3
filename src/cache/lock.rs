//! Which kind of file lock works on a directory. The cache is shared by many processes on many
//! nodes, and filesystems differ: Lustre without `-o flock` refuses flock, NFS has been seen
//! to hang in it. Each mode is tried between two real processes, with a deadline, so the
//! answer is what the filesystem does rather than what its name suggests.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::host::probe::{self, Outcome};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create lock probe file {path}: {source}")]
    ProbeFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start lock probe for {path}: {source}")]
    Fork {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `flock(2)` through std's `File::lock`.
    Flock,
    /// Open-file-description `fcntl` locks (`F_OFD_SETLK`), which NFS implements through lockd.
    FcntlOfd,
    /// An atomically created directory with a heartbeat, where no kernel lock works.
    LockDir,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Flock => "flock",
            Mode::FcntlOfd => "fcntl-ofd",
            Mode::LockDir => "lockdir",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trial {
    /// A second process was refused while the first held the lock.
    Excludes,
    /// A second process got the lock too: useless for mutual exclusion.
    NotExclusive,
    /// The filesystem refused the call (ENOLCK, EOPNOTSUPP, ENOSYS...).
    Refused(i32),
    /// The call did not return within the deadline.
    Hangs,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub dir: PathBuf,
    pub flock: Trial,
    pub fcntl_ofd: Trial,
    pub mode: Mode,
}

type TryLock = fn(&File) -> std::io::Result<bool>;

fn try_flock(f: &File) -> std::io::Result<bool> {
    match f.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn try_ofd(f: &File) -> std::io::Result<bool> {
    // SAFETY: a zeroed flock struct is valid; fields set below describe the whole file.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: fcntl on a descriptor we own with a valid flock struct.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Takes the lock in one process and tries it from a second, separately opened one.
fn trial(path: &Path, lock: TryLock, deadline: Duration) -> Result<Trial> {
    let outcome = probe::in_child(deadline, |report| {
        let open = || {
            crate::cache::safe::open(
                path,
                crate::cache::safe::Expect::File,
                crate::cache::safe::Access::ReadWrite,
            )
        };
        let first = match open() {
            Ok(f) => f,
            Err(e) => {
                report.push_str(&e.raw_os_error().unwrap_or(0).to_string());
                return 2;
            }
        };
        match lock(&first) {
            Ok(true) => {}
            Ok(false) => return 1,
            Err(e) => {
                report.push_str(&e.raw_os_error().unwrap_or(0).to_string());
                return 2;
            }
        }
        // The contender must be another process: flock and OFD locks of one process on two
        // descriptors would conflict too, but POSIX record locks would not, and a real
        // contender is what the cache faces.
        match probe::in_child(deadline, |_| match open().and_then(|f| lock(&f)) {
            Ok(false) => 0,
            Ok(true) => 1,
            Err(_) => 2,
        }) {
            Ok(Outcome::Exited(0, _)) => 0,
            Ok(Outcome::Exited(1, _)) => 1,
            Ok(Outcome::TimedOut) => 3,
            _ => 2,
        }
    })
    .map_err(|source| Error::Fork {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match outcome {
        Outcome::Exited(0, _) => Trial::Excludes,
        Outcome::Exited(1, _) => Trial::NotExclusive,
        Outcome::Exited(3, _) | Outcome::TimedOut => Trial::Hangs,
        Outcome::Exited(_, errno) => Trial::Refused(errno.trim().parse().unwrap_or(0)),
        Outcome::Signaled(_) => Trial::Refused(0),
    })
}

/// Tries flock, then OFD locks, in `dir` (which must exist and be writable) and picks the first
/// that excludes a second process.
pub fn probe(dir: &Path, deadline: Duration) -> Result<ProbeReport> {
    // A random name created exclusively: in a group cache's tmp-v1 a predictable one could be
    // a symlink planted by another member (issue 11 D4).
    let path = dir.join(format!(".lock-probe.{}", crate::cache::safe::random_name()));
    crate::cache::safe::create_new(&path, 0o600, crate::cache::safe::Access::Write).map_err(
        |source| Error::ProbeFile {
            path: path.clone(),
            source,
        },
    )?;
    let flock = trial(&path, try_flock, deadline);
    let fcntl_ofd = trial(&path, try_ofd, deadline);
    let _ = std::fs::remove_file(&path);
    let (flock, fcntl_ofd) = (flock?, fcntl_ofd?);
    let mode = if flock == Trial::Excludes {
        Mode::Flock
    } else if fcntl_ofd == Trial::Excludes {
        Mode::FcntlOfd
    } else {
        Mode::LockDir
    };
    Ok(ProbeReport {
        dir: dir.to_path_buf(),
        flock,
        fcntl_ofd,
        mode,
    })
}

pub fn describe(t: Trial) -> String {
    match t {
        Trial::Excludes => "works between two processes".into(),
        Trial::NotExclusive => "does not exclude a second process".into(),
        Trial::Refused(errno) => format!("refused: {}", std::io::Error::from_raw_os_error(errno)),
        Trial::Hangs => "hangs (no answer within the deadline)".into(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_holder_is_shown_with_local_time_and_age() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_796_099_200);
        let text = readable_since("host n1 pid 42 since 1796099152", now);
        assert!(text.starts_with("host n1 pid 42 since 20"), "{text}");
        assert!(text.ends_with(" (48 s ago)"), "{text}");
        assert!(!text.contains("1796099152"), "{text}");
        assert_eq!(readable_since("another process", now), "another process");
        let text = readable_since("host n1 pid 42 since 1796091952", now);
        assert!(text.ends_with("(2 h ago)"), "{text}");
    }
    use super::*;

    #[test]
    fn local_filesystem_supports_flock_and_ofd() {
        // A private directory: one named by pid could be another run's, or a leftover.
        let tmp = tempfile::Builder::new()
            .prefix("lpmx-lock-unit.")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let r = probe(&dir, Duration::from_secs(10)).unwrap();
        assert_eq!(r.flock, Trial::Excludes);
        assert_eq!(r.fcntl_ofd, Trial::Excludes);
        assert_eq!(r.mode, Mode::Flock);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "probe file removed"
        );
    }

    #[test]
    fn missing_dir_is_an_error_naming_the_path() {
        let e = probe(Path::new("/nonexistent/lpmx"), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/lpmx"), "{e}");
    }
}

/// How long a lock directory's holder may go without a heartbeat before waiters take it as
/// dead (the holder refreshes every `HEARTBEAT`).
pub const STALE_AFTER: Duration = Duration::from_secs(60);
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// A lock held in one of the modes; released on drop.
pub struct Held {
    kind: HeldKind,
}

enum HeldKind {
    /// flock or OFD lock: closing the file releases it.
    File(File),
    Dir {
        dir: PathBuf,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        beat: Option<std::thread::JoinHandle<()>>,
    },
}

fn owner_note() -> String {
    format!(
        "host {} pid {} since {}\n",
        crate::host::hostname(),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    )
}

/// Tries once to take the lock named by `base` (a path without extension) in `mode`.
/// `Ok(None)` means someone else holds it.
pub fn try_acquire(mode: Mode, base: &Path) -> std::io::Result<Option<Held>> {
    match mode {
        Mode::Flock | Mode::FcntlOfd => {
            // Any member of a group cache may have made the lock file (or put a symlink or a
            // FIFO in its place): opened as the cache opens everything, group-writable so that
            // every member can take an OFD write lock and leave a note in it.
            let path = base.with_extension("lock");
            let file = crate::cache::safe::open_or_create(
                &path,
                crate::cache::safe::Access::ReadWrite,
                crate::cache::safe::SHARED_FILE_MODE,
            )?;
            let got = if mode == Mode::Flock {
                try_flock(&file)?
            } else {
                try_ofd(&file)?
            };
            if !got {
                return Ok(None);
            }
            // Say who holds it, for the waiters' messages; the lock itself is the kernel's.
            use std::io::Write;
            let _ = file
                .set_len(0)
                .and_then(|_| (&file).write_all(owner_note().as_bytes()));
            Ok(Some(Held {
                kind: HeldKind::File(file),
            }))
        }
        Mode::LockDir => {
            let dir = base.with_extension("lockdir");
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if lockdir_is_stale(&dir) {
                        break_lockdir(&dir);
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            {
                use std::io::Write;
                let mut f = crate::cache::safe::create_new(
                    &dir.join("owner"),
                    0o644,
                    crate::cache::safe::Access::Write,
                )?;
                f.write_all(owner_note().as_bytes())?;
            }
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (s, owner) = (stop.clone(), dir.join("owner"));
            // The heartbeat is the owner file's mtime: waiters on any node can read it.
            let beat = std::thread::spawn(move || {
                let mut last = std::time::Instant::now();
                while !s.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= HEARTBEAT {
                        if let Ok(f) = crate::cache::safe::open(
                            &owner,
                            crate::cache::safe::Expect::File,
                            crate::cache::safe::Access::Write,
                        ) {
                            let _ = f.set_modified(std::time::SystemTime::now());
                        }
                        last = std::time::Instant::now();
                    }
                }
            });
            Ok(Some(Held {
                kind: HeldKind::Dir {
                    dir,
                    stop,
                    beat: Some(beat),
                },
            }))
        }
    }
}

/// A lock directory is stale when its holder is a dead process of this host, or when its
/// heartbeat stopped (a holder on another node that died or lost the filesystem).
fn lockdir_is_stale(dir: &Path) -> bool {
    let owner = dir.join("owner");
    let Ok(meta) = std::fs::symlink_metadata(&owner) else {
        // Created but not yet claimed: give the creator a moment before calling it dead.
        return std::fs::symlink_metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_AFTER);
    };
    let text = crate::cache::safe::read(&owner)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut words = text.split_whitespace();
    let (host, pid) = (
        words.nth(1),
        words.nth(1).and_then(|p| p.parse::<i32>().ok()),
    );
    if let (Some(h), Some(pid)) = (host, pid) {
        // SAFETY: signal 0 only checks existence.
        if h == crate::host::hostname()
            && unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            return true;
        }
    }
    meta.modified()
        .is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_AFTER)
}

/// Takes a dead holder's directory away with one rename, so that of several waiters breaking
/// it at once exactly one succeeds and none removes a lock retaken in between.
fn break_lockdir(dir: &Path) {
    let tomb = dir.with_extension(format!("broken.{}", crate::cache::safe::random_name()));
    if std::fs::rename(dir, &tomb).is_ok() {
        let _ = std::fs::remove_dir_all(&tomb);
    }
}

/// Who holds the lock named by `base`, as its holder wrote it.
pub fn holder(mode: Mode, base: &Path) -> String {
    let p = match mode {
        Mode::LockDir => base.with_extension("lockdir").join("owner"),
        _ => base.with_extension("lock"),
    };
    // Never blocks: a FIFO in place of the lock file is refused, not read.
    crate::cache::safe::read(&p)
        .ok()
        .flatten()
        .map(|b| {
            readable_since(
                String::from_utf8_lossy(&b).trim(),
                std::time::SystemTime::now(),
            )
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "another process".into())
}

/// The holder's note says `since UNIXTIME` (any node can parse it); a person waiting reads
/// the local time and how long ago that was.
fn readable_since(note: &str, now: std::time::SystemTime) -> String {
    let Some((head, secs)) = note.rsplit_once(" since ") else {
        return note.to_string();
    };
    let Ok(t) = secs.trim().parse::<i64>() else {
        return note.to_string();
    };
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let age = (now - t).max(0);
    let ago = match age {
        a if a < 120 => format!("{a} s ago"),
        a if a < 7200 => format!("{} min ago", a / 60),
        a => format!("{} h ago", a / 3600),
    };
    format!("{head} since {} ({ago})", local_time(t))
}

/// `YYYY-MM-DD HH:MM:SS` in the local time zone (TZ, else /etc/localtime), as `date` says it.
fn local_time(t: i64) -> String {
    // SAFETY: localtime_r writes only the struct it is given; a zeroed tm is a valid start.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt = t as libc::time_t;
    if unsafe { libc::localtime_r(&tt, &mut tm) }.is_null() {
        return format!("{t} (Unix time)");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

impl Drop for Held {
    fn drop(&mut self) {
        match &mut self.kind {
            HeldKind::File(f) => {
                let _ = f.set_len(0);
                // Closing releases flock and OFD locks alike.
            }
            HeldKind::Dir { dir, stop, beat } => {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(b) = beat.take() {
                    let _ = b.join();
                }
                let _ = std::fs::remove_file(dir.join("owner"));
                let _ = std::fs::remove_dir(&*dir);
            }
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "flock" => Ok(Mode::Flock),
            "fcntl-ofd" => Ok(Mode::FcntlOfd),
            "lockdir" => Ok(Mode::LockDir),
            _ => Err(format!(
                "unknown lock mode {s:?}: flock, fcntl-ofd or lockdir"
            )),
        }
    }
}

#[cfg(test)]
mod mode_tests {
    use super::*;

    fn contender(mode: Mode, base: &Path) -> Outcome {
        probe::in_child(Duration::from_secs(10), |_| match try_acquire(mode, base) {
            Ok(Some(_)) => 0,
            Ok(None) => 1,
            Err(_) => 2,
        })
        .unwrap()
    }

    #[test]
    fn every_mode_excludes_another_process_and_releases_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [Mode::Flock, Mode::FcntlOfd, Mode::LockDir] {
            let base = dir.path().join(format!("x-{}", mode.as_str()));
            let held = try_acquire(mode, &base).unwrap().expect("free lock");
            assert_eq!(
                contender(mode, &base),
                Outcome::Exited(1, String::new()),
                "{mode:?} excludes"
            );
            assert!(
                holder(mode, &base).contains(&format!("pid {}", std::process::id())),
                "{mode:?}"
            );
            drop(held);
            // A flock belongs to the open file, which a child another test forks meanwhile
            // (a probe, a lock holder) inherits until it exits: give such a child a moment.
            let mut released = contender(mode, &base);
            for _ in 0..50 {
                if released != Outcome::Exited(1, String::new()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                released = contender(mode, &base);
            }
            assert_eq!(
                released,
                Outcome::Exited(0, String::new()),
                "{mode:?} released"
            );
        }
    }

    #[test]
    fn a_dead_holders_lockdir_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("d");
        // A holder that dies without releasing (as under SIGKILL).
        let out = probe::in_child(Duration::from_secs(10), |_| {
            let h = try_acquire(Mode::LockDir, &base).unwrap().unwrap();
            std::mem::forget(h);
            // SAFETY: leave at once, as a killed process would.
            unsafe { libc::_exit(0) }
        })
        .unwrap();
        assert_eq!(out, Outcome::Exited(0, String::new()));
        assert!(base.with_extension("lockdir").is_dir(), "left behind");
        // The first try notices the dead holder and breaks the lock; the next one takes it.
        assert!(try_acquire(Mode::LockDir, &base).unwrap().is_none());
        assert!(try_acquire(Mode::LockDir, &base).unwrap().is_some());
    }

    #[test]
    fn a_live_holder_with_a_fresh_heartbeat_is_not_stale() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("d");
        let _h = try_acquire(Mode::LockDir, &base).unwrap().unwrap();
        assert!(!lockdir_is_stale(&base.with_extension("lockdir")));
        // A holder on another node whose heartbeat stopped long ago is stale.
        let owner = base.with_extension("lockdir").join("owner");
        std::fs::write(&owner, "host elsewhere pid 1 since 0\n").unwrap();
        let old = std::time::SystemTime::now() - STALE_AFTER - Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&owner)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(lockdir_is_stale(&base.with_extension("lockdir")));
    }
}
