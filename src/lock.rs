//! Which kind of file lock works on a directory. The cache is shared by many processes on many
//! nodes, and filesystems differ: Lustre without `-o flock` refuses flock, NFS has been seen
//! to hang in it. Each mode is tried between two real processes, with a deadline, so the
//! answer is what the filesystem does rather than what its name suggests.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::probe::{self, Outcome};

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
        let open = || OpenOptions::new().read(true).write(true).open(path);
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
    let path = dir.join(format!(
        ".lock-probe.{}.{}",
        crate::host::hostname(),
        std::process::id()
    ));
    File::create(&path).map_err(|source| Error::ProbeFile {
        path: path.clone(),
        source,
    })?;
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
    use super::*;

    #[test]
    fn local_filesystem_supports_flock_and_ofd() {
        let dir = std::env::temp_dir().join(format!("lpmx-lock-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = probe(&dir, Duration::from_secs(10)).unwrap();
        assert_eq!(r.flock, Trial::Excludes);
        assert_eq!(r.fcntl_ofd, Trial::Excludes);
        assert_eq!(r.mode, Mode::Flock);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "probe file removed"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn missing_dir_is_an_error_naming_the_path() {
        let e = probe(Path::new("/nonexistent/lpmx"), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/lpmx"), "{e}");
    }
}
