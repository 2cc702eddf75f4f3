//! What each stopped call becomes: its paths through the view, its results back out.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::sys::{self, Regs};
use super::{nr, Tracer};
use crate::view::{Base, Op, Outcome};

/// What to do at the syscall-exit stop of a call resumed with PTRACE_SYSCALL.
pub(super) struct Pending {
    /// The guest's argument registers, put back after a rewrite.
    pub saved: Option<[u64; 6]>,
    pub post: Post,
}

// Lives for one call, on the stack or in the thread's entry: boxing would allocate per call.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
pub(super) enum Post {
    None,
    /// An mmap injected in place of the call (these registers) to get a scratch area when
    /// the stack had no room: at its exit, the call is made to run again.
    Mmap(Regs),
    /// Fakeroot: the user's own uid/gid in a `struct stat` (`statx: false`) or `struct statx`
    /// at this address read as 0.
    Stat { addr: u64, statx: bool },
    /// The working directory changed: the cached one is stale.
    Chdir,
}

/// The decision at a seccomp stop.
#[allow(clippy::large_enum_variant)]
pub(super) enum Action {
    /// Run the call as it is.
    Allow,
    /// Do not run it; it returns this.
    Skip(i64),
    /// Run it with these registers, then put the guest's back at its exit.
    Rewrite(Regs, Post),
    /// Run it as it is, but stop at its exit.
    Watch(Post),
}

/// Whether the call is one whose exit stop can be spared: a lookup that neither blocks nor
/// is restarted after a signal (so it never runs again with the rewritten registers), where
/// only the path's pointer changed. The register then still points at the host path below
/// the stack pointer after the call; the wrappers of glibc and musl do not read it again,
/// and halving the stops of stat, access and readlink (most of the traced calls of a
/// typical program) is worth that.
///
/// An open qualifies when its target exists as a regular file or a directory (`plain`):
/// those opens do not block, unlike a FIFO's or a device's, so no signal restarts them.
fn only_path_changed(old: &Regs, new: &Regs, plain: bool) -> bool {
    let path = match old.orig_rax as u32 {
        nr::OPEN if plain => 0,
        nr::OPENAT | nr::OPENAT2 if plain => 1,
        nr::STAT | nr::LSTAT | nr::ACCESS | nr::READLINK | nr::STATFS | nr::GETXATTR
        | nr::LGETXATTR | nr::LISTXATTR | nr::LLISTXATTR => 0,
        nr::NEWFSTATAT | nr::STATX | nr::FACCESSAT | nr::FACCESSAT2 | nr::READLINKAT => 1,
        _ => return false,
    };
    let (a, b) = (sys::args(old), sys::args(new));
    (0..6).all(|i| i == path || a[i] == b[i])
}

/// One path argument of a call: the register of the path and of its directory descriptor
/// (for the *at calls), whether a final symlink is followed, and what the call does there.
#[derive(Clone, Copy)]
struct P {
    dfd: Option<usize>,
    arg: usize,
    follow: bool,
    op: Op,
    /// An open of a directory for reading: the view may list a merged directory instead.
    listing: bool,
}

fn p(dfd: Option<usize>, arg: usize, follow: bool, op: Op) -> P {
    P { dfd, arg, follow, op, listing: false }
}

const AT: Option<usize> = Some(0);
const AT_FDCWD: i32 = libc::AT_FDCWD;
const NOFOLLOW: u64 = libc::AT_SYMLINK_NOFOLLOW as u64;
const FOLLOW: u64 = libc::AT_SYMLINK_FOLLOW as u64;
const PATH_MAX: usize = 4096;
/// Not an errno: the new strings need the process's scratch area, which it has not yet.
pub(super) const NEED_SCRATCH: i32 = 0x7fff_0001;
/// The fallback scratch area's size (anonymous memory: pages cost only when touched).
const SCRATCH_SIZE: u64 = 1 << 20;

#[cfg(test)]
thread_local! {
    /// Tests: act as if no stack had room, so the scratch area is used.
    pub(super) static NO_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn stack_refused() -> bool {
    #[cfg(test)]
    if NO_STACK.with(|c| c.get()) {
        return true;
    }
    false
}

impl Tracer {
    /// Handles a seccomp stop; returns how to resume the thread.
    pub(super) fn seccomp_stop(&mut self, tid: i32) -> libc::c_uint {
        let Ok(mut regs) = sys::get_regs(tid) else { return sys::PTRACE_CONT };
        let action = self.entry(tid, &regs);
        match action {
            Action::Allow => sys::PTRACE_CONT,
            Action::Skip(v) if v == -(NEED_SCRATCH as i64) => {
                let saved = regs;
                regs.orig_rax = libc::SYS_mmap as u64;
                let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
                let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
                sys::set_args(&mut regs, &[0, SCRATCH_SIZE, prot, flags, u64::MAX, 0]);
                if sys::set_regs(tid, &regs).is_err() {
                    return sys::PTRACE_CONT;
                }
                self.set_pending(tid, None, Post::Mmap(saved));
                sys::PTRACE_SYSCALL
            }
            Action::Skip(v) => {
                if self.debug {
                    eprintln!("lpmx-shim: [{tid}] {} -> {v}", nr::name(regs.orig_rax));
                }
                // orig_rax -1 at a seccomp stop skips the call; rax is what it returns.
                regs.orig_rax = u64::MAX;
                regs.rax = v as u64;
                let _ = sys::set_regs(tid, &regs);
                sys::PTRACE_CONT
            }
            Action::Rewrite(new, post) => {
                if sys::set_regs(tid, &new).is_err() {
                    return sys::PTRACE_CONT;
                }
                if matches!(post, Post::None) && only_path_changed(&regs, &new, self.plain_target) {
                    return sys::PTRACE_CONT;
                }
                self.set_pending(tid, Some(sys::args(&regs)), post);
                sys::PTRACE_SYSCALL
            }
            Action::Watch(post) => {
                self.set_pending(tid, None, post);
                sys::PTRACE_SYSCALL
            }
        }
    }

    fn set_pending(&mut self, tid: i32, saved: Option<[u64; 6]>, post: Post) {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.pending = Some(Pending { saved, post });
        }
    }

    /// Handles the syscall-exit stop of a call resumed with PTRACE_SYSCALL.
    pub(super) fn syscall_exit(&mut self, tid: i32) {
        let Some(th) = self.threads.get_mut(&tid) else { return };
        let Some(p) = th.pending.take() else { return };
        let tgid = th.tgid;
        let Ok(mut regs) = sys::get_regs(tid) else { return };
        match p.post {
            Post::None => {}
            Post::Mmap(mut saved) => {
                let r = regs.rax as i64;
                if !(-4095..0).contains(&r) {
                    if let Some(pr) = self.procs.get_mut(&tgid) {
                        pr.scratch = Some(r as u64);
                    }
                    // Back to the `syscall` instruction (2 bytes), to stop at it again.
                    saved.rip -= 2;
                    saved.rax = saved.orig_rax;
                } else {
                    saved.rax = r as u64;
                }
                let _ = sys::set_regs(tid, &saved);
                return;
            }
            Post::Stat { addr, statx } => {
                if regs.rax == 0 {
                    self.fake_owner(tid, addr + if statx { 20 } else { 28 });
                }
            }
            Post::Chdir => {
                self.cwd_gen += 1;
                if let Some(pr) = self.procs.get_mut(&tgid) {
                    pr.cwd = None;
                }
            }
        }
        if let Some(saved) = p.saved {
            sys::set_args(&mut regs, &saved);
            let _ = sys::set_regs(tid, &regs);
        }
    }

    /// Fakeroot: a uid and gid pair (adjacent u32s) of the user's own read as root's.
    fn fake_owner(&self, tid: i32, at: u64) {
        let mut b = [0u8; 8];
        if sys::read_mem(tid, at, &mut b).ok() != Some(8) {
            return;
        }
        let uid = u32::from_ne_bytes(b[..4].try_into().unwrap());
        let gid = u32::from_ne_bytes(b[4..].try_into().unwrap());
        let nu = if uid == self.uid { 0 } else { uid };
        let ng = if gid == self.gid { 0 } else { gid };
        if (nu, ng) != (uid, gid) {
            b[..4].copy_from_slice(&nu.to_ne_bytes());
            b[4..].copy_from_slice(&ng.to_ne_bytes());
            let _ = sys::write_mem(tid, at, &b);
        }
    }

    fn entry(&mut self, tid: i32, regs: &Regs) -> Action {
        self.plain_target = false;
        let a = sys::args(regs);
        let n = regs.orig_rax as u32;
        let stat = |addr: u64, statx: bool| Post::Stat { addr, statx };
        let fr = self.fakeroot;
        let nf = |flags: u64| flags & NOFOLLOW == 0;
        match n {
            nr::OPEN => self.open(tid, regs, p(None, 0, true, Op::Read), a[1]),
            nr::OPENAT => self.open(tid, regs, p(AT, 1, true, Op::Read), a[2]),
            nr::OPENAT2 => match sys::read_u64s(tid, a[2], 1) {
                Ok(f) => self.open(tid, regs, p(AT, 1, true, Op::Read), f[0]),
                Err(_) => Action::Allow,
            },
            nr::CREAT => self.paths(tid, regs, &[p(None, 0, true, Op::Create)], Post::None),
            nr::STAT | nr::LSTAT => {
                let post = if fr { stat(a[1], false) } else { Post::None };
                self.paths(tid, regs, &[p(None, 0, n == nr::STAT, Op::Read)], post)
            }
            nr::NEWFSTATAT => {
                let post = if fr { stat(a[2], false) } else { Post::None };
                self.paths(tid, regs, &[p(AT, 1, nf(a[3]), Op::Read)], post)
            }
            nr::STATX => {
                let post = if fr { stat(a[4], true) } else { Post::None };
                self.paths(tid, regs, &[p(AT, 1, nf(a[2]), Op::Read)], post)
            }
            nr::FSTAT => Action::Watch(stat(a[1], false)),
            nr::ACCESS => self.paths(tid, regs, &[p(None, 0, true, Op::Read)], Post::None),
            nr::FACCESSAT => self.paths(tid, regs, &[p(AT, 1, true, Op::Read)], Post::None),
            nr::FACCESSAT2 => self.paths(tid, regs, &[p(AT, 1, nf(a[3]), Op::Read)], Post::None),
            nr::READLINK => self.readlink(tid, regs, None, 0, a[1], a[2]),
            nr::READLINKAT => self.readlink(tid, regs, AT, 1, a[2], a[3]),
            nr::EXECVE => self.execve(tid, regs, false),
            nr::EXECVEAT => self.execve(tid, regs, true),
            nr::CHDIR => {
                self.forget_cwd(tid);
                self.paths(tid, regs, &[p(None, 0, true, Op::Read)], Post::Chdir)
            }
            nr::FCHDIR => {
                self.forget_cwd(tid);
                Action::Watch(Post::Chdir)
            }
            nr::MKDIR => self.paths(tid, regs, &[p(None, 0, false, Op::Create)], Post::None),
            nr::MKDIRAT => self.paths(tid, regs, &[p(AT, 1, false, Op::Create)], Post::None),
            nr::MKNOD => self.paths(tid, regs, &[p(None, 0, false, Op::Create)], Post::None),
            nr::MKNODAT => self.paths(tid, regs, &[p(AT, 1, false, Op::Create)], Post::None),
            nr::RMDIR => {
                self.cwd_gen += 1;
                self.paths(tid, regs, &[p(None, 0, false, Op::Remove { dir: true })], Post::None)
            }
            nr::UNLINK => self.paths(tid, regs, &[p(None, 0, false, Op::Remove { dir: false })], Post::None),
            nr::UNLINKAT => {
                let dir = a[2] & libc::AT_REMOVEDIR as u64 != 0;
                if dir {
                    self.cwd_gen += 1;
                }
                self.paths(tid, regs, &[p(AT, 1, false, Op::Remove { dir })], Post::None)
            }
            nr::RENAME => self.rename(tid, regs, (None, 0), (None, 1), 0),
            nr::RENAMEAT => self.rename(tid, regs, (AT, 1), (Some(2), 3), 0),
            nr::RENAMEAT2 => self.rename(tid, regs, (AT, 1), (Some(2), 3), a[4] as u32),
            nr::LINK => self.paths(
                tid,
                regs,
                &[p(None, 0, false, Op::Read), p(None, 1, false, Op::Create)],
                Post::None,
            ),
            nr::LINKAT => self.paths(
                tid,
                regs,
                &[p(AT, 1, a[4] & FOLLOW != 0, Op::Read), p(Some(2), 3, false, Op::Create)],
                Post::None,
            ),
            // The target is stored as the guest wrote it: it is resolved in guest space later.
            nr::SYMLINK => self.paths(tid, regs, &[p(None, 1, false, Op::Create)], Post::None),
            nr::SYMLINKAT => self.paths(tid, regs, &[p(Some(1), 2, false, Op::Create)], Post::None),
            nr::CHMOD => self.paths(tid, regs, &[p(None, 0, true, Op::Modify)], Post::None),
            nr::FCHMODAT => self.paths(tid, regs, &[p(AT, 1, true, Op::Modify)], Post::None),
            nr::FCHMODAT2 => self.paths(tid, regs, &[p(AT, 1, nf(a[3]), Op::Modify)], Post::None),
            nr::CHOWN | nr::LCHOWN | nr::FCHOWNAT => {
                let spec = match n {
                    nr::CHOWN => p(None, 0, true, Op::Modify),
                    nr::LCHOWN => p(None, 0, false, Op::Modify),
                    _ => p(AT, 1, nf(a[4]), Op::Modify),
                };
                if fr {
                    self.fake_chown(tid, regs, spec)
                } else {
                    self.paths(tid, regs, &[spec], Post::None)
                }
            }
            nr::TRUNCATE | nr::UTIME | nr::UTIMES => {
                self.paths(tid, regs, &[p(None, 0, true, Op::Modify)], Post::None)
            }
            nr::UTIMENSAT => self.paths(tid, regs, &[p(AT, 1, nf(a[3]), Op::Modify)], Post::None),
            nr::FUTIMESAT => self.paths(tid, regs, &[p(AT, 1, true, Op::Modify)], Post::None),
            nr::STATFS | nr::GETXATTR | nr::LISTXATTR => {
                self.paths(tid, regs, &[p(None, 0, true, Op::Read)], Post::None)
            }
            nr::LGETXATTR | nr::LLISTXATTR => {
                self.paths(tid, regs, &[p(None, 0, false, Op::Read)], Post::None)
            }
            nr::SETXATTR | nr::REMOVEXATTR => {
                self.paths(tid, regs, &[p(None, 0, true, Op::Modify)], Post::None)
            }
            nr::LSETXATTR | nr::LREMOVEXATTR => {
                self.paths(tid, regs, &[p(None, 0, false, Op::Modify)], Post::None)
            }
            nr::INOTIFY_ADD_WATCH => {
                let follow = a[2] & libc::IN_DONT_FOLLOW as u64 == 0;
                self.paths(tid, regs, &[p(None, 1, follow, Op::Read)], Post::None)
            }
            nr::NAME_TO_HANDLE_AT => {
                self.paths(tid, regs, &[p(AT, 1, a[4] & FOLLOW != 0, Op::Read)], Post::None)
            }
            nr::GETCWD => self.getcwd(tid, a[0], a[1]),
            nr::GETRESUID | nr::GETRESGID => {
                for ptr in &a[..3] {
                    if sys::write_mem(tid, *ptr, &0u32.to_ne_bytes()).is_err() {
                        return Action::Skip(-libc::EFAULT as i64);
                    }
                }
                Action::Skip(0)
            }
            nr::BIND | nr::CONNECT => self.socket(tid, regs, n == nr::BIND),
            _ => Action::Allow,
        }
    }

    fn open(&mut self, tid: i32, regs: &Regs, mut spec: P, flags: u64) -> Action {
        let flags = flags as i32;
        let acc = flags & libc::O_ACCMODE;
        let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE;
        spec.op = if flags & libc::O_CREAT != 0 {
            Op::Create
        } else if tmpfile || acc != libc::O_RDONLY || flags & (libc::O_TRUNC | libc::O_APPEND) != 0 {
            // O_TMPFILE makes a file in the directory: as a write to it, it is copied up.
            Op::Modify
        } else {
            Op::Read
        };
        // O_CREAT|O_EXCL never follows a final symlink (it fails EEXIST on it).
        spec.follow = flags & libc::O_NOFOLLOW == 0
            && flags & (libc::O_CREAT | libc::O_EXCL) != (libc::O_CREAT | libc::O_EXCL);
        spec.listing = spec.op == Op::Read && flags & libc::O_DIRECTORY != 0;
        self.paths(tid, regs, &[spec], Post::None)
    }

    pub(super) fn read_path(&mut self, tid: i32, addr: u64) -> Result<Vec<u8>, i32> {
        let mut buf = std::mem::take(&mut self.path_buf);
        let r = sys::read_cstr(tid, addr, &mut buf, PATH_MAX);
        let out = match r {
            Ok(()) => Ok(buf.clone()),
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EFAULT)),
        };
        self.path_buf = buf;
        out
    }

    /// The calls with one or two paths, each resolved on its own.
    fn paths(&mut self, tid: i32, regs: &Regs, specs: &[P], post: Post) -> Action {
        let a = sys::args(regs);
        let mut changes: Vec<(usize, Option<usize>, Vec<u8>)> = Vec::new();
        for s in specs {
            // A NULL path (utimensat as futimens), an unreadable one (the kernel fails it
            // EFAULT the same way) or an empty one (AT_EMPTY_PATH: the descriptor itself; or
            // ENOENT) is left to the kernel.
            let path = match self.read_path(tid, a[s.arg]) {
                Ok(path) if !path.is_empty() => path,
                Err(libc::ENAMETOOLONG) => return Action::Skip(-libc::ENAMETOOLONG as i64),
                _ => continue,
            };
            let dfd = s.dfd.map(|i| a[i]);
            let host = match self.resolve(tid, regs.orig_rax, dfd, &path, s.follow, s.op) {
                Outcome::Host(h) => h,
                Outcome::Fail(e) => return Action::Skip(-e as i64),
                Outcome::Done(v) => return Action::Skip(v),
            };
            let host = if s.listing {
                match self.view.listing(&host) {
                    Some(l) => l,
                    None => host,
                }
            } else {
                host
            };
            let hb = host.as_os_str().as_bytes();
            let dfd_matters = dfd.is_some_and(|d| d as i32 != AT_FDCWD) && !path.starts_with(b"/");
            if hb == path.as_slice() && !dfd_matters {
                continue;
            }
            if matches!(regs.orig_rax as u32, nr::OPEN | nr::OPENAT | nr::OPENAT2) {
                let md = if s.follow { std::fs::metadata(&host) } else { std::fs::symlink_metadata(&host) };
                self.plain_target = md.is_ok_and(|m| m.is_file() || m.is_dir());
            }
            let mut bytes = hb.to_vec();
            bytes.push(0);
            changes.push((s.arg, s.dfd, bytes));
        }
        if changes.is_empty() {
            return match post {
                Post::None => Action::Allow,
                post => Action::Watch(post),
            };
        }
        match self.rewrite(tid, regs, &changes) {
            Ok(r) => Action::Rewrite(r, post),
            Err(e) => Action::Skip(-e as i64),
        }
    }

    /// Writes the new arguments (NUL-terminated paths, or any bytes) below the tracee's
    /// stack pointer, past the red zone the ABI lets leaf functions use, and points the
    /// registers at them; a descriptor argument becomes AT_FDCWD for an absolute path.
    fn rewrite(&self, tid: i32, regs: &Regs, changes: &[(usize, Option<usize>, Vec<u8>)]) -> Result<Regs, i32> {
        let total: usize = changes.iter().map(|c| (c.2.len() + 15) & !15).sum();
        let mut new = *regs;
        self.place(tid, regs, total, |base| {
            let mut blob = Vec::with_capacity(total);
            for (arg, dfd, bytes) in changes {
                sys::set_arg(&mut new, *arg, base + blob.len() as u64);
                if let Some(d) = dfd {
                    // Left as it is when it already says AT_FDCWD (as an int: the upper
                    // half of the register is the caller's, often zero).
                    if bytes.first() == Some(&b'/') && sys::args(regs)[*d] as i32 != AT_FDCWD {
                        sys::set_arg(&mut new, *d, AT_FDCWD as i64 as u64);
                    }
                }
                blob.extend_from_slice(bytes);
                blob.resize((blob.len() + 15) & !15, 0);
            }
            blob
        })?;
        Ok(new)
    }

    /// Writes `total` bytes made by `build` for their address: below the stack pointer if
    /// the stack has room there, else in the process's scratch area (NEED_SCRATCH: none yet).
    /// Returns the address.
    pub(super) fn place(&self, tid: i32, regs: &Regs, total: usize, mut build: impl FnMut(u64) -> Vec<u8>) -> Result<u64, i32> {
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EFAULT);
        let stack = (regs.rsp - 128 - total as u64) & !15;
        if !stack_refused() {
            match sys::write_mem(tid, stack, &build(stack)).map_err(errno) {
                Ok(()) => return Ok(stack),
                // Since Linux 6.5 a remote write does not grow a stack: the area instead.
                Err(libc::EFAULT | libc::EIO) => {}
                Err(e) => return Err(e),
            }
        }
        let tgid = self.threads.get(&tid).map_or(tid, |t| t.tgid);
        let Some(area) = self.procs.get(&tgid).and_then(|p| p.scratch) else {
            return Err(NEED_SCRATCH);
        };
        if total as u64 > SCRATCH_SIZE {
            return Err(libc::E2BIG);
        }
        let base = (area + SCRATCH_SIZE - total as u64) & !15;
        sys::write_mem(tid, base, &build(base)).map_err(errno)?;
        Ok(base)
    }

    /// The host directory a relative path of this call starts from.
    fn base_dir(&mut self, tid: i32, dfd: Option<u64>, path: &[u8]) -> Result<PathBuf, i32> {
        if path.starts_with(b"/") {
            // Not looked at by the view for an absolute path: spare the readlink.
            return Ok(PathBuf::from("/"));
        }
        match dfd {
            Some(d) if d as i32 != AT_FDCWD => {
                sys::readlink(Path::new(&format!("/proc/{tid}/fd/{}", d as i32))).map_err(|_| libc::EBADF)
            }
            _ => self.cwd(tid),
        }
    }

    /// The thread's working directory as a host path, cached per process.
    pub(super) fn cwd(&mut self, tid: i32) -> Result<PathBuf, i32> {
        let tgid = self.threads.get(&tid).map_or(tid, |t| t.tgid);
        let gen = self.cwd_gen;
        if let Some((c, g)) = self.procs.get(&tgid).and_then(|p| p.cwd.as_ref()) {
            if *g == gen {
                return Ok(c.clone());
            }
        }
        let c = sys::readlink(Path::new(&format!("/proc/{tid}/cwd")))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT))?;
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.cwd = Some((c.clone(), gen));
        }
        Ok(c)
    }

    fn forget_cwd(&mut self, tid: i32) {
        // Another process sharing the working directory (CLONE_FS) sees the change too.
        self.cwd_gen += 1;
        let tgid = self.threads.get(&tid).map_or(tid, |t| t.tgid);
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.cwd = None;
        }
    }

    /// A path through the view, with /proc/PID/exe standing for the program the process runs
    /// (the kernel's link names the loader when the tracer started the program through it).
    pub(super) fn resolve(&mut self, tid: i32, call: u64, dfd: Option<u64>, path: &[u8], follow: bool, op: Op) -> Outcome {
        let alias = match proc_link(path) {
            Some((pid, ProcLink::Exe)) => self.exe_of(tid, pid).map(|e| e.as_os_str().as_bytes().to_vec()),
            _ => None,
        };
        let path = alias.as_deref().unwrap_or(path);
        let out = match self.base_dir(tid, dfd, path) {
            Ok(dir) => self.view.resolve(&Base { host_dir: &dir, tid }, path, follow, op),
            Err(e) => Outcome::Fail(e),
        };
        if self.debug {
            eprintln!(
                "lpmx-shim: [{tid}] {}({}) {op:?}{} -> {out:?}",
                nr::name(call),
                String::from_utf8_lossy(path),
                if follow { "" } else { " nofollow" }
            );
        }
        out
    }

    /// The guest path of the program a traced process runs, if the tracer saw its execve.
    fn exe_of(&self, tid: i32, pid: Pid) -> Option<PathBuf> {
        let t = match pid {
            Pid::Process | Pid::Thread => tid,
            Pid::Id(n) => n,
        };
        let tgid = self.threads.get(&t)?.tgid;
        self.procs.get(&tgid)?.exe.clone()
    }

    fn readlink(&mut self, tid: i32, regs: &Regs, dfd: Option<usize>, arg: usize, buf: u64, size: u64) -> Action {
        let a = sys::args(regs);
        let path = match self.read_path(tid, a[arg]) {
            Ok(p) => p,
            Err(_) => return Action::Allow,
        };
        if let Some((pid, link)) = proc_link(&path) {
            let answer = match self.proc_answer(tid, pid, link) {
                Ok(v) => v,
                Err(e) => return Action::Skip(-e as i64),
            };
            if (size as i64) <= 0 {
                return Action::Skip(-libc::EINVAL as i64);
            }
            let n = answer.len().min(size as usize);
            if self.debug {
                eprintln!("lpmx-shim: [{tid}] readlink({}) = {}", String::from_utf8_lossy(&path), String::from_utf8_lossy(&answer));
            }
            return match sys::write_mem(tid, buf, &answer[..n]) {
                Ok(()) => Action::Skip(n as i64),
                Err(_) => Action::Skip(-libc::EFAULT as i64),
            };
        }
        self.paths(tid, regs, &[p(dfd, arg, false, Op::Read)], Post::None)
    }

    /// The guest's reading of /proc/PID/{exe,cwd,root,fd/N}.
    fn proc_answer(&mut self, tid: i32, pid: Pid, link: ProcLink) -> Result<Vec<u8>, i32> {
        if link == ProcLink::Root {
            return Ok(b"/".to_vec());
        }
        if link == ProcLink::Exe {
            if let Some(e) = self.exe_of(tid, pid) {
                return Ok(e.into_os_string().into_vec());
            }
        }
        let proc_dir = match pid {
            Pid::Process => format!("/proc/{}", self.threads.get(&tid).map_or(tid, |t| t.tgid)),
            Pid::Thread => format!("/proc/{tid}"),
            Pid::Id(n) => format!("/proc/{n}"),
        };
        let host = match link {
            ProcLink::Exe => sys::readlink(Path::new(&format!("{proc_dir}/exe"))),
            ProcLink::Cwd => sys::readlink(Path::new(&format!("{proc_dir}/cwd"))),
            ProcLink::Fd(n) => sys::readlink(Path::new(&format!("{proc_dir}/fd/{n}"))),
            ProcLink::Root => unreachable!(),
        }
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT))?;
        // Not a path (pipe:[N], socket:[N], anon_inode:...): as it is.
        if !host.is_absolute() {
            return Ok(host.into_os_string().into_vec());
        }
        Ok(self.view.guest_path(&host).unwrap_or(host).into_os_string().into_vec())
    }

    fn getcwd(&mut self, tid: i32, buf: u64, size: u64) -> Action {
        let host = match self.cwd(tid) {
            Ok(h) => h,
            Err(e) => return Action::Skip(-e as i64),
        };
        let Some(guest) = self.view.guest_path(&host) else {
            // The directory is outside the container (a descriptor from before, a bind
            // removed): as the kernel says of a directory outside the caller's root.
            return Action::Skip(-libc::ENOENT as i64);
        };
        let mut b = guest.into_os_string().into_vec();
        b.push(0);
        if (size as usize) < b.len() {
            return Action::Skip(-libc::ERANGE as i64);
        }
        if self.debug {
            eprintln!("lpmx-shim: [{tid}] getcwd = {}", String::from_utf8_lossy(&b[..b.len() - 1]));
        }
        match sys::write_mem(tid, buf, &b) {
            Ok(()) => Action::Skip(b.len() as i64),
            Err(_) => Action::Skip(-libc::EFAULT as i64),
        }
    }

    /// Fakeroot's chown: succeeds without effect on what exists (no copy-up either).
    fn fake_chown(&mut self, tid: i32, regs: &Regs, mut spec: P) -> Action {
        spec.op = Op::Read;
        let a = sys::args(regs);
        let path = match self.read_path(tid, a[spec.arg]) {
            Ok(p) if !p.is_empty() => p,
            _ => return Action::Skip(0),
        };
        match self.resolve(tid, regs.orig_rax, spec.dfd.map(|i| a[i]), &path, spec.follow, spec.op) {
            Outcome::Host(h) => {
                let r = if spec.follow { std::fs::metadata(&h) } else { std::fs::symlink_metadata(&h) };
                match r {
                    Ok(_) => Action::Skip(0),
                    Err(e) => Action::Skip(-(e.raw_os_error().unwrap_or(libc::ENOENT)) as i64),
                }
            }
            Outcome::Fail(e) => Action::Skip(-e as i64),
            Outcome::Done(_) => Action::Skip(0),
        }
    }

    fn rename(&mut self, tid: i32, regs: &Regs, from: (Option<usize>, usize), to: (Option<usize>, usize), flags: u32) -> Action {
        let a = sys::args(regs);
        self.cwd_gen += 1;
        let (Ok(fp), Ok(tp)) = (self.read_path(tid, a[from.1]), self.read_path(tid, a[to.1])) else {
            return Action::Allow;
        };
        if fp.is_empty() || tp.is_empty() {
            return Action::Allow;
        }
        let fd = from.0.map(|i| a[i]);
        let td = to.0.map(|i| a[i]);
        let (fdir, tdir) = match (self.base_dir(tid, fd, &fp), self.base_dir(tid, td, &tp)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return Action::Skip(-e as i64),
        };
        let (o1, o2) = self.view.rename(
            (&Base { host_dir: &fdir, tid }, &fp),
            (&Base { host_dir: &tdir, tid }, &tp),
            flags,
        );
        if self.debug {
            eprintln!(
                "lpmx-shim: [{tid}] {}({}, {}) -> {o1:?}, {o2:?}",
                nr::name(regs.orig_rax),
                String::from_utf8_lossy(&fp),
                String::from_utf8_lossy(&tp)
            );
        }
        let (h1, h2) = match (o1, o2) {
            (Outcome::Fail(e), _) | (_, Outcome::Fail(e)) => return Action::Skip(-e as i64),
            (Outcome::Done(v), _) | (_, Outcome::Done(v)) => return Action::Skip(v),
            (Outcome::Host(h1), Outcome::Host(h2)) => (h1, h2),
        };
        let mut changes = Vec::new();
        for ((dfd, arg), h) in [(from, h1), (to, h2)] {
            let mut b = h.into_os_string().into_vec();
            b.push(0);
            changes.push((arg, dfd, b));
        }
        match self.rewrite(tid, regs, &changes) {
            Ok(r) => Action::Rewrite(r, Post::None),
            Err(e) => Action::Skip(-e as i64),
        }
    }

    /// bind/connect of a unix socket by path: sun_path through the view. A host path longer
    /// than sun_path holds is reached through a short symlink to its directory in
    /// Layout::private (a symlink to the socket itself would make bind fail EADDRINUSE).
    fn socket(&mut self, tid: i32, regs: &Regs, bind: bool) -> Action {
        let a = sys::args(regs);
        let len = a[2] as usize;
        if !(3..=110).contains(&len) {
            return Action::Allow;
        }
        let mut sa = vec![0u8; len];
        if sys::read_mem(tid, a[1], &mut sa).ok() != Some(len) {
            return Action::Allow;
        }
        if u16::from_ne_bytes([sa[0], sa[1]]) != libc::AF_UNIX as u16 || sa[2] == 0 {
            return Action::Allow; // not a unix socket, or an abstract one
        }
        let path_end = sa[2..].iter().position(|&b| b == 0).map_or(len, |z| z + 2);
        let path = sa[2..path_end].to_vec();
        let (follow, op) = if bind { (false, Op::Create) } else { (true, Op::Read) };
        let host = match self.resolve(tid, regs.orig_rax, None, &path, follow, op) {
            Outcome::Host(h) => h,
            Outcome::Fail(e) => return Action::Skip(-e as i64),
            Outcome::Done(v) => return Action::Skip(v),
        };
        if host.as_os_str().as_bytes() == path.as_slice() {
            return Action::Allow;
        }
        let host = if host.as_os_str().len() > 107 {
            match self.short_socket_path(&host) {
                Some(s) => s,
                None => return Action::Skip(-libc::ENAMETOOLONG as i64),
            }
        } else {
            host
        };
        let mut new = sa[..2].to_vec();
        new.extend_from_slice(host.as_os_str().as_bytes());
        new.push(0);
        let new_len = new.len() as u64;
        match self.rewrite(tid, regs, &[(1, None, new)]) {
            Ok(mut r) => {
                r.rdx = new_len;
                Action::Rewrite(r, Post::None)
            }
            Err(e) => Action::Skip(-e as i64),
        }
    }

    fn short_socket_path(&mut self, host: &Path) -> Option<PathBuf> {
        let (dir, name) = (host.parent()?, host.file_name()?);
        let link = match self.sock_dirs.get(dir) {
            Some(l) => l.clone(),
            None => {
                let l = self.view.layout().private.join(format!("s{}", self.sock_dirs.len()));
                let _ = std::fs::remove_file(&l);
                std::os::unix::fs::symlink(dir, &l).ok()?;
                self.sock_dirs.insert(dir.to_path_buf(), l.clone());
                l
            }
        };
        let p = link.join(name);
        (p.as_os_str().len() <= 107).then_some(p)
    }
}

/// Which process a /proc path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pid {
    /// /proc/self: the caller's process.
    Process,
    /// /proc/thread-self: the caller's thread.
    Thread,
    Id(i32),
}

/// The /proc magic links whose answers are host paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProcLink {
    Exe,
    Cwd,
    Root,
    Fd(i32),
}

/// `/proc/{self,thread-self,PID}[/task/TID]/{exe,cwd,root,fd/N}`.
pub(super) fn proc_link(path: &[u8]) -> Option<(Pid, ProcLink)> {
    let rest = path.strip_prefix(b"/proc/")?;
    let mut parts = rest.split(|&b| b == b'/').filter(|s| !s.is_empty());
    let num = |s: &[u8]| -> Option<i32> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let mut pid = match parts.next()? {
        b"self" => Pid::Process,
        b"thread-self" => Pid::Thread,
        s => Pid::Id(num(s)?),
    };
    let mut next = parts.next()?;
    if next == b"task" {
        pid = Pid::Id(num(parts.next()?)?);
        next = parts.next()?;
    }
    let link = match next {
        b"exe" => ProcLink::Exe,
        b"cwd" => ProcLink::Cwd,
        b"root" => ProcLink::Root,
        b"fd" => ProcLink::Fd(num(parts.next()?)?),
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((pid, link))
}

pub(super) fn os(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}
