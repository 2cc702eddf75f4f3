//! Walking and removing directory trees by file descriptor, whatever their depth.
//!
//! Cache trees come from images, and an image may nest directories thousands deep, or make
//! its real paths longer than PATH_MAX through symlinked parents. Anything that works by path
//! (`std::fs`, walkdir) then fails with ENAMETOOLONG, and anything that keeps one descriptor
//! per level fails with EMFILE. Here each step is an `*at` call relative to the one open
//! directory, with `O_NOFOLLOW`; going back up is `..`, checked to be the directory we came
//! down from (device and inode), so a directory renamed away during the walk stops it
//! rather than sending it elsewhere. Two descriptors are open whatever the depth; each level
//! keeps only its listing (names) in memory.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Dir, FileType, Mode, Mode as FsMode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// One entry met by [`walk`].
pub struct Entry<'a> {
    /// Path below the walk's root, components joined by `/`, no leading slash.
    pub rel: &'a [u8],
    /// The directory holding the entry, to open or remove it with `*at` calls.
    pub dir: BorrowedFd<'a>,
    pub name: &'a [u8],
    /// `lstat` of the entry as met (symlinks not followed).
    pub stat: &'a Stat,
}

impl Entry<'_> {
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }
}

/// What to do after the visitor has seen a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Descend,
    Skip,
}

struct Frame {
    names: Vec<Vec<u8>>,
    next: usize,
    /// This directory's own name in its parent, and its lstat (for `..` checks and `post`).
    name: Vec<u8>,
    stat: Stat,
    /// Length of `rel` up to and including this directory.
    rel_len: usize,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn listing(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for item in rustix::fs::Dir::read_from(dir)? {
        let item = item?;
        let n = item.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    // Sorted, so that walks (and the faults they report) come out in a stable order.
    names.sort();
    Ok(names)
}

fn same(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

fn moved(what: &str) -> io::Error {
    io::Error::other(format!("{what} was moved or replaced during the walk"))
}

/// Visits everything below `root` (not `root` itself) depth first: `pre` for each entry
/// before a directory's children (it may skip them), `post` for each directory after them.
/// An entry that vanishes between listing and `lstat` is passed over.
pub fn walk(
    root: BorrowedFd<'_>,
    pre: &mut dyn FnMut(&Entry<'_>) -> io::Result<Step>,
    post: &mut dyn FnMut(&Entry<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let mut cur: OwnedFd = rustix::fs::openat(root, ".", DIR_FLAGS, Mode::empty())?;
    let root_stat = rustix::fs::fstat(&cur)?;
    let mut rel: Vec<u8> = Vec::new();
    let mut frames = vec![Frame {
        names: listing(cur.as_fd())?,
        next: 0,
        name: Vec::new(),
        stat: root_stat,
        rel_len: 0,
    }];
    loop {
        let top = frames.last_mut().expect("the root frame stays");
        if top.next < top.names.len() {
            let name = std::mem::take(&mut top.names[top.next]);
            top.next += 1;
            let base = top.rel_len;
            let stat = match rustix::fs::statat(&cur, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            rel.truncate(base);
            if base > 0 {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            let step = pre(&Entry {
                rel: &rel,
                dir: cur.as_fd(),
                name: &name,
                stat: &stat,
            })?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::Directory || step == Step::Skip {
                continue;
            }
            let child = rustix::fs::openat(&cur, name.as_slice(), DIR_FLAGS, Mode::empty())?;
            // `pre` may have changed its mode, never what it is.
            if !same(&rustix::fs::fstat(&child)?, &stat) {
                return Err(moved(&String::from_utf8_lossy(&rel)));
            }
            let names = listing(child.as_fd())?;
            let rel_len = rel.len();
            frames.push(Frame {
                names,
                next: 0,
                name,
                stat,
                rel_len,
            });
            cur = child;
            continue;
        }
        let done = frames.pop().expect("checked above");
        let Some(parent) = frames.last() else {
            return Ok(());
        };
        let up = rustix::fs::openat(&cur, "..", DIR_FLAGS, Mode::empty())?;
        if !same(&rustix::fs::fstat(&up)?, &parent.stat) {
            return Err(moved(&String::from_utf8_lossy(&rel[..done.rel_len])));
        }
        cur = up;
        post(&Entry {
            rel: &rel[..done.rel_len],
            dir: cur.as_fd(),
            name: &done.name,
            stat: &done.stat,
        })?;
    }
}

/// Sets the mode of an entry met in a walk (not a symlink): through an `O_PATH` descriptor
/// of the very inode that was checked, so a name swapped for a symlink meanwhile is never
/// followed, whatever the depth.
pub fn chmod_at(dir: BorrowedFd<'_>, name: &[u8], stat: &Stat, mode: u32) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let now = rustix::fs::fstat(&fd)?;
    if !same(&now, stat) || FileType::from_raw_mode(now.st_mode) == FileType::Symlink {
        return Err(moved(&String::from_utf8_lossy(name)));
    }
    use std::os::fd::AsRawFd;
    std::fs::set_permissions(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
}

/// Opens `name` (relative, without `..`) beneath `dir`, following no symbolic link on the way
/// or at its end: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or, where the kernel has
/// no openat2 (ENOSYS before Linux 5.6; some seccomp profiles say EPERM), one
/// `openat(O_NOFOLLOW)` per component. `O_NOFOLLOW | O_CLOEXEC` are always added.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    name: &Path,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // O_PATH | O_NOFOLLOW opens a trailing symbolic link itself (even with O_DIRECTORY, and
    // even under RESOLVE_NO_SYMLINKS): refused here, whichever way it was opened.
    let no_link = |fd: OwnedFd| {
        if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) == FileType::Symlink {
            return Err(Errno::LOOP);
        }
        Ok(fd)
    };
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p),
            std::path::Component::CurDir => {}
            _ => return Err(Errno::XDEV), // what RESOLVE_BENEATH says of `..` and `/`
        }
    }
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match rustix::fs::openat2(
            dir,
            name,
            flags,
            FsMode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        ) {
            Err(Errno::NOSYS | Errno::PERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            r => return no_link(r?),
        }
    }
    let Some((last, walk)) = parts.split_last() else {
        return no_link(rustix::fs::openat(dir, ".", flags, FsMode::empty())?);
    };
    let mut cur: Option<OwnedFd> = None;
    for p in walk {
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        let step = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        cur = Some(rustix::fs::openat(at, *p, step, FsMode::empty())?);
    }
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    no_link(rustix::fs::openat(at, *last, flags, FsMode::empty())?)
}

/// How often the walk may find a directory changed under it (entries added, a directory
/// swapped for a link and back) without progress before it gives up.
const MAX_STALLS: u32 = 1000;

/// Removes the entry `name` of the directory `parent` and, if it is a directory, everything
/// below it, by file descriptor: nothing is opened, chmod-ed or unlinked through a symbolic
/// link, whatever the tree's owner does to it meanwhile. Each directory is opened with
/// [`open_beneath`], made owner-rwx by `fchmod` on that descriptor when it is not (staged
/// image trees are read-only) and only then listed; each entry is unlinked with `unlinkat`
/// relative to its directory's descriptor. A directory swapped for a symbolic link is found
/// so on open and the link removed as a link. Two descriptors are held whatever the depth:
/// going back up, `..` must be the directory the walk came down from, else the tree was moved
/// and the walk stops. Returns whether there was anything to remove.
pub fn remove_at(parent: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<bool> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) => return Ok(true),
        Err(Errno::NOENT) => return Ok(false),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let id = |fd: BorrowedFd<'_>| rustix::fs::fstat(fd).map(|s| (s.st_dev, s.st_ino));
    let here = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut cur = rustix::fs::openat(parent, ".", here, FsMode::empty())?;
    // Each directory still to remove, with the identity of the directory that holds it.
    let mut stack: Vec<(OsString, (u64, u64))> = vec![(name.to_owned(), id(cur.as_fd())?)];
    let mut stalls = 0u32;
    let at = |stack: &[(OsString, (u64, u64))], e: Errno| {
        let rel: PathBuf = stack.iter().map(|(n, _)| n.as_os_str()).collect();
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("{}: {e}", rel.display()),
        )
    };
    while let Some((top, _)) = stack.last() {
        let top = top.clone();
        let gone = match open_to_empty(cur.as_fd(), &top) {
            Ok(dir) => {
                let mut sub = None;
                for item in Dir::read_from(&dir).map_err(|e| at(&stack, e))? {
                    let item = item.map_err(|e| at(&stack, e))?;
                    let n = item.file_name().to_bytes();
                    if n == b"." || n == b".." {
                        continue;
                    }
                    let n = OsStr::from_bytes(n);
                    if item.file_type() == FileType::Directory {
                        sub = Some(n.to_owned());
                        break;
                    }
                    match rustix::fs::unlinkat(&dir, n, AtFlags::empty()) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(Errno::ISDIR) => {
                            sub = Some(n.to_owned());
                            break;
                        }
                        Err(e) => return Err(at(&stack, e)),
                    }
                }
                if let Some(n) = sub {
                    let dir_id = id(dir.as_fd()).map_err(|e| at(&stack, e))?;
                    stack.push((n, dir_id));
                    cur = dir;
                    continue;
                }
                match rustix::fs::unlinkat(&cur, &top, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => true,
                    // Entries added meanwhile, or the name now a link: look again.
                    Err(Errno::NOTEMPTY | Errno::NOTDIR) => false,
                    Err(e) => return Err(at(&stack, e)),
                }
            }
            Err(Errno::NOENT) => true,
            // Not a directory (any more): a link or a file now, removed as what it is.
            Err(Errno::NOTDIR | Errno::LOOP) => {
                match rustix::fs::unlinkat(&cur, &top, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => true,
                    Err(Errno::ISDIR) => false,
                    Err(e) => return Err(at(&stack, e)),
                }
            }
            Err(e) => return Err(at(&stack, e)),
        };
        if !gone {
            stalls += 1;
            if stalls > MAX_STALLS {
                return Err(std::io::Error::other(format!(
                    "{}: keeps changing while being removed",
                    top.to_string_lossy()
                )));
            }
            continue;
        }
        stalls = 0;
        stack.pop();
        if let Some((_, want)) = stack.last() {
            let up =
                rustix::fs::openat(&cur, "..", here, FsMode::empty()).map_err(|e| at(&stack, e))?;
            if id(up.as_fd()).map_err(|e| at(&stack, e))? != *want {
                return Err(std::io::Error::other(format!(
                    "{}: moved while being removed; stopped",
                    PathBuf::from_iter(stack.iter().map(|(n, _)| n.as_os_str())).display()
                )));
            }
            cur = up;
        }
    }
    Ok(true)
}

/// Opens the directory `name` in `dir` (never through a symbolic link) for listing and
/// removing its entries, first giving its owner rwx on it if it lacks them. The mode is
/// changed on the opened directory itself: by `fchmod`, or, when its owner may not even
/// open it for reading (mode 0 or 0200), through `/proc/self/fd/N`, which names the inode
/// the O_PATH descriptor holds and nothing else.
fn open_to_empty(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    let path_fd = open_beneath(dir, Path::new(name), OFlags::PATH | OFlags::DIRECTORY)?;
    let st = rustix::fs::fstat(&path_fd)?;
    let read = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if st.st_mode & 0o700 == 0o700 {
        return rustix::fs::openat(&path_fd, ".", read, FsMode::empty());
    }
    // Set-id and sticky bits go: nothing in a directory about to be removed needs them.
    let mode = FsMode::from_raw_mode((st.st_mode & 0o777) | 0o700);
    match rustix::fs::openat(&path_fd, ".", read, FsMode::empty()) {
        Ok(fd) => {
            rustix::fs::fchmod(&fd, mode)?;
            Ok(fd)
        }
        Err(Errno::ACCESS) => {
            rustix::fs::chmod(format!("/proc/self/fd/{}", path_fd.as_raw_fd()), mode)?;
            rustix::fs::openat(&path_fd, ".", read, FsMode::empty())
        }
        Err(e) => Err(e),
    }
}

/// [`remove_at`] for a path: its parent is opened by path (the caller's own directories,
/// short), everything below by descriptor. Returns whether there was anything to remove.
pub fn remove(path: &Path) -> io::Result<bool> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!(
            "{}: not a removable path",
            path.display()
        )));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let pfd = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    remove_at(pfd.as_fd(), name)
}

/// Entries and regular-file bytes below `root`, by descriptor (see [`walk`]).
pub fn summary(root: &Path) -> io::Result<(u64, u64)> {
    let fd = rustix::fs::open(root, DIR_FLAGS, Mode::empty())?;
    let (mut entries, mut bytes) = (0u64, 0u64);
    walk(
        fd.as_fd(),
        &mut |e| {
            entries += 1;
            if e.file_type() == FileType::RegularFile {
                bytes += e.stat.st_size as u64;
            }
            Ok(Step::Descend)
        },
        &mut |_| Ok(()),
    )?;
    Ok((entries, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A chain `depth` directories deep with 200-byte names: its real path is far past
    /// PATH_MAX and it has more levels than a process has descriptors by default.
    fn deep_chain(root: &Path, depth: usize) {
        let name = "n".repeat(200);
        let mut cur = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).unwrap();
        for i in 0..depth {
            rustix::fs::mkdirat(&cur, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            let next = rustix::fs::openat(&cur, name.as_str(), DIR_FLAGS, Mode::empty()).unwrap();
            if i % 100 == 0 {
                let f = rustix::fs::openat(
                    &next,
                    "f",
                    OFlags::WRONLY | OFlags::CREATE,
                    Mode::from_raw_mode(0o400),
                )
                .unwrap();
                drop(f);
            }
            if i == depth / 2 {
                rustix::fs::symlinkat("/etc/passwd", &next, "l").unwrap();
            }
            cur = next;
        }
        // Read-only at the bottom: removal has to give itself access.
        rustix::fs::fchmod(&cur, Mode::from_raw_mode(0o500)).unwrap();
    }

    #[test]
    fn removes_trees_deeper_than_path_max_and_the_fd_limit() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("top");
        std::fs::create_dir(&top).unwrap();
        deep_chain(&top, 2500);
        let (entries, _) = summary(&top).unwrap();
        assert_eq!(entries, 2500 + 25 + 1);
        remove(&top).unwrap();
        assert!(!top.exists());
        assert!(std::path::Path::new("/etc/passwd").exists());
        // Gone already: fine.
        remove(&top).unwrap();
    }

    #[test]
    fn a_symlink_is_removed_not_followed_and_read_only_dirs_are_opened() {
        let d = tempfile::tempdir().unwrap();
        let keep = d.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("x"), "x").unwrap();
        let top = d.path().join("top");
        std::fs::create_dir_all(top.join("ro/sub")).unwrap();
        std::os::unix::fs::symlink(&keep, top.join("ro/link")).unwrap();
        std::fs::set_permissions(top.join("ro"), std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o500)).unwrap();
        remove(&top).unwrap();
        assert!(!top.exists());
        assert!(keep.join("x").exists(), "the symlink's target is untouched");
        std::os::unix::fs::symlink(&keep, d.path().join("l")).unwrap();
        remove(&d.path().join("l")).unwrap();
        assert!(keep.join("x").exists());
    }
}
