//! Node-local staging: where a job's staged image trees live on a node, and their removal.
//!
//! Layout (a contract: epilogs of every scheduler rely on it):
//! `BASE/lpmx-stage-UID/job-JOBID/...`, where BASE is node-local storage (`$TMPDIR`, else
//! `/tmp`, or `/dev/shm`). One directory per user (mode 0700, so other users cannot see or
//! plant anything), one per job inside it, so `cleanup --job ID` removes exactly what that job
//! staged on this node, and root (an epilog) can do it for every user at once. Every task
//! using a job's staging holds a shared lock on `job-JOBID/.inuse`; staging no task holds and
//! unused for [`RECLAIM_AFTER`] seconds is reclaimed by the user's next job on the node.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
/// this call made it.
pub fn stage_tree(tree: &Path, base: &Path, uid: u32, job: &str) -> Result<(PathBuf, bool), Error> {
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
    let user = user_dir(base, uid);
    make_private_dir(&user).map_err(err(&user))?;
    let jobd = job_dir(base, uid, job)?;
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

/// Removes this user's staging of other jobs under `base` that no task holds and that no one
/// used for `after` seconds (their job ended and neither epilog nor `cleanup` ran). Returns
/// what it removed.
pub fn reclaim(base: &Path, uid: u32, current: &str, after: u64) -> Result<Vec<PathBuf>, Error> {
    let user = user_dir(base, uid);
    let Ok(rd) = std::fs::read_dir(&user) else {
        return Ok(Vec::new());
    };
    let now = std::time::SystemTime::now();
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(job) = name.strip_prefix("job-") else {
            continue;
        };
        if job == current || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let d = e.path();
        let marker = d.join(INUSE);
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(&marker) else {
            // No marker: an older layout or a half-made directory; judged by its own age.
            let old = d
                .symlink_metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default().as_secs() >= after);
            if old {
                remove_tree(&d)?;
                removed.push(d);
            }
            continue;
        };
        if f.try_lock().is_err() {
            continue; // a task of that job runs
        }
        let idle = f
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default().as_secs() >= after);
        if idle {
            remove_tree(&d)?;
            removed.push(d);
        }
    }
    Ok(removed)
}

/// Creates `dir` (mode 0700) or checks that the existing one is a directory of ours that no
/// one else can write: a shared /tmp must not let another user plant the tree we run.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = dir.symlink_metadata()?;
    if !m.is_dir() || m.uid() != crate::host::uid() || m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(
            "exists but is not a directory of this user that only this user can write; \
             remove it or set stage.dir elsewhere",
        ));
    }
    Ok(())
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

/// Removes what job `job` staged under `base`: for user `uid` only, or for every user when
/// `uid` is None (root in an epilog). Returns the directories removed. A missing base or
/// nothing staged is not an error.
pub fn remove_job(base: &Path, job: &str, uid: Option<u32>) -> Result<Vec<PathBuf>, Error> {
    check_job_id(job)?;
    let users: Vec<PathBuf> = match uid {
        Some(u) => vec![user_dir(base, u)],
        None => match std::fs::read_dir(base) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix(USER_PREFIX)
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .map(|e| e.path())
                .collect(),
            Err(_) => Vec::new(),
        },
    };
    let mut removed = Vec::new();
    for u in users {
        // Only a real directory, never a symbolic link someone planted in a shared /tmp.
        match u.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            _ => continue,
        }
        let d = u.join(format!("job-{job}"));
        match d.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                remove_tree(&d)?;
                removed.push(d);
            }
            Ok(_) => {
                std::fs::remove_file(&d).map_err(|source| Error::Io {
                    path: d.clone(),
                    source,
                })?;
                removed.push(d);
            }
            Err(_) => {}
        }
    }
    Ok(removed)
}

/// Removes a directory tree whose directories may be read-only (staged image trees are):
/// each directory is made writable by its owner before its entries go. Never follows
/// symbolic links.
pub fn remove_tree(dir: &Path) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let meta = dir.symlink_metadata().map_err(io(dir))?;
    if !meta.is_dir() {
        return std::fs::remove_file(dir).map_err(io(dir));
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700))
            .map_err(io(dir))?;
    }
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let p = e.path();
        if e.file_type().map_err(io(&p))?.is_dir() {
            remove_tree(&p)?;
        } else {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    std::fs::remove_dir(dir).map_err(io(dir))
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
        let (dest, made) = stage_tree(&tree, &base, uid, "77").unwrap();
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
        let (again, made) = stage_tree(&tree, &base, uid, "77").unwrap();
        assert_eq!((again, made), (dest.clone(), false));
        // The epilog's cleanup removes it, read-only directories and all.
        assert_eq!(remove_job(&base, "77", Some(uid)).unwrap().len(), 1);
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
        stage_tree(&tree, base, uid, "1").unwrap();
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

    #[test]
    fn remove_job_takes_only_that_job_and_read_only_trees() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        let uid = 4242;
        let j1 = job_dir(base, uid, "1").unwrap();
        let j2 = job_dir(base, uid, "2").unwrap();
        for j in [&j1, &j2] {
            std::fs::create_dir_all(j.join("tree/bin")).unwrap();
            std::fs::write(j.join("tree/bin/sh"), "x").unwrap();
            std::fs::set_permissions(j.join("tree/bin"), std::fs::Permissions::from_mode(0o555))
                .unwrap();
            std::fs::set_permissions(j.join("tree"), std::fs::Permissions::from_mode(0o555))
                .unwrap();
        }
        // A symbolic link named like a user directory is never followed.
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("job-1")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.join("lpmx-stage-7")).unwrap();

        let removed = remove_job(base, "1", None).unwrap();
        assert_eq!(removed, vec![j1.clone()]);
        assert!(!j1.exists());
        assert!(j2.join("tree/bin/sh").exists());
        assert!(elsewhere.join("job-1").exists());
        assert!(remove_job(base, "1", Some(uid)).unwrap().is_empty());
        assert_eq!(remove_job(base, "2", Some(uid)).unwrap(), vec![j2.clone()]);
        assert!(remove_job(&base.join("missing"), "2", None)
            .unwrap()
            .is_empty());
        assert!(remove_job(base, "../x", None).is_err());
    }
}
