//! Everything the runtime asks of the kernel, behind one trait: the real implementation calls
//! libc; [`Recorder`] (tests only) records each call over a small in-memory filesystem, so the
//! mount plan is checked without privileges (as youki's `syscall/` does).

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a path is, without following a final symlink (`lstat`) or following it (`stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// Devices, FIFOs, sockets.
    Other,
}

pub trait Syscall {
    /// Threads of this process (from /proc/self/stat).
    fn thread_count(&self) -> io::Result<usize>;
    fn unshare(&self, flags: libc::c_int) -> io::Result<()>;
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// The `MS_*` flags matching what `statvfs` says of the mount holding `path`: the ones a
    /// user namespace cannot clear (nosuid, nodev, noexec and the atime mode).
    fn mount_flags(&self, path: &Path) -> io::Result<libc::c_ulong>;
    /// Makes the mount at `target` read-only, with every mount below it if `recursive`, in
    /// one `mount_setattr(2)` (Linux 5.12) that leaves the mount's other flags alone. ENOSYS
    /// before 5.12.
    fn set_read_only(&self, target: &Path, recursive: bool) -> io::Result<()>;
    fn lstat_kind(&self, path: &Path) -> io::Result<Kind>;
    /// Owner, group and mode (`lstat`). Unsupported where there is no real file system.
    fn lstat_ids(&self, _path: &Path) -> io::Result<(u32, u32, u32)> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn stat_kind(&self, path: &Path) -> io::Result<Kind>;
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    fn read_dir(&self, path: &Path) -> io::Result<Vec<(OsString, Kind)>>;
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates or truncates.
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates an empty file; an existing one is an error.
    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Restores the default action of signals lpmx-job itself ignores (Rust ignores SIGPIPE),
    /// since an ignored signal stays ignored across exec.
    fn reset_signals(&self) -> io::Result<()>;
    /// Returns only on failure.
    fn execve(&self, path: &Path, argv: &[CString], envp: &[CString]) -> io::Error;
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn kind_of(t: std::fs::FileType) -> Kind {
    if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else if t.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

/// The thread count, field 20 of /proc/self/stat (the 18th after the command name, which
/// may itself hold spaces and parentheses, hence the last `)`).
pub fn threads_in_stat(stat: &[u8]) -> Option<usize> {
    let after = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let field = after
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .nth(17)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// `statvfs` `f_flag` bits to the `MS_*` flags a bind remount must repeat.
pub fn locked_flags(f_flag: u64) -> libc::c_ulong {
    let mut out: libc::c_ulong = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f_flag & st != 0 {
            out |= ms;
        }
    }
    // Neither noatime nor relatime: the mount is strictatime, which must be said explicitly
    // or the kernel assumes relatime and refuses to change a locked atime mode.
    if f_flag & (libc::ST_NOATIME | libc::ST_RELATIME) == 0 {
        out |= libc::MS_STRICTATIME;
    }
    out
}

/// The kernel.
pub struct Real;

impl Syscall for Real {
    fn thread_count(&self) -> io::Result<usize> {
        // /proc/self/stat, not status: one short read instead of a dozen growing ones, and
        // the kernel fills in far less (this runs twice per task start).
        let mut buf = [0u8; 1024];
        let mut f = std::fs::File::open("/proc/self/stat")?;
        let n = std::io::Read::read(&mut f, &mut buf)?;
        threads_in_stat(&buf[..n])
            .ok_or_else(|| io::Error::other("no thread count in /proc/self/stat"))
    }

    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: unshare changes only this process's namespaces; the caller checked that it
        // is single-threaded (a user namespace requires it).
        check(unsafe { libc::unshare(flags) })
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(cpath).transpose()?;
        let target = cpath(target)?;
        let fstype = fstype
            .map(|s| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
            .transpose()?;
        let data = data
            .map(|s| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
            .transpose()?;
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: every pointer is a NUL-terminated string alive for the call, or null.
        check(unsafe {
            libc::mount(
                ptr(&source),
                target.as_ptr(),
                ptr(&fstype),
                flags,
                ptr(&data).cast(),
            )
        })
    }

    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let t = cpath(target)?;
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::umount2(t.as_ptr(), flags) })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        let (n, o) = (cpath(new_root)?, cpath(put_old)?);
        // SAFETY: two NUL-terminated paths; pivot_root has no libc wrapper.
        let rc = unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) };
        check(rc as libc::c_int)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn mount_flags(&self, path: &Path) -> io::Result<libc::c_ulong> {
        let p = cpath(path)?;
        // SAFETY: statvfs fills the zeroed struct it is given.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
        Ok(locked_flags(st.f_flag as u64))
    }

    fn set_read_only(&self, target: &Path, recursive: bool) -> io::Result<()> {
        /// `struct mount_attr` of <linux/mount.h>.
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        const MOUNT_ATTR_RDONLY: u64 = 0x1;
        let p = cpath(target)?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
        // SAFETY: the path is a NUL-terminated string and attr a live struct of the size
        // passed; the kernel only reads both.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                p.as_ptr(),
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        check(rc as libc::c_int)
    }

    fn lstat_kind(&self, path: &Path) -> io::Result<Kind> {
        Ok(kind_of(std::fs::symlink_metadata(path)?.file_type()))
    }

    fn lstat_ids(&self, path: &Path) -> io::Result<(u32, u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path)?;
        Ok((m.uid(), m.gid(), m.mode()))
    }

    fn stat_kind(&self, path: &Path) -> io::Result<Kind> {
        Ok(kind_of(std::fs::metadata(path)?.file_type()))
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(OsString, Kind)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            out.push((e.file_name(), kind_of(e.file_type()?)));
        }
        out.sort();
        Ok(out)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        // No O_CREAT needed for /proc files, but passwd copies are new: create if missing.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.write_all(data)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(mode).create(path)
    }

    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map(drop)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn reset_signals(&self) -> io::Result<()> {
        // SAFETY: setting a signal's disposition to its default.
        if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn execve(&self, path: &Path, argv: &[CString], envp: &[CString]) -> io::Error {
        let p = match cpath(path) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let mut a: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        a.push(std::ptr::null());
        let mut e: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        e.push(std::ptr::null());
        // SAFETY: NULL-terminated arrays of NUL-terminated strings alive for the call.
        unsafe { libc::execve(p.as_ptr(), a.as_ptr(), e.as_ptr()) };
        io::Error::last_os_error()
    }
}

#[cfg(test)]
pub use recorder::{Call, Node, Recorder};

#[cfg(test)]
mod recorder {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Node {
        Dir,
        File(Vec<u8>),
        Symlink(PathBuf),
    }

    /// One recorded call; queries (stat, readlink...) are not recorded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Unshare(libc::c_int),
        Mount {
            source: Option<PathBuf>,
            target: PathBuf,
            fstype: Option<String>,
            flags: libc::c_ulong,
            data: Option<String>,
        },
        Umount2(PathBuf, libc::c_int),
        /// mount_setattr(MOUNT_ATTR_RDONLY), recursive or not.
        SetReadOnly(PathBuf, bool),
        PivotRoot(PathBuf, PathBuf),
        Chdir(PathBuf),
        WriteFile(PathBuf, String),
        Mkdir(PathBuf),
        CreateFile(PathBuf),
        Symlink(PathBuf, PathBuf),
        ResetSignals,
        Execve(PathBuf, Vec<String>),
    }

    /// A test double: an in-memory tree standing for the host, plus the calls made.
    /// Mounting copies the source's subtree (bind, overlay's lower) to the target, or empties
    /// it (tmpfs), so later lookups see what the kernel would show.
    #[derive(Default)]
    pub struct Recorder {
        pub fs: RefCell<BTreeMap<PathBuf, Node>>,
        pub calls: RefCell<Vec<Call>>,
        pub threads: usize,
        /// Errno for overlay mounts, to exercise the fallback.
        pub overlay_errno: Option<i32>,
        pub unshare_errno: Option<i32>,
        /// statvfs-derived flags per mount point (longest prefix wins); a bind's target
        /// takes its source's.
        pub flags: RefCell<BTreeMap<PathBuf, libc::c_ulong>>,
        /// Paths execve succeeds on (it then returns an error saying "exec'd").
        pub executables: BTreeSet<PathBuf>,
        pub cwd: RefCell<PathBuf>,
        /// Whether mount_setattr exists (a kernel from 5.12); without it, ENOSYS.
        pub setattr: bool,
    }

    fn errno(n: i32) -> io::Error {
        io::Error::from_raw_os_error(n)
    }

    impl Recorder {
        pub fn new() -> Recorder {
            let r = Recorder {
                threads: 1,
                ..Recorder::default()
            };
            r.fs.borrow_mut().insert("/".into(), Node::Dir);
            *r.cwd.borrow_mut() = "/".into();
            r
        }

        fn record(&self, c: Call) {
            self.calls.borrow_mut().push(c);
        }

        pub fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }

        /// Adds a directory with its parents.
        pub fn dir(&self, p: &str) -> &Self {
            let mut fs = self.fs.borrow_mut();
            for a in Path::new(p).ancestors() {
                fs.entry(a.to_path_buf()).or_insert(Node::Dir);
            }
            self
        }

        pub fn file(&self, p: &str, content: &str) -> &Self {
            self.dir(Path::new(p).parent().unwrap().to_str().unwrap());
            self.fs
                .borrow_mut()
                .insert(p.into(), Node::File(content.as_bytes().to_vec()));
            self
        }

        pub fn link(&self, p: &str, target: &str) -> &Self {
            self.dir(Path::new(p).parent().unwrap().to_str().unwrap());
            self.fs
                .borrow_mut()
                .insert(p.into(), Node::Symlink(target.into()));
            self
        }

        pub fn mount_point_flags(&self, p: &str, f: libc::c_ulong) -> &Self {
            self.flags.borrow_mut().insert(p.into(), f);
            self
        }

        pub fn node(&self, p: &str) -> Option<Node> {
            self.fs.borrow().get(Path::new(p)).cloned()
        }

        pub fn text(&self, p: &str) -> String {
            match self.node(p) {
                Some(Node::File(b)) => String::from_utf8(b).unwrap(),
                other => panic!("{p}: {other:?}"),
            }
        }

        fn abs(&self, p: &Path) -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                self.cwd.borrow().join(p)
            }
        }

        /// Follows symlinks in every component (absolute targets from the real root).
        fn resolve(&self, p: &Path, depth: u32) -> io::Result<PathBuf> {
            if depth > 40 {
                return Err(errno(libc::ELOOP));
            }
            let fs = self.fs.borrow();
            let mut cur = PathBuf::from("/");
            let abs = self.abs(p);
            let comps: Vec<_> = abs.components().skip(1).collect();
            for (i, c) in comps.iter().enumerate() {
                let next = match c {
                    std::path::Component::ParentDir => {
                        cur.parent().unwrap_or(Path::new("/")).to_path_buf()
                    }
                    std::path::Component::CurDir => cur.clone(),
                    other => cur.join(other),
                };
                match fs.get(&next) {
                    Some(Node::Symlink(t)) => {
                        let t = if t.is_absolute() {
                            t.clone()
                        } else {
                            cur.join(t)
                        };
                        let mut rest = t;
                        for c in &comps[i + 1..] {
                            rest.push(c);
                        }
                        drop(fs);
                        return self.resolve(&rest, depth + 1);
                    }
                    Some(_) => cur = next,
                    None => {
                        let mut rest = next;
                        for c in &comps[i + 1..] {
                            rest.push(c);
                        }
                        return Ok(rest);
                    }
                }
            }
            Ok(cur)
        }

        fn lookup(&self, p: &Path, follow: bool) -> io::Result<(PathBuf, Node)> {
            let abs = self.abs(p);
            let parent = abs.parent().map(|q| self.resolve(q, 0)).transpose()?;
            let full = match (parent, abs.file_name()) {
                (Some(par), Some(n)) => par.join(n),
                _ => PathBuf::from("/"),
            };
            let node = self
                .fs
                .borrow()
                .get(&full)
                .cloned()
                .ok_or_else(|| errno(libc::ENOENT))?;
            if follow {
                if let Node::Symlink(_) = node {
                    let r = self.resolve(&full, 0)?;
                    let n = self
                        .fs
                        .borrow()
                        .get(&r)
                        .cloned()
                        .ok_or_else(|| errno(libc::ENOENT))?;
                    return Ok((r, n));
                }
            }
            Ok((full, node))
        }

        fn parent_must_be_dir(&self, full: &Path) -> io::Result<()> {
            match full.parent().map(|p| self.fs.borrow().get(p).cloned()) {
                Some(Some(Node::Dir)) | None => Ok(()),
                Some(Some(_)) => Err(errno(libc::ENOTDIR)),
                Some(None) => Err(errno(libc::ENOENT)),
            }
        }

        fn place(&self, p: &Path) -> io::Result<PathBuf> {
            let abs = self.abs(p);
            let parent = self.resolve(abs.parent().unwrap_or(Path::new("/")), 0)?;
            let full = parent.join(abs.file_name().unwrap_or_default());
            self.parent_must_be_dir(&full)?;
            if self.fs.borrow().contains_key(&full) {
                return Err(errno(libc::EEXIST));
            }
            Ok(full)
        }

        fn subtree(&self, from: &Path) -> Vec<(PathBuf, Node)> {
            self.fs
                .borrow()
                .iter()
                .filter(|(k, _)| k.starts_with(from) && k.as_path() != from)
                .map(|(k, v)| (k.strip_prefix(from).unwrap().to_path_buf(), v.clone()))
                .collect()
        }

        fn clear(&self, at: &Path) {
            self.fs
                .borrow_mut()
                .retain(|k, _| !k.starts_with(at) || k.as_path() == at);
        }
    }

    impl Syscall for Recorder {
        fn thread_count(&self) -> io::Result<usize> {
            Ok(self.threads)
        }

        fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
            if let Some(e) = self.unshare_errno {
                return Err(errno(e));
            }
            self.record(Call::Unshare(flags));
            Ok(())
        }

        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: libc::c_ulong,
            data: Option<&str>,
        ) -> io::Result<()> {
            let (full, node) = self.lookup(target, true)?;
            if fstype == Some("overlay") {
                if let Some(e) = self.overlay_errno {
                    return Err(errno(e));
                }
            }
            self.record(Call::Mount {
                source: source.map(Path::to_path_buf),
                target: target.to_path_buf(),
                fstype: fstype.map(String::from),
                flags,
                data: data.map(String::from),
            });
            if flags & (libc::MS_REMOUNT | libc::MS_PRIVATE | libc::MS_SLAVE) != 0 {
                return Ok(());
            }
            let copy_from = if flags & libc::MS_BIND != 0 {
                let src = source.ok_or_else(|| errno(libc::EINVAL))?;
                let (sfull, snode) = self.lookup(src, true)?;
                let inherited = self.mount_flags(&sfull)?;
                self.flags.borrow_mut().insert(full.clone(), inherited);
                if (snode == Node::Dir) != (node == Node::Dir) {
                    return Err(errno(libc::ENOTDIR));
                }
                if let Node::File(b) = snode {
                    self.fs.borrow_mut().insert(full, Node::File(b));
                    return Ok(());
                }
                Some(sfull)
            } else if fstype == Some("overlay") {
                let lower = data
                    .unwrap_or_default()
                    .split(',')
                    .find_map(|o| o.strip_prefix("lowerdir="))
                    .ok_or_else(|| errno(libc::EINVAL))?;
                Some(PathBuf::from(lower))
            } else {
                None
            };
            let copied = copy_from.map(|f| self.subtree(&f)).unwrap_or_default();
            self.clear(&full);
            let mut fs = self.fs.borrow_mut();
            for (rel, n) in copied {
                fs.insert(full.join(rel), n);
            }
            Ok(())
        }

        fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
            self.record(Call::Umount2(target.to_path_buf(), flags));
            Ok(())
        }

        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
            self.record(Call::PivotRoot(
                new_root.to_path_buf(),
                put_old.to_path_buf(),
            ));
            // The new root's subtree becomes the whole tree.
            let root = self.abs(new_root);
            let sub = self.subtree(&root);
            let mut fs = self.fs.borrow_mut();
            fs.clear();
            fs.insert("/".into(), Node::Dir);
            for (rel, n) in sub {
                fs.insert(Path::new("/").join(rel), n);
            }
            *self.cwd.borrow_mut() = "/".into();
            Ok(())
        }

        fn chdir(&self, path: &Path) -> io::Result<()> {
            let (full, node) = self.lookup(path, true)?;
            if node != Node::Dir {
                return Err(errno(libc::ENOTDIR));
            }
            self.record(Call::Chdir(path.to_path_buf()));
            *self.cwd.borrow_mut() = full;
            Ok(())
        }

        fn set_read_only(&self, target: &Path, recursive: bool) -> io::Result<()> {
            if !self.setattr {
                return Err(errno(libc::ENOSYS));
            }
            self.lookup(target, true)?;
            self.record(Call::SetReadOnly(target.to_path_buf(), recursive));
            Ok(())
        }

        fn mount_flags(&self, path: &Path) -> io::Result<libc::c_ulong> {
            let abs = self.abs(path);
            Ok(self
                .flags
                .borrow()
                .iter()
                .filter(|(k, _)| abs.starts_with(k))
                .max_by_key(|(k, _)| k.as_os_str().len())
                .map(|(_, f)| *f)
                .unwrap_or(libc::MS_RELATIME))
        }

        fn lstat_kind(&self, path: &Path) -> io::Result<Kind> {
            Ok(match self.lookup(path, false)?.1 {
                Node::Dir => Kind::Dir,
                Node::File(_) => Kind::File,
                Node::Symlink(_) => Kind::Symlink,
            })
        }

        fn stat_kind(&self, path: &Path) -> io::Result<Kind> {
            Ok(match self.lookup(path, true)?.1 {
                Node::Dir => Kind::Dir,
                Node::File(_) => Kind::File,
                Node::Symlink(_) => Kind::Symlink,
            })
        }

        fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
            match self.lookup(path, false)?.1 {
                Node::Symlink(t) => Ok(t),
                _ => Err(errno(libc::EINVAL)),
            }
        }

        fn read_dir(&self, path: &Path) -> io::Result<Vec<(OsString, Kind)>> {
            let (full, node) = self.lookup(path, true)?;
            if node != Node::Dir {
                return Err(errno(libc::ENOTDIR));
            }
            let fs = self.fs.borrow();
            Ok(fs
                .iter()
                .filter(|(k, _)| k.parent() == Some(full.as_path()))
                .map(|(k, n)| {
                    let kind = match n {
                        Node::Dir => Kind::Dir,
                        Node::File(_) => Kind::File,
                        Node::Symlink(_) => Kind::Symlink,
                    };
                    (k.file_name().unwrap().to_os_string(), kind)
                })
                .collect())
        }

        fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
            match self.lookup(path, true)?.1 {
                Node::File(b) => Ok(b),
                _ => Err(errno(libc::EISDIR)),
            }
        }

        fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            self.record(Call::WriteFile(
                path.to_path_buf(),
                String::from_utf8_lossy(data).into_owned(),
            ));
            if path.starts_with("/proc") {
                return Ok(());
            }
            let full = match self.lookup(path, true) {
                Ok((full, Node::File(_))) => full,
                Ok(_) => return Err(errno(libc::EISDIR)),
                Err(_) => self.place(path)?,
            };
            self.fs.borrow_mut().insert(full, Node::File(data.to_vec()));
            Ok(())
        }

        fn mkdir(&self, path: &Path, _mode: u32) -> io::Result<()> {
            let full = self.place(path)?;
            self.record(Call::Mkdir(path.to_path_buf()));
            self.fs.borrow_mut().insert(full, Node::Dir);
            Ok(())
        }

        fn create_file(&self, path: &Path, _mode: u32) -> io::Result<()> {
            let full = self.place(path)?;
            self.record(Call::CreateFile(path.to_path_buf()));
            self.fs.borrow_mut().insert(full, Node::File(Vec::new()));
            Ok(())
        }

        fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
            let full = self.place(link)?;
            self.record(Call::Symlink(target.to_path_buf(), link.to_path_buf()));
            self.fs
                .borrow_mut()
                .insert(full, Node::Symlink(target.to_path_buf()));
            Ok(())
        }

        fn reset_signals(&self) -> io::Result<()> {
            self.record(Call::ResetSignals);
            Ok(())
        }

        fn execve(&self, path: &Path, argv: &[CString], _envp: &[CString]) -> io::Error {
            match self.lookup(path, true) {
                Err(e) => e,
                Ok((_, Node::Dir)) => errno(libc::EACCES),
                Ok((full, _)) if self.executables.contains(&full) => {
                    self.record(Call::Execve(
                        full,
                        argv.iter()
                            .map(|a| a.to_string_lossy().into_owned())
                            .collect(),
                    ));
                    io::Error::other("exec'd")
                }
                Ok(_) => errno(libc::EACCES),
            }
        }
    }
}
