//! The container's file system as its processes see it (see the crate's notes).
//!
//! The tracer calls [`View::resolve`] with what a traced system call asked for and gets back
//! what to hand the kernel instead: a host path, an error, or a result the view produced
//! itself (an emulated call: a deletion recorded as a whiteout, a rename refused with EXDEV).

use std::path::{Path, PathBuf};

use crate::Layout;

/// What a traced call does with the path, which decides copy-up, whiteouts and EROFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// stat, access, readlink, open read-only, chdir, opendir, exec, a unix socket's connect.
    Read,
    /// open for writing (O_WRONLY/O_RDWR/O_TRUNC/O_APPEND), truncate, chmod, chown, utimes,
    /// setxattr: a file of the image is copied up first.
    Modify,
    /// The path names something about to be made: open with O_CREAT, mkdir, mknod, symlink's
    /// new name, link's new name, bind of a unix socket. Parents are copied up, a whiteout
    /// of the name is cleared.
    Create,
    /// unlink (`dir: false`) or rmdir (`dir: true`).
    Remove { dir: bool },
}

/// Where a relative path starts: the caller's working directory or a directory descriptor's
/// target, both as host paths (`/proc/TID/cwd`, `/proc/TID/fd/N` read by the tracer), which
/// the view maps back to guest paths.
#[derive(Debug, Clone)]
pub struct Base<'a> {
    pub host_dir: &'a Path,
    /// The traced thread, for `/proc/self` and `/proc/thread-self` in guest paths.
    pub tid: i32,
}

/// What to do with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let the kernel run the call on this host path instead.
    Host(PathBuf),
    /// Skip the call; it returns `-errno`.
    Fail(i32),
    /// Skip the call; it returns this (the view did the work, e.g. recorded a whiteout).
    Done(i64),
}

/// The view over one [`Layout`]; one per traced task, owned by the tracer.
pub struct View {
    layout: Layout,
}

impl View {
    pub fn new(layout: Layout) -> View {
        View { layout }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// `path` as a traced call gave it (bytes, relative to `base` unless absolute), followed
    /// through a final symlink when `follow`.
    pub fn resolve(&mut self, base: &Base, path: &[u8], follow: bool, op: Op) -> Outcome {
        let _ = (base, path, follow, op);
        Outcome::Fail(libc::ENOSYS)
    }

    /// rename/renameat/renameat2 (flags as given): both ends at once, since a rename out of
    /// the image is a copy-up of the source plus a whiteout of it.
    pub fn rename(
        &mut self,
        from: (&Base, &[u8]),
        to: (&Base, &[u8]),
        flags: u32,
    ) -> (Outcome, Outcome) {
        let _ = (from, to, flags);
        (Outcome::Fail(libc::ENOSYS), Outcome::Fail(libc::ENOSYS))
    }

    /// The guest path of a host path (for getcwd, readlink of /proc/PID/{cwd,fd/N,exe,root},
    /// and for mapping a base back); None when the host path is not visible in the container.
    pub fn guest_path(&self, host: &Path) -> Option<PathBuf> {
        let _ = host;
        None
    }

    /// What a directory opened at `host` lists, when it is a merged directory of the union
    /// (the tracer redirects its open to the returned host directory: a listing built in
    /// `Layout::private`). None: the kernel's listing of `host` is right as it is.
    pub fn listing(&mut self, host: &Path) -> Option<PathBuf> {
        let _ = host;
        None
    }
}
