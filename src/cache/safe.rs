//! Opening and creating cache files when other users can write the directories they are in.
//!
//! In a group cache every member can create names in the top-level directories, so a name
//! lpmx-job is about to open may be a symlink to the opener's own files (writing through it
//! destroys them, issue 11 D4), a FIFO (opening it blocks forever, D5), or a directory. So:
//! - nothing is opened through a symlink: `O_NOFOLLOW` on the last component (the components
//!   above it are the cache's top-level directories, sticky, and entries only their publisher
//!   can change);
//! - nothing is opened that could block or act: the name is `lstat`ed first and refused unless
//!   it is the kind expected, then opened `O_NONBLOCK` (a FIFO swapped in between opens
//!   without waiting) and checked again with `fstat` on the descriptor, which is what is used;
//! - temporary names are random and created `O_CREAT|O_EXCL|O_NOFOLLOW`, so a name planted in
//!   advance is never written through, only skipped;
//! - modes are set on the descriptor (`fchmod`), not left to the umask, which stays the user's.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Files any member must be able to open for writing: lock files (OFD write locks and the
/// holder's note) and last-use stamps (futimens to now needs write access).
pub const SHARED_FILE_MODE: u32 = 0o664;

/// What a cache name must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    File,
    Dir,
}

impl Expect {
    fn noun(self) -> &'static str {
        match self {
            Expect::File => "a regular file",
            Expect::Dir => "a directory",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// A name that is not what lpmx-job ever puts there. Carried inside an `io::Error` (kind
/// `InvalidData`) so that io-based callers (locks, unpacking) can use the helpers too;
/// `cache::Error` turns it back into its own variant.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} is {found} owned by {owner}, not {expected}: lpmx-job never makes one there, so \
     someone else did; it was not opened. Remove it (its owner or the cache directory's owner \
     can) and find out who put it there"
)]
pub struct Unexpected {
    pub path: PathBuf,
    pub found: &'static str,
    pub owner: String,
    pub expected: &'static str,
}

/// `NAME (uid N)`, or `uid N` for an id without a name.
pub fn owner_name(uid: u32) -> String {
    match crate::host::accounts::user(uid) {
        Some(u) => format!("{} (uid {uid})", u.name),
        None => format!("uid {uid}"),
    }
}

/// What kind of file a mode says, as a noun phrase.
pub fn kind_name(mode: u32) -> &'static str {
    kind_of(mode)
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "an unknown kind of file",
    }
}

fn matches(mode: u32, expect: Expect) -> bool {
    let fmt = mode & libc::S_IFMT;
    match expect {
        Expect::File => fmt == libc::S_IFREG,
        Expect::Dir => fmt == libc::S_IFDIR,
    }
}

fn unexpected(path: &Path, mode: u32, uid: u32, expect: Expect) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        Unexpected {
            path: path.to_path_buf(),
            found: kind_of(mode),
            owner: owner_name(uid),
            expected: expect.noun(),
        },
    )
}

/// The [`Unexpected`] an error carries, if any.
pub fn as_unexpected(e: &io::Error) -> Option<&Unexpected> {
    e.get_ref().and_then(|i| i.downcast_ref::<Unexpected>())
}

fn cpath(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
}

fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: fstat fills a zeroed stat struct for a descriptor we hold.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }
}

fn raw_open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: open with a valid C string; the descriptor is owned from here on.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open and is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn access_flags(access: Access) -> libc::c_int {
    match access {
        Access::Read => libc::O_RDONLY,
        Access::Write => libc::O_WRONLY,
        Access::ReadWrite => libc::O_RDWR,
    }
}

/// Opens an existing file or directory that must be `expect`, never through a symlink and
/// never blocking; anything else is an [`Unexpected`] error naming the path, what it is and
/// its owner. A missing name is `NotFound`, as from `open`.
pub fn open(path: &Path, expect: Expect, access: Access) -> io::Result<File> {
    // lstat first: a device or FIFO is refused before it is ever opened.
    let pre = std::fs::symlink_metadata(path)?;
    if !matches(pre.mode(), expect) {
        return Err(unexpected(path, pre.mode(), pre.uid(), expect));
    }
    let mut flags = access_flags(access) | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    if expect == Expect::Dir {
        flags |= libc::O_DIRECTORY;
    }
    let fd = match raw_open(path, flags, 0) {
        Ok(fd) => fd,
        // Swapped for a symlink (ELOOP), a FIFO without a reader (ENXIO) or something that is
        // not a directory (ENOTDIR) since the lstat: describe what is there now.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ELOOP | libc::ENXIO | libc::ENOTDIR)
            ) =>
        {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(m) => unexpected(path, m.mode(), m.uid(), expect),
                Err(_) => e,
            })
        }
        Err(e) => return Err(e),
    };
    let st = fstat(&fd)?;
    if !matches(st.st_mode, expect) {
        return Err(unexpected(path, st.st_mode, st.st_uid, expect));
    }
    // Reads of a regular file never block anyway; clearing the flag keeps later users of the
    // descriptor (a lock waiting in flock, say) with the semantics they expect.
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    Ok(File::from(fd))
}

/// The whole content of a cache file, or None if it does not exist; checked as [`open`] does.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut f = match open(path, Expect::File, Access::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// Like [`read`], also giving the file's owner.
pub fn read_owned(path: &Path) -> io::Result<Option<(Vec<u8>, u32)>> {
    use std::io::Read;
    let mut f = match open(path, Expect::File, Access::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let uid = fstat(&f)?.st_uid;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(Some((buf, uid)))
}

/// Sets a descriptor's mode exactly (the umask applies at creation only).
pub fn fchmod(f: &impl AsRawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on a descriptor we hold.
    if unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The owner and mode of an open file.
pub fn owner_and_mode(f: &impl AsRawFd) -> io::Result<(u32, u32, u32)> {
    let st = fstat(f)?;
    Ok((st.st_uid, st.st_gid, st.st_mode))
}

/// Creates a new file, failing with `AlreadyExists` if anything (a symlink included) has the
/// name, and gives it exactly `mode`.
pub fn create_new(path: &Path, mode: u32, access: Access) -> io::Result<File> {
    let flags = access_flags(access) | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let fd = raw_open(path, flags, 0o600)?;
    fchmod(&fd, mode)?;
    Ok(File::from(fd))
}

/// An existing regular file (checked as [`open`] does), or a new one of `mode`. For names any
/// member may create first: lock files, last-use stamps, in-use markers. The open of an
/// existing name comes first, without `O_CREAT`: with `fs.protected_regular=2` the kernel
/// refuses `O_CREAT` on another user's file in a sticky group-writable directory.
pub fn open_or_create(path: &Path, access: Access, mode: u32) -> io::Result<File> {
    for _ in 0..8 {
        match open(path, Expect::File, access) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => return r,
        }
        match create_new(path, mode, access) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            r => return r,
        }
    }
    Err(io::Error::other(format!(
        "{} keeps appearing and vanishing while being opened",
        path.display()
    )))
}

/// A name no one can guess: this host and process (so that work areas of dead processes can
/// be told apart) and 64 random bits from getrandom (so that no one can plant the name first).
pub fn random_name() -> String {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n > 0 {
            got += n as usize;
        } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // No getrandom (a kernel before 3.17): the clock's nanoseconds and the address
            // space layout, still unknown to another user in advance.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let a = &b as *const _ as u64;
            b = (t ^ a.rotate_left(32)).to_le_bytes();
            break;
        }
    }
    format!(
        "{}.{}.{}",
        crate::host::hostname(),
        std::process::id(),
        hex::encode(b)
    )
}

/// A new private directory (0700) of a random name in `parent`.
pub fn create_dir_random(parent: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..16 {
        let p = parent.join(random_name());
        // mkdir never follows a symlink at its last component: a planted name fails EEXIST.
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "16 random names in {} were all taken",
        parent.display()
    )))
}

/// A new file of a random name in `parent`, created `O_EXCL` with exactly `mode`.
pub fn create_file_random(parent: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    for _ in 0..16 {
        let p = parent.join(random_name());
        match create_new(&p, mode, Access::Write) {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "16 random names in {} were all taken",
        parent.display()
    )))
}

/// Sets a file's times to now through its descriptor (a path-based utimensat would follow a
/// symlink swapped in).
pub fn touch(f: &File) -> io::Result<()> {
    f.set_modified(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(e: io::Error, found: &str) {
        let u = as_unexpected(&e).unwrap_or_else(|| panic!("not an Unexpected: {e}"));
        assert_eq!(u.found, found, "{e}");
        let text = e.to_string();
        assert!(text.contains(&*u.path.to_string_lossy()), "{text}");
        assert!(text.contains("owned by"), "{text}");
    }

    #[test]
    fn symlinks_fifos_and_directories_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("private");
        std::fs::write(&target, "mine").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = d.path().join("fifo");
        let c = cpath(&fifo).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).unwrap();

        for access in [Access::Read, Access::Write, Access::ReadWrite] {
            refused(
                open(&link, Expect::File, access).unwrap_err(),
                "a symbolic link",
            );
            // Opening a FIFO for writing without a reader would block without O_NONBLOCK.
            refused(open(&fifo, Expect::File, access).unwrap_err(), "a FIFO");
            refused(open(&dir, Expect::File, access).unwrap_err(), "a directory");
            refused(open_or_create(&fifo, access, 0o644).unwrap_err(), "a FIFO");
            refused(
                open_or_create(&link, access, 0o644).unwrap_err(),
                "a symbolic link",
            );
        }
        refused(read(&fifo).unwrap_err(), "a FIFO");
        refused(read(&link).unwrap_err(), "a symbolic link");
        refused(
            open(&target, Expect::Dir, Access::Read).unwrap_err(),
            "a regular file",
        );
        // A symlink to a directory is no directory.
        let dlink = d.path().join("dlink");
        std::os::unix::fs::symlink(&dir, &dlink).unwrap();
        refused(
            open(&dlink, Expect::Dir, Access::Read).unwrap_err(),
            "a symbolic link",
        );
        assert!(open(&dir, Expect::Dir, Access::Read).is_ok());
        assert_eq!(read(&target).unwrap().unwrap(), b"mine");
        assert!(read(&d.path().join("missing")).unwrap().is_none());
        // Creating over a planted symlink writes nothing through it.
        let e = create_new(&link, 0o644, Access::Write).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"mine");
    }

    #[test]
    fn modes_are_exact_whatever_the_umask_and_names_are_random() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: umask affects this test process only; restored below.
        let old = unsafe { libc::umask(0o077) };
        let (p, f) = create_file_random(d.path(), 0o444).unwrap();
        let w = create_dir_random(d.path()).unwrap();
        let o = open_or_create(&d.path().join("stamp"), Access::Write, 0o664).unwrap();
        unsafe { libc::umask(old) };
        assert_eq!(owner_and_mode(&f).unwrap().2 & 0o7777, 0o444);
        assert_eq!(owner_and_mode(&o).unwrap().2 & 0o7777, 0o664);
        assert_eq!(std::fs::metadata(&w).unwrap().mode() & 0o7777, 0o700);
        let (a, b) = (random_name(), random_name());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!(
            "{}.{}.",
            crate::host::hostname(),
            std::process::id()
        )));
        assert_eq!(a.rsplit('.').next().unwrap().len(), 16, "{a}");
        assert!(p.file_name().unwrap().to_string_lossy().len() > 16);
    }
}
