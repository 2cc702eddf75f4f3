//! Node-local staging: where a job's staged image trees live on a node, and their removal.
//!
//! Layout (a contract: epilogs of every scheduler rely on it):
//! `BASE/lpmx-stage-UID/job-JOBID/...`, where BASE is node-local storage (`$TMPDIR`, else
//! `/tmp`, or `/dev/shm`). One directory per user (mode 0700, so other users cannot see or
//! plant anything), one per job inside it, so `cleanup --job ID` removes exactly what that job
//! staged on this node, and root (an epilog) can do it for every user at once. Every task
//! using a job's staging holds a shared lock on `job-JOBID/.inuse`; staging no task holds and
//! unused for [`RECLAIM_AFTER`] seconds is reclaimed by the user's next job on the node.
//!
//! When `BASE/lpmx-stage-UID` is not a private directory of UID's (another user made it first
//! in a shared /tmp, or it is a symbolic link), UID stages in `BASE/lpmx-stage-UID.XXXXXXXXXX`
//! instead: a random name made with mkdir's exclusive create, mode 0700, found again by the
//! job's other tasks (and by `cleanup`) by its owner, never by its name alone. Root's
//! `cleanup` removes such a squatted `lpmx-stage-UID` whole, as the user who owns it.
//!
//! Removal never follows a symbolic link and never acts on a path a user controls: it walks
//! by file descriptor ([`remove_at`]), and root first becomes the staging's owner, in a child
//! process ([`remove_job`]). A user who owns their staging can swap any part of it for a
//! symbolic link at any moment; that must only ever cost them their own files.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fswalk::{open_beneath, remove_at};
use rustix::fs::{AtFlags, Dir, FileType, Mode as FsMode, OFlags};
use rustix::io::Errno;

use serde::{Deserialize, Serialize};

/// Prefix of the per-user directory under a staging base.
pub const USER_PREFIX: &str = "lpmx-stage-";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "bad job id {0:?}: expected letters, digits, '.', '_', '-' or '[', ']' \
         (as SLURM_JOB_ID, PBS_JOBID or JOB_ID give it)"
    )]
    BadJobId(String),
    #[error("staging {path}: {source}")]
    Stage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path} as its owner {user}: {why}")]
    AsOwner {
        path: PathBuf,
        user: String,
        why: String,
    },
}

/// When `run` copies the image's tree to node-local storage (config `stage.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// When the cache sits on a network or parallel filesystem (NFS, Lustre, GPFS, BeeGFS).
    #[default]
    Auto,
    Always,
    Never,
}

/// The job this process belongs to, from the batch system's environment: the key of its
/// staging directory. None outside a job (nothing is staged then: no epilog would remove it).
pub fn job_id(var: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let get = |n: &str| var(n).filter(|v| !v.is_empty());
    get("SLURM_JOB_ID")
        .or_else(|| get("PBS_JOBID"))
        // SGE's JOB_ID is too common a name to trust without an SGE marker beside it.
        .or_else(|| {
            (get("SGE_TASK_ID").is_some() || get("SGE_ROOT").is_some())
                .then(|| get("JOB_ID"))
                .flatten()
        })
        .or_else(|| get("LSB_JOBID"))
        .or_else(|| get("FLUX_JOB_ID"))
        .filter(|j| check_job_id(j).is_ok())
}

/// Whether to stage, given the mode and the class of the cache's filesystem.
pub fn wanted(mode: Mode, cache_fs: crate::host::FsClass) -> bool {
    use crate::host::FsClass;
    match mode {
        Mode::Never => false,
        Mode::Always => true,
        Mode::Auto => matches!(cache_fs, FsClass::Network | FsClass::Parallel),
    }
}

/// The staging base: the configured `stage.dir`, else `$TMPDIR` (when absolute), else `/tmp`.
pub fn base(configured: Option<&Path>, tmpdir: Option<&str>) -> PathBuf {
    if let Some(d) = configured {
        return d.to_path_buf();
    }
    match tmpdir {
        Some(t) if Path::new(t).is_absolute() => PathBuf::from(t),
        _ => PathBuf::from("/tmp"),
    }
}

/// The node-local copy of an image tree for job `job`: `BASE/lpmx-stage-UID/job-JOB/NAME`
/// where NAME is the tree's own directory name (its content address). The first task of the
/// job on this node copies it under a lock, into a private directory renamed into place;
/// the node's other tasks wait on the lock and reuse it. Returns the staged tree and whether
/// this call made it. `warn` hears when the user's directory was squatted (see the module's
/// documentation) and another was used.
pub fn stage_tree(
    tree: &Path,
    base: &Path,
    uid: u32,
    job: &str,
    warn: &dyn Fn(&str),
) -> Result<(PathBuf, bool), Error> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Stage { path, source }
    };
    let name = tree
        .file_name()
        .ok_or_else(|| Error::Stage {
            path: tree.to_path_buf(),
            source: std::io::Error::other("not a tree directory"),
        })?
        .to_owned();
    check_job_id(job)?;
    let user = private_user_dir(base, uid, warn).map_err(err(&user_dir(base, uid)))?;
    let jobd = user.join(format!("job-{job}"));
    hold_job_dir(&jobd).map_err(err(&jobd))?;
    let dest = jobd.join(&name);
    let done = |d: &Path| d.join("tree.json").is_file();
    if done(&dest) {
        return Ok((dest, false));
    }
    let lock_path = jobd.join(format!("{}.lock", name.to_string_lossy()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(err(&lock_path))?;
    lock.lock().map_err(err(&lock_path))?;
    if done(&dest) {
        return Ok((dest, false));
    }
    let tmp = jobd.join(format!(
        ".tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.symlink_metadata().is_ok() {
        remove_tree(&tmp)?;
    }
    let mut links = std::collections::HashMap::new();
    if let Err(e) = copy_tree(tree, &tmp, &mut links) {
        let _ = remove_tree(&tmp);
        return Err(err(&dest)(e));
    }
    // A half-copied tree left by a killed task has no tree.json, so it is replaced.
    if dest.symlink_metadata().is_ok() {
        remove_tree(&dest)?;
    }
    std::fs::rename(&tmp, &dest).map_err(err(&dest))?;
    // The job's first task on this node also reclaims what jobs that ended without an
    // epilog or `cleanup` left here.
    let _ = reclaim(base, uid, job, RECLAIM_AFTER);
    Ok((dest, true))
}

/// Seconds after its last use that a job's staging nobody holds may be reclaimed.
pub const RECLAIM_AFTER: u64 = 3600;

/// The marker every task using a job's staging holds a shared lock on, for its whole life.
const INUSE: &str = ".inuse";

/// Creates the job's directory if needed and takes a shared lock on its `.inuse` marker, kept
/// by this process and the command it execs (the descriptor survives exec), so `reclaim`
/// leaves a job's staging alone while any of its tasks runs. Retried if a reclaim removed the
/// directory between our open and our lock.
fn hold_job_dir(jobd: &Path) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    for _ in 0..5 {
        match std::fs::create_dir(jobd) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let marker = jobd.join(INUSE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&marker)?;
        f.lock_shared()?;
        let same = std::fs::metadata(&marker)
            .map(|m| m.ino() == f.metadata().map(|n| n.ino()).unwrap_or(0))
            .unwrap_or(false);
        if !same {
            continue; // reclaimed under us: make it again
        }
        let now = std::fs::FileTimes::new().set_modified(std::time::SystemTime::now());
        let _ = f.set_times(now);
        unsafe {
            let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFD);
            libc::fcntl(f.as_raw_fd(), libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        }
        let _ = f.into_raw_fd(); // held until the task ends
        return Ok(());
    }
    Err(std::io::Error::other(
        "the job's staging directory keeps being removed",
    ))
}

/// Removes this user's staging of other jobs under `base` (in `lpmx-stage-UID` and in any
/// private `lpmx-stage-UID.*` of theirs) that no task holds and that no one used for `after`
/// seconds (their job ended and neither epilog nor `cleanup` ran). Returns what it removed.
pub fn reclaim(base: &Path, uid: u32, current: &str, after: u64) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    for user in own_user_dirs(base, uid) {
        reclaim_in(&user, current, after, &mut removed)?;
    }
    Ok(removed)
}

fn reclaim_in(
    user: &Path,
    current: &str,
    after: u64,
    removed: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(ufd) = rustix::fs::open(user, dir_flags, FsMode::empty()) else {
        return Ok(());
    };
    let now = std::time::SystemTime::now();
    let old = |secs: i64| {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        now.duration_since(t).unwrap_or_default().as_secs() >= after
    };
    for name in list(ufd.as_fd()).unwrap_or_default() {
        let Some(job) = name.to_str().and_then(|n| n.strip_prefix("job-")) else {
            continue;
        };
        if job == current {
            continue;
        }
        // Never through a symbolic link: only a real directory is judged, and removed.
        let Ok(jfd) = open_beneath(
            ufd.as_fd(),
            Path::new(&name),
            OFlags::PATH | OFlags::DIRECTORY,
        ) else {
            continue;
        };
        let idle = match open_beneath(jfd.as_fd(), Path::new(INUSE), OFlags::RDWR) {
            Ok(fd) => {
                let f = std::fs::File::from(fd);
                if f.try_lock().is_err() {
                    continue; // a task of that job runs
                }
                f.metadata().is_ok_and(|m| m.is_file() && old(m.mtime()))
            }
            // No marker: an older layout or a half-made directory; judged by its own age.
            Err(Errno::NOENT) => rustix::fs::fstat(&jfd).is_ok_and(|st| old(st.st_mtime)),
            Err(_) => continue,
        };
        if idle {
            let d = user.join(&name);
            remove_at(ufd.as_fd(), &name).map_err(|source| Error::Io {
                path: d.clone(),
                source,
            })?;
            removed.push(d);
        }
    }
    Ok(())
}

/// Whether `m` is a directory of `uid`'s that no one else can write in.
fn is_private(m: &std::fs::Metadata, uid: u32) -> bool {
    m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0
}

/// The user's staging directory under `base`: `lpmx-stage-UID`, created (mode 0700) if
/// missing. When that name is taken by something that is not a private directory of the
/// user's (a shared /tmp lets anyone create it first), staging goes to the user's own
/// `lpmx-stage-UID.XXXXXXXXXX` instead, and `warn` says why.
fn private_user_dir(base: &Path, uid: u32, warn: &dyn Fn(&str)) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = user_dir(base, uid);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => return Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = dir.symlink_metadata()?;
    if is_private(&m, uid) {
        return Ok(dir);
    }
    let why = if m.uid() != uid {
        format!(
            "{} belongs to {}, not to this user",
            dir.display(),
            user_name(m.uid())
        )
    } else if m.file_type().is_symlink() {
        format!("{} is a symbolic link", dir.display())
    } else if !m.is_dir() {
        format!("{} is not a directory", dir.display())
    } else {
        format!("{} can be written by others", dir.display())
    };
    let fallback = fallback_dir(base, uid)?;
    warn(&format!(
        "{why}: staging in {} instead (root's `lpmx-job cleanup` removes a squatted one)",
        fallback.display()
    ));
    Ok(fallback)
}

/// The user's private fallback directory under `base`: the first, in name order, of the
/// `lpmx-stage-UID.*` that are private directories of theirs, or a new one with a random
/// name. Tasks of a job racing to make one each end up agreeing on the same first one.
fn fallback_dir(base: &Path, uid: u32) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(d) = own_fallbacks(base, uid).into_iter().next() {
        return Ok(d);
    }
    let mut made = None;
    for _ in 0..100 {
        let d = base.join(format!("{USER_PREFIX}{uid}.{}", random_suffix()?));
        // mkdir fails if the name exists, whoever made it, so what we made is ours alone.
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => {
                made = Some(d);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    let made = made.ok_or_else(|| std::io::Error::other("no free random name"))?;
    let first = own_fallbacks(base, uid)
        .into_iter()
        .next()
        .unwrap_or_else(|| made.clone());
    if first != made {
        let _ = std::fs::remove_dir(&made);
    }
    Ok(first)
}

/// `BASE/lpmx-stage-UID.*` that are private directories of `uid`'s, in name order.
fn own_fallbacks(base: &Path, uid: u32) -> Vec<PathBuf> {
    let prefix = format!("{USER_PREFIX}{uid}.");
    let mut v: Vec<PathBuf> = std::fs::read_dir(base)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().as_bytes().starts_with(prefix.as_bytes()))
                .map(|e| e.path())
                .filter(|p| p.symlink_metadata().is_ok_and(|m| is_private(&m, uid)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every staging directory of `uid`'s under `base`: `lpmx-stage-UID` when it is theirs, and
/// their fallbacks.
fn own_user_dirs(base: &Path, uid: u32) -> Vec<PathBuf> {
    let canonical = user_dir(base, uid);
    let mut v: Vec<PathBuf> = canonical
        .symlink_metadata()
        .is_ok_and(|m| m.is_dir() && m.uid() == uid)
        .then_some(canonical)
        .into_iter()
        .collect();
    v.extend(own_fallbacks(base, uid));
    v
}

/// Ten letters and digits from the kernel's random source: a name no one can guess ahead.
fn random_suffix() -> std::io::Result<String> {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut buf = [0u8; 10];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(buf
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect())
}

/// A user's name for messages, or their uid when they have none.
fn user_name(uid: u32) -> String {
    match crate::host::accounts::user(uid) {
        Some(u) => format!("{} (uid {uid})", u.name),
        None => format!("uid {uid}"),
    }
}

/// Copies a tree: directories, regular files (hard links kept as hard links), symbolic links;
/// modes and modification times kept. Directories get their mode after their contents.
fn copy_tree(
    src: &Path,
    dst: &Path,
    links: &mut std::collections::HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    let m = src.symlink_metadata()?;
    let ft = m.file_type();
    if ft.is_dir() {
        std::fs::create_dir(dst)?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o700))?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()), links)?;
        }
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        let key = (m.dev(), m.ino());
        if m.nlink() > 1 {
            if let Some(first) = links.get(&key) {
                return std::fs::hard_link(first, dst);
            }
        }
        std::fs::copy(src, dst)?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        if m.nlink() > 1 {
            links.insert(key, dst.to_path_buf());
        }
    } else {
        // Devices, sockets, fifos: an image tree holds none a user could recreate; skip.
        return Ok(());
    }
    set_mtime(dst, m.mtime(), m.mtime_nsec())
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        },
    ];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Checks a job id before it becomes part of a path: no `/`, no `..`, nothing empty.
pub fn check_job_id(job: &str) -> Result<(), Error> {
    let ok = !job.is_empty()
        && job.len() <= 128
        && job != "."
        && job != ".."
        && job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadJobId(job.to_string()))
    }
}

/// The staging bases searched by default: `$TMPDIR` (when absolute), `/tmp`, `/dev/shm`,
/// each once.
pub fn default_bases(tmpdir: Option<&str>) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    let cands = [tmpdir.unwrap_or(""), "/tmp", "/dev/shm"];
    for c in cands {
        let p = PathBuf::from(c);
        if c.is_empty() || !p.is_absolute() {
            continue;
        }
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

/// `BASE/lpmx-stage-UID`
pub fn user_dir(base: &Path, uid: u32) -> PathBuf {
    base.join(format!("{USER_PREFIX}{uid}"))
}

/// `BASE/lpmx-stage-UID/job-JOBID`
pub fn job_dir(base: &Path, uid: u32, job: &str) -> Result<PathBuf, Error> {
    check_job_id(job)?;
    Ok(user_dir(base, uid).join(format!("job-{job}")))
}

/// What [`remove_job`] did under one base.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// What it removed: jobs' directories, and squatted user directories (root only).
    pub removed: Vec<PathBuf>,
    /// What it could not remove, each with its reason; the others were still done.
    pub failed: Vec<Error>,
}

/// If `name` is `lpmx-stage-UID` or `lpmx-stage-UID.SUFFIX`, the UID it is named for.
fn named_for(name: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(USER_PREFIX.as_bytes())?;
    let (digits, suffix) = match rest.iter().position(|&b| b == b'.') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if suffix.is_some_and(|s| s.is_empty() || !s.iter().all(u8::is_ascii_alphanumeric)) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// How long root's cleanup waits for the removal of one user's staging: a user can make
/// theirs slow (or stop the process, which is theirs), but not hold up everyone else's.
const AS_OWNER_LIMIT: Duration = Duration::from_secs(20);

/// Removes what job `job` staged under `base`: for user `uid` only (every `lpmx-stage-UID`
/// and `lpmx-stage-UID.*` that is theirs), or for every user when `uid` is None (root in an
/// epilog). A missing base or nothing staged is not an error.
///
/// Root acts on no user's path: it opens the base, opens each user directory in it without
/// following symbolic links, reads its owner from the descriptor, and removes that
/// directory's `job-JOBID` in a child process that has become that owner (their uid and
/// primary group, no other group), walking by descriptor ([`remove_at`]). An
/// `lpmx-stage-UID*` owned by someone other than UID is a squat: it goes whole, removed as
/// its owner. What is root's own is removed by root, unless others can write in it.
pub fn remove_job(base: &Path, job: &str, uid: Option<u32>) -> Result<Cleaned, Error> {
    check_job_id(job)?;
    let job_name = OsString::from(format!("job-{job}"));
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let base_fd = match rustix::fs::open(base, dir_flags, FsMode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Cleaned::default()),
        Err(e) => {
            return Err(Error::Io {
                path: base.to_path_buf(),
                source: e.into(),
            })
        }
    };
    let names = list(base_fd.as_fd()).map_err(|source| Error::Io {
        path: base.to_path_buf(),
        source,
    })?;
    let mut done = Cleaned::default();
    for name in names {
        let Some(named) = named_for(name.as_bytes()) else {
            continue;
        };
        if uid.is_some_and(|u| u != named) {
            continue;
        }
        let path = base.join(&name);
        let st = match rustix::fs::statat(&base_fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => {
                done.failed.push(Error::Io {
                    path,
                    source: e.into(),
                });
                continue;
            }
        };
        let owner = st.st_uid;
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if owner != named {
            // Someone else's, under this user's name (a squat, or a stray of root's). Only
            // root removes it, and only as its owner: not root's, if root's.
            if uid.is_some() || owner == 0 {
                continue;
            }
            match as_owner(owner, || remove_at(base_fd.as_fd(), &name)) {
                Ok(true) => done.removed.push(path),
                Ok(false) => {}
                Err(why) => done.failed.push(Error::AsOwner {
                    path,
                    user: user_name(owner),
                    why,
                }),
            }
            continue;
        }
        if !is_dir {
            continue; // the user's own symbolic link (or file): never followed
        }
        let user_fd = match rustix::fs::openat(
            &base_fd,
            &name,
            dir_flags | OFlags::NOFOLLOW,
            FsMode::empty(),
        )
        .and_then(|fd| rustix::fs::fstat(&fd).map(|st| (fd, st)))
        {
            // Checked again on the descriptor: the name may have been replaced since.
            Ok((fd, st)) if st.st_uid == named => (fd, st),
            Ok(_) | Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
            Err(e) => {
                done.failed.push(Error::Io {
                    path,
                    source: e.into(),
                });
                continue;
            }
        };
        let (user_fd, st) = user_fd;
        if owner == 0 && st.st_mode & 0o022 != 0 {
            continue; // root's, but others can write in it: not root's to walk
        }
        let d = path.join(&job_name);
        match as_owner(owner, || remove_at(user_fd.as_fd(), &job_name)) {
            Ok(true) => done.removed.push(d),
            Ok(false) => {}
            Err(why) => done.failed.push(Error::AsOwner {
                path: d,
                user: user_name(owner),
                why,
            }),
        }
    }
    Ok(done)
}

/// The names in a directory (`dir` may be an O_PATH descriptor), but `.` and `..`.
fn list(dir: BorrowedFd<'_>) -> std::io::Result<Vec<OsString>> {
    let read = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, ".", read, FsMode::empty())?;
    let mut v = Vec::new();
    for item in Dir::new(fd)? {
        let item = item?;
        let n = item.file_name().to_bytes();
        if n != b"." && n != b".." {
            v.push(OsStr::from_bytes(n).to_owned());
        }
    }
    Ok(v)
}

/// Runs `work` as the user `uid`: directly when this process is that user, else (root) in a
/// forked child that drops to that user's uid and primary group, with no supplementary
/// groups, before it does anything, and that no one may trace. Returns what `work` returned,
/// or why it did not run or finish (within [`AS_OWNER_LIMIT`]).
fn as_owner(uid: u32, work: impl FnOnce() -> std::io::Result<bool>) -> Result<bool, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == uid {
        return work().map_err(|e| e.to_string());
    }
    // The child allocates (messages, the walk's names) and takes no lock: sound only when no
    // other thread could have held the allocator's lock at the fork. Cleanup starts none.
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if threads != 1 {
        return Err(format!(
            "refusing to fork from a process with {threads} threads (or no /proc)"
        ));
    }
    // Looked up before the fork: the name service may open sockets and load modules.
    let gid = crate::host::accounts::user(uid).map_or(NOGROUP, |u| u.gid);
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let (rfd, wfd) = (fds[0], fds[1]);
    // SAFETY: the process is single-threaded (checked above), so the child may run Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing the two descriptors pipe2 just made.
        unsafe {
            libc::close(rfd);
            libc::close(wfd);
        }
        return Err(format!("fork: {e}"));
    }
    if pid == 0 {
        // SAFETY: only the child runs this; it never returns (_exit), so nothing of the
        // parent's is dropped or flushed twice.
        unsafe {
            libc::close(rfd);
            let dropped = libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
                && libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(gid, gid, gid) == 0
                && libc::setresuid(uid, uid, uid) == 0
                && libc::getuid() == uid
                && libc::geteuid() == uid
                && libc::getegid() == gid
                && libc::setresuid(0, 0, 0) != 0;
            let (code, msg) = if !dropped {
                (
                    1,
                    format!(
                        "could not become uid {uid} gid {gid}: {}",
                        std::io::Error::last_os_error()
                    ),
                )
            } else {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                    Ok(Ok(true)) => (0, String::new()),
                    Ok(Ok(false)) => (3, String::new()),
                    Ok(Err(e)) => (1, e.to_string()),
                    Err(_) => (1, "panicked".to_string()),
                }
            };
            libc::write(wfd, msg.as_ptr().cast(), msg.len());
            libc::_exit(code);
        }
    }
    // SAFETY: the parent's copy of the write end; the child holds its own.
    unsafe { libc::close(wfd) };
    // SAFETY: rfd is ours alone from here on.
    let rfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rfd) };
    let deadline = std::time::Instant::now() + AS_OWNER_LIMIT;
    let mut msg = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: rfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd it is given.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(60_000) as i32) };
        if n == 0 {
            timed_out = true;
            break;
        }
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            timed_out = true;
            break;
        }
        let mut buf = [0u8; 4096];
        match rustix::io::read(&rfd, &mut buf) {
            Ok(0) => break,
            Ok(k) => msg.extend_from_slice(&buf[..k]),
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    if timed_out {
        // SAFETY: pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
    }
    let msg = String::from_utf8_lossy(&msg).into_owned();
    if timed_out {
        return Err(format!(
            "did not finish within {}s; stopped",
            AS_OWNER_LIMIT.as_secs()
        ));
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(true),
        (true, 3) => Ok(false),
        (true, _) if !msg.is_empty() => Err(msg),
        _ => Err(format!(
            "the child process failed (wait status {status:#x})"
        )),
    }
}

/// The group a user without a passwd entry runs as: `nogroup`'s usual id.
const NOGROUP: u32 = 65534;

/// Removes `path` and, if it is a directory, everything below it, read-only directories
/// included, with [`remove_at`] relative to its parent (opened by path: the caller's own).
/// Never follows a symbolic link below the parent.
pub fn remove_tree(path: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match crate::fswalk::remove(path) {
        Ok(true) => Ok(()),
        Ok(false) => Err(io(std::io::ErrorKind::NotFound.into())),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_that_could_escape_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "1 2", "x\n"] {
            assert!(check_job_id(bad).is_err(), "{bad:?}");
        }
        for good in ["42", "123.pbs-server", "7_3", "9[1]", "12345.0"] {
            assert!(check_job_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn default_bases_are_absolute_and_unique() {
        assert_eq!(
            default_bases(Some("/scratch/x")),
            vec![
                PathBuf::from("/scratch/x"),
                PathBuf::from("/tmp"),
                PathBuf::from("/dev/shm")
            ]
        );
        assert_eq!(default_bases(Some("/tmp")).len(), 2);
        assert_eq!(default_bases(Some("rel")).len(), 2);
        assert_eq!(default_bases(None).len(), 2);
    }

    #[test]
    fn job_id_comes_from_the_batch_system() {
        let from = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(job_id(&from(&[("SLURM_JOB_ID", "42")])), Some("42".into()));
        assert_eq!(
            job_id(&from(&[("PBS_JOBID", "7.server")])),
            Some("7.server".into())
        );
        assert_eq!(job_id(&from(&[("JOB_ID", "9")])), None, "JOB_ID alone");
        assert_eq!(
            job_id(&from(&[("JOB_ID", "9"), ("SGE_TASK_ID", "undefined")])),
            Some("9".into())
        );
        assert_eq!(job_id(&from(&[("SLURM_JOB_ID", "../x")])), None);
        assert_eq!(job_id(&from(&[])), None);
    }

    #[test]
    fn auto_stages_only_from_shared_filesystems() {
        use crate::host::FsClass;
        assert!(wanted(Mode::Auto, FsClass::Network));
        assert!(wanted(Mode::Auto, FsClass::Parallel));
        assert!(!wanted(Mode::Auto, FsClass::Local));
        assert!(wanted(Mode::Always, FsClass::Local));
        assert!(!wanted(Mode::Never, FsClass::Parallel));
        assert_eq!(base(None, Some("/scratch/j")), PathBuf::from("/scratch/j"));
        assert_eq!(base(None, Some("rel")), PathBuf::from("/tmp"));
        assert_eq!(
            base(Some(Path::new("/dev/shm")), Some("/x")),
            PathBuf::from("/dev/shm")
        );
    }

    #[test]
    fn a_staged_tree_is_a_faithful_copy_made_once() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("cache/trees-v1/abc123");
        let root = tree.join("root");
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(tree.join("mnt")).unwrap();
        std::fs::write(tree.join("tree.json"), "{}").unwrap();
        std::fs::write(root.join("data/keep.txt"), "v2\n").unwrap();
        std::fs::hard_link(root.join("data/keep.txt"), root.join("data/hard")).unwrap();
        std::os::unix::fs::symlink("keep.txt", root.join("data/rel")).unwrap();
        std::fs::set_permissions(root.join("data"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        set_mtime(&root.join("data/keep.txt"), 978_307_200, 0).unwrap();

        let base = t.path().join("node");
        std::fs::create_dir(&base).unwrap();
        let uid = crate::host::uid();
        let (dest, made) = stage_tree(&tree, &base, uid, "77", &|_| {}).unwrap();
        assert!(made);
        assert_eq!(dest, base.join(format!("lpmx-stage-{uid}/job-77/abc123")));
        let d = dest.join("root/data");
        assert_eq!(std::fs::read_to_string(d.join("keep.txt")).unwrap(), "v2\n");
        let m = |p: &Path| p.symlink_metadata().unwrap();
        assert_eq!(m(&d.join("keep.txt")).ino(), m(&d.join("hard")).ino());
        assert_eq!(m(&d.join("keep.txt")).mtime(), 978_307_200);
        assert_eq!(
            std::fs::read_link(d.join("rel")).unwrap(),
            PathBuf::from("keep.txt")
        );
        assert_eq!(m(&d).mode() & 0o777, 0o555);
        assert!(dest.join("mnt").is_dir() && dest.join("tree.json").is_file());
        assert_eq!(
            m(&base.join(format!("lpmx-stage-{uid}"))).mode() & 0o777,
            0o700
        );
        // The job's next task reuses it.
        let (again, made) = stage_tree(&tree, &base, uid, "77", &|_| {}).unwrap();
        assert_eq!((again, made), (dest.clone(), false));
        // The epilog's cleanup removes it, read-only directories and all.
        assert_eq!(remove_job(&base, "77", Some(uid)).unwrap().removed.len(), 1);
        assert!(!dest.exists());
        std::fs::set_permissions(root.join("data"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }

    #[test]
    fn staging_of_ended_jobs_is_reclaimed_and_running_ones_kept() {
        use std::os::fd::FromRawFd;
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        let uid = crate::host::uid();
        let tree = t.path().join("trees/abc");
        std::fs::create_dir_all(tree.join("root")).unwrap();
        std::fs::write(tree.join("tree.json"), "{}").unwrap();
        // Job 1 "runs": this process holds its marker. Job 2 ended: nobody holds it.
        stage_tree(&tree, base, uid, "1", &|_| {}).unwrap();
        let held: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let fd: i32 = e.file_name().to_string_lossy().parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                target.ends_with("job-1/.inuse").then_some(fd)
            })
            .collect();
        assert_eq!(held.len(), 1, "the task holds job 1's marker");
        let j2 = user_dir(base, uid).join("job-2");
        std::fs::create_dir_all(j2.join("abc/root")).unwrap();
        std::fs::write(j2.join(INUSE), "").unwrap();
        // Used just now: kept until RECLAIM_AFTER has passed.
        assert!(reclaim(base, uid, "3", RECLAIM_AFTER).unwrap().is_empty());
        let removed = reclaim(base, uid, "3", 0).unwrap();
        assert_eq!(removed, vec![j2.clone()], "job 1 is in use, job 2 is not");
        // Job 1's task ends: its staging can go too, but never the current job's.
        drop(unsafe { std::fs::File::from_raw_fd(held[0]) });
        assert!(reclaim(base, uid, "1", 0).unwrap().is_empty());
        assert_eq!(reclaim(base, uid, "3", 0).unwrap().len(), 1);
    }

    fn mode(p: &Path) -> u32 {
        p.symlink_metadata().unwrap().mode() & 0o7777
    }

    fn set_mode(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn remove_job_takes_only_that_job_and_read_only_trees() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        let uid = crate::host::uid();
        let j1 = job_dir(base, uid, "1").unwrap();
        let j2 = job_dir(base, uid, "2").unwrap();
        for j in [&j1, &j2] {
            std::fs::create_dir_all(j.join("tree/bin")).unwrap();
            std::fs::write(j.join("tree/bin/sh"), "x").unwrap();
            set_mode(&j.join("tree/bin"), 0o555);
            set_mode(&j.join("tree"), 0o555);
        }
        // A symbolic link named like a user directory is never followed.
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("job-1")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.join(format!("lpmx-stage-{uid}.x"))).unwrap();

        let done = remove_job(base, "1", None).unwrap();
        assert_eq!(done.removed, vec![j1.clone()]);
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        assert!(!j1.exists());
        assert!(j2.join("tree/bin/sh").exists());
        assert!(elsewhere.join("job-1").exists());
        assert!(remove_job(base, "1", Some(uid)).unwrap().removed.is_empty());
        assert_eq!(
            remove_job(base, "2", Some(uid)).unwrap().removed,
            vec![j2.clone()]
        );
        assert!(remove_job(&base.join("missing"), "2", None)
            .unwrap()
            .removed
            .is_empty());
        assert!(remove_job(base, "../x", None).is_err());
    }

    #[test]
    fn user_directory_names_are_recognised() {
        assert_eq!(named_for(b"lpmx-stage-1001"), Some(1001));
        assert_eq!(named_for(b"lpmx-stage-1001.aZ09xYq1bC"), Some(1001));
        for bad in [
            &b"lpmx-stage-"[..],
            b"lpmx-stage-x",
            b"lpmx-stage-1001.",
            b"lpmx-stage-1001.a/b",
            b"lpmx-stage-1001.a.b",
            b"other-1001",
        ] {
            assert_eq!(named_for(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The remover empties read-only directories (mode 0555, 0, 0200), and removes a
    /// symbolic link as a link: what it points at (outside, read-only, or a file) keeps its
    /// content and its mode.
    #[test]
    fn the_remover_never_follows_links_and_takes_read_only_trees() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("sub/keep"), "k").unwrap();
        std::fs::write(outside.join("file"), "f").unwrap();
        set_mode(&outside.join("file"), 0o640);
        set_mode(&outside.join("sub"), 0o550);
        let top = t.path().join("job-9");
        std::fs::create_dir_all(top.join("a/b/c")).unwrap();
        std::fs::write(top.join("a/b/c/f"), "x").unwrap();
        std::os::unix::fs::symlink(outside.join("sub"), top.join("a/to-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("file"), top.join("a/b/to-file")).unwrap();
        std::os::unix::fs::symlink("/", top.join("root-link")).unwrap();
        std::os::unix::fs::symlink("dangling", top.join("a/dangling")).unwrap();
        std::fs::create_dir(top.join("empty-0")).unwrap();
        std::fs::create_dir(top.join("wo")).unwrap();
        std::fs::write(top.join("wo/f"), "x").unwrap();
        set_mode(&top.join("a/b/c"), 0o555);
        set_mode(&top.join("a/b"), 0o500);
        set_mode(&top.join("a"), 0o555);
        set_mode(&top.join("empty-0"), 0);
        set_mode(&top.join("wo"), 0o200);
        set_mode(&top, 0o6555);
        let dir = std::fs::File::open(t.path()).unwrap();
        assert!(remove_at(dir.as_fd(), OsStr::new("job-9")).unwrap());
        assert!(top.symlink_metadata().is_err(), "removed");
        assert!(
            !remove_at(dir.as_fd(), OsStr::new("job-9")).unwrap(),
            "nothing left"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("sub/keep")).unwrap(),
            "k"
        );
        assert_eq!(
            mode(&outside.join("sub")),
            0o550,
            "not chmod-ed through the link"
        );
        assert_eq!(mode(&outside.join("file")), 0o640);
        assert!(Path::new("/bin").exists());
        // A link given as the entry itself goes as a link too; a file as a file.
        std::os::unix::fs::symlink(&outside, t.path().join("link")).unwrap();
        assert!(remove_at(dir.as_fd(), OsStr::new("link")).unwrap());
        assert!(outside.join("file").exists());
        // The path form removes the same way.
        std::fs::create_dir_all(t.path().join("p/q")).unwrap();
        set_mode(&t.path().join("p"), 0o500);
        remove_tree(&t.path().join("p")).unwrap();
        assert!(!t.path().join("p").exists());
        set_mode(&outside.join("sub"), 0o750);
    }

    /// Each component is opened without following a link, with openat2 or without.
    #[test]
    fn open_beneath_refuses_links_and_escapes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("l")).unwrap();
        std::os::unix::fs::symlink("b", t.path().join("a/lb")).unwrap();
        let d = std::fs::File::open(t.path()).unwrap();
        let dir = OFlags::PATH | OFlags::DIRECTORY;
        assert!(open_beneath(d.as_fd(), Path::new("a/b"), dir).is_ok());
        for bad in ["l", "l/b", "a/lb", "../x", "/etc", "a/../a"] {
            assert!(
                open_beneath(d.as_fd(), Path::new(bad), dir).is_err(),
                "{bad}"
            );
            assert!(
                open_beneath(d.as_fd(), Path::new(bad), OFlags::PATH).is_err(),
                "{bad}"
            );
        }
    }

    /// Someone else made `lpmx-stage-UID` first (here: it is a link, or open to others):
    /// staging still works, in a private directory with a random name that the job's next
    /// task finds again and that `cleanup` and `reclaim` find by owner.
    #[test]
    fn a_squatted_user_directory_is_worked_around() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("node");
        std::fs::create_dir(&base).unwrap();
        let uid = crate::host::uid();
        let tree = t.path().join("trees/abc");
        std::fs::create_dir_all(tree.join("root")).unwrap();
        std::fs::write(tree.join("tree.json"), "{}").unwrap();
        for squat in ["link", "open"] {
            let canonical = user_dir(&base, uid);
            if squat == "link" {
                std::os::unix::fs::symlink(t.path(), &canonical).unwrap();
            } else {
                std::fs::create_dir(&canonical).unwrap();
                set_mode(&canonical, 0o777);
            }
            let warned = std::cell::RefCell::new(Vec::new());
            let warn = |m: &str| warned.borrow_mut().push(m.to_string());
            let (dest, made) = stage_tree(&tree, &base, uid, "5", &warn).unwrap();
            assert!(made);
            let fb = dest.parent().unwrap().parent().unwrap().to_path_buf();
            let fname = fb.file_name().unwrap().to_string_lossy().into_owned();
            assert!(fname.starts_with(&format!("lpmx-stage-{uid}.")), "{fname}");
            assert_eq!(fname.len(), format!("lpmx-stage-{uid}.").len() + 10);
            assert_eq!(mode(&fb), 0o700);
            let w = warned.borrow().join("\n");
            assert!(w.contains(&canonical.display().to_string()), "{w}");
            assert!(w.contains(&fb.display().to_string()), "{w}");
            let (again, made) = stage_tree(&tree, &base, uid, "5", &warn).unwrap();
            assert_eq!(
                (again, made),
                (dest.clone(), false),
                "the next task finds it"
            );
            // Another job's staging there is reclaimed once idle; the job's own is removed.
            let other = fb.join("job-4");
            std::fs::create_dir(&other).unwrap();
            assert_eq!(reclaim(&base, uid, "5", 0).unwrap(), vec![other]);
            let done = remove_job(&base, "5", Some(uid)).unwrap();
            assert_eq!(done.removed, vec![fb.join("job-5")]);
            assert!(!dest.exists());
            assert!(
                t.path().join("trees/abc/tree.json").exists(),
                "link not followed"
            );
            if squat == "link" {
                std::fs::remove_file(&canonical).unwrap();
            } else {
                std::fs::remove_dir(&canonical).unwrap();
            }
        }
    }

    /// Root's removal as another user forks, which is sound only in a single-threaded
    /// process: in this multi-threaded test harness it is refused, and nothing is touched.
    /// (The fork and the drop are tried for real by the integration tests, tests/integration/
    /// trust/hooks.rs, where root runs `lpmx-job cleanup`.) Runs only as root.
    #[test]
    fn root_refuses_to_fork_from_a_threaded_process() {
        use std::os::unix::fs::chown;
        if crate::host::uid() != 0 {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        let nobody = 65534;
        let job = user_dir(base, nobody).join("job-3");
        std::fs::create_dir_all(&job).unwrap();
        for p in [&user_dir(base, nobody), &job] {
            chown(p, Some(nobody), Some(nobody)).unwrap();
        }
        let done = remove_job(base, "3", None).unwrap();
        assert!(done.removed.is_empty());
        let e = done.failed[0].to_string();
        assert!(e.contains("threads") && e.contains("nobody"), "{e}");
        assert!(job.exists());
    }
}
