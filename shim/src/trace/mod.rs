//! The tracer: seccomp filter, ptrace loop, path rewriting (see the crate's notes).
//!
//! - `filter`: the BPF program; only path-taking calls stop, the rest run natively.
//! - `sys`: ptrace, waitpid and tracee memory.
//! - `calls`: what each stopped call becomes (paths through the view, results back out).
//! - `exec`: execve through `#!` interpreters and the image's dynamic loader.
//!
//! Each stop of a rewritten call costs two ptrace stops: the seccomp stop, where the
//! arguments are rewritten, and the syscall-exit stop, where they are put back (the x86_64
//! convention keeps argument registers across a call, and compiled code relies on it; a
//! call restarted after a signal handler must also see the guest's arguments again). Calls
//! the tracer answers itself (errors, getcwd, readlink of /proc/PID/exe) and calls whose
//! path needs no change cost one; so do the lookups (stat, access, readlink, xattr reads)
//! and the opens of existing files and directories whose only change is the path's
//! pointer (see `calls::only_path_changed` for why that is safe enough).
//!
//! Known limits:
//! - New strings go below the tracee's stack pointer. Since Linux 6.5 a write by another
//!   process does not grow a stack mapping: where the stack has no room, the tracer injects
//!   an mmap of a 1 MiB scratch area in the process (once; inherited by forks) and uses it.
//!   Threads of a process share that area, so two threads both short of stack at the same
//!   instant could clash (not seen in practice: threads' stacks are fixed mappings).
//! - A process that made another with CLONE_FS but not CLONE_THREAD (rare) shares a working
//!   directory the tracer caches per process: after the other's chdir, its relative paths
//!   start from the old one until its own next chdir.
//! - Other ABIs than x86_64 (i386 by int 0x80) are killed; x32 calls fail ENOSYS.
//! - Paths coming back from the kernel are mapped for getcwd and readlink of /proc/PID/
//!   {exe,cwd,root,fd/N} only: getsockname/accept of unix sockets, /proc/self/maps,
//!   /proc/self/mountinfo still show host paths.

mod calls;
mod exec;
mod filter;
mod nr;
mod sys;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use crate::view::View;
use crate::{Error, Layout};

/// Runs `child` in a new process traced under `layout`'s view: `child` runs after the filter
/// is in place, so every path it uses (its `chdir` to the working directory, its `execve`) is
/// the container's. Returns the exit status to report: the child's code, or 128 + the signal
/// that killed it. Returns when every traced process has exited.
///
/// `child` runs in a forked child: if the caller has other threads, it must only make
/// async-signal-safe calls (prepare its strings before). Its return value is the exit code
/// when it returns (typically it does not: it execs).
///
/// While it runs, HUP INT QUIT TERM USR1 USR2 CONT WINCH ALRM sent to this process are
/// forwarded to the child (except the terminal's own, which reach the child's process group
/// already); SIGCHLD set to SIG_IGN is reset to the default, since reaping is the tracer's.
/// Must be called on the thread that will wait: ptrace ties tracees to a thread.
pub fn run(layout: &Layout, child: impl FnOnce() -> u8) -> Result<u8, Error> {
    let prog = filter::program(layout.fakeroot);
    let os = |what: &str| {
        let source = io::Error::last_os_error();
        Error::Os { what: what.to_string(), source }
    };
    reset_sigchld();
    let mut go = [0; 2];
    let mut status = [0; 2];
    // SAFETY: pipe2 fills the two arrays.
    if unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os("shim: pipe"));
    }
    if unsafe { libc::pipe2(status.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let e = os("shim: pipe");
        close(go[0]);
        close(go[1]);
        return Err(e);
    }
    // SAFETY: the child only reads, installs the prepared filter, writes and then runs
    // `child`, whose contract is the caller's.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = os("shim: fork");
        for fd in go.into_iter().chain(status) {
            close(fd);
        }
        return Err(e);
    }
    if pid == 0 {
        close(go[1]);
        close(status[0]);
        let mut b = 0u8;
        // SAFETY: reads one byte into a local; the parent writes it once it traces us.
        if unsafe { libc::read(go[0], (&mut b as *mut u8).cast(), 1) } != 1 {
            unsafe { libc::_exit(127) };
        }
        close(go[0]);
        let code: i32 = match filter::install(&prog) {
            Ok(()) => 0,
            Err(e) => e,
        };
        // SAFETY: writes a local int.
        unsafe { libc::write(status[1], (&code as *const i32).cast(), 4) };
        close(status[1]);
        if code != 0 {
            unsafe { libc::_exit(127) };
        }
        // A panic must not unwind into the caller's frames: this is a copy of its process.
        let rc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(127);
        unsafe { libc::_exit(rc as i32) };
    }
    close(go[0]);
    close(status[1]);
    // SAFETY: the descriptors are this function's own, closed nowhere else from here on.
    let (go_w, status_r) = unsafe { (OwnedFd::from_raw_fd(go[1]), OwnedFd::from_raw_fd(status[0])) };
    let fail = |e: Error| {
        // SAFETY: the child is ours; reap it so no zombie stays.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
        }
        Err(e)
    };
    if let Err(source) = sys::seize(pid) {
        return fail(Error::Os { what: "shim: ptrace(PTRACE_SEIZE) of the command".into(), source });
    }
    let b = 1u8;
    // SAFETY: writes a local byte.
    if unsafe { libc::write(go_w.as_raw_fd(), (&b as *const u8).cast(), 1) } != 1 {
        return fail(os("shim: start the command"));
    }
    drop(go_w);
    let mut code = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reads into the rest of a local buffer.
        let n = unsafe { libc::read(status_r.as_raw_fd(), code[got..].as_mut_ptr().cast(), 4 - got) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    drop(status_r);
    if got < 4 {
        return fail(Error::Setup("shim: the command's process died before its filter was in place".into()));
    }
    let errno = i32::from_ne_bytes(code);
    if errno != 0 {
        let source = io::Error::from_raw_os_error(errno);
        return fail(Error::Os { what: "shim: install the seccomp filter (prctl NO_NEW_PRIVS, seccomp)".into(), source });
    }
    let _fw = Forwarding::start(pid);
    let mut t = Tracer::new(layout, pid);
    t.run_loop()
}

fn close(fd: i32) {
    // SAFETY: closes a descriptor this function opened.
    unsafe { libc::close(fd) };
}

fn reset_sigchld() {
    // SAFETY: reads the disposition into a zeroed sigaction; sets SIG_DFL only over SIG_IGN.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old);
        if old.sa_sigaction == libc::SIG_IGN {
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        }
    }
}

const FORWARDED: [i32; 9] = [
    libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2,
    libc::SIGCONT, libc::SIGWINCH, libc::SIGALRM,
];

/// The main children of the runs in progress (one in lpmx-job; the tests run several).
static TARGETS: [AtomicI32; 16] = [const { AtomicI32::new(0) }; 16];
/// Runs in progress, and the dispositions to put back when the last ends.
static ACTIVE: Mutex<(usize, Vec<(i32, libc::sigaction)>)> = Mutex::new((0, Vec::new()));

extern "C" fn forward(sig: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A terminal's signal (SI_KERNEL) went to the whole foreground process group, the
    // command's included: forwarding it would deliver it twice.
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    if !info.is_null() && unsafe { (*info).si_code } == 0x80 {
        return;
    }
    for t in &TARGETS {
        let pid = t.load(Ordering::Relaxed);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

struct Forwarding(usize);

impl Forwarding {
    fn start(pid: i32) -> Forwarding {
        let slot = TARGETS
            .iter()
            .position(|t| t.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok())
            .unwrap_or(usize::MAX);
        let mut a = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        if a.0 == 0 {
            a.1.clear();
            for sig in FORWARDED {
                // SAFETY: installs a handler that only calls kill; saves the old one.
                unsafe {
                    let mut sa: libc::sigaction = std::mem::zeroed();
                    sa.sa_sigaction = forward as extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) as usize;
                    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                    libc::sigemptyset(&mut sa.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(sig, &sa, &mut old);
                    a.1.push((sig, old));
                }
            }
        }
        a.0 += 1;
        Forwarding(slot)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if let Some(t) = TARGETS.get(self.0) {
            t.store(0, Ordering::SeqCst);
        }
        let mut a = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        a.0 -= 1;
        if a.0 == 0 {
            for (sig, old) in a.1.drain(..) {
                // SAFETY: puts back the disposition saved by start.
                unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
            }
        }
    }
}

/// One traced thread.
#[derive(Default)]
struct Thread {
    tgid: i32,
    /// The call stopped at its seccomp stop and resumed to its exit stop, with what to do
    /// there.
    pending: Option<calls::Pending>,
    /// The guest path /proc/self/exe will name if the execve in flight succeeds.
    exec_exe: Option<PathBuf>,
}

/// One traced process (thread group).
#[derive(Default)]
struct Proc {
    /// What /proc/PID/exe says in the guest (the program, not the loader that runs it).
    exe: Option<PathBuf>,
    /// The working directory's host path and the tracer's generation it was read in.
    cwd: Option<(PathBuf, u64)>,
    /// An area the tracer mapped in the process for new strings when its stack had no room.
    scratch: Option<u64>,
}

struct Tracer {
    view: View,
    debug: bool,
    fakeroot: bool,
    uid: u32,
    gid: u32,
    main: i32,
    main_status: Option<u8>,
    threads: HashMap<i32, Thread>,
    procs: HashMap<i32, Proc>,
    /// Bumped by anything that can move a directory (rename, rmdir, chdir by another
    /// thread): cached working directories from before are read again.
    cwd_gen: u64,
    /// Whether a dynamic loader (host path) takes --argv0.
    loaders: HashMap<PathBuf, bool>,
    /// Short names in Layout::private for the parents of long unix socket paths.
    sock_dirs: HashMap<PathBuf, PathBuf>,
    path_buf: Vec<u8>,
    /// The open being handled names an existing regular file or directory.
    plain_target: bool,
}

impl Tracer {
    fn new(layout: &Layout, main: i32) -> Tracer {
        let mut t = Tracer {
            view: View::new(layout.clone()),
            debug: std::env::var_os("LPMX_SHIM_DEBUG").is_some_and(|v| v == "1"),
            fakeroot: layout.fakeroot,
            // SAFETY: no arguments.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            main,
            main_status: None,
            threads: HashMap::new(),
            procs: HashMap::new(),
            cwd_gen: 0,
            loaders: HashMap::new(),
            sock_dirs: HashMap::new(),
            path_buf: Vec::with_capacity(4096),
            plain_target: false,
        };
        t.threads.insert(main, Thread { tgid: main, ..Thread::default() });
        t.procs.insert(main, Proc::default());
        t
    }

    fn run_loop(&mut self) -> Result<u8, Error> {
        while !self.threads.is_empty() {
            let (tid, status) = match sys::wait_any() {
                Ok(w) => w,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => break,
                Err(source) => return Err(Error::Os { what: "shim: waitpid".into(), source }),
            };
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.gone(tid, status);
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            if !self.threads.contains_key(&tid) {
                self.adopt(tid, None);
            }
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            let r = match event {
                sys::EVENT_SECCOMP => {
                    let req = self.seccomp_stop(tid);
                    sys::resume(req, tid, 0)
                }
                sys::EVENT_FORK | sys::EVENT_VFORK | sys::EVENT_CLONE => {
                    self.new_task(tid, event);
                    sys::resume(sys::PTRACE_CONT, tid, 0)
                }
                sys::EVENT_EXEC => {
                    self.exec_done(tid);
                    // exec_done may have moved the thread: the stopped tid is the leader's.
                    sys::resume(sys::PTRACE_CONT, tid, 0)
                }
                sys::EVENT_STOP => {
                    if matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) {
                        // A group-stop: stay stopped, yet let SIGCONT and events through.
                        sys::resume(sys::PTRACE_LISTEN, tid, 0)
                    } else {
                        sys::resume(sys::PTRACE_CONT, tid, 0)
                    }
                }
                0 if sig == (libc::SIGTRAP | 0x80) => {
                    self.syscall_exit(tid);
                    sys::resume(sys::PTRACE_CONT, tid, 0)
                }
                0 => sys::resume(sys::PTRACE_CONT, tid, sig),
                _ => sys::resume(sys::PTRACE_CONT, tid, 0),
            };
            if let Err(source) = r {
                return Err(Error::Os { what: format!("shim: ptrace resume of {tid}"), source });
            }
        }
        Ok(self.main_status.unwrap_or(255))
    }

    fn gone(&mut self, tid: i32, status: i32) {
        if tid == self.main {
            self.main_status = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status) as u8
            } else {
                (128 + libc::WTERMSIG(status)) as u8
            });
        }
        if let Some(th) = self.threads.remove(&tid) {
            self.leave(th.tgid);
        }
    }

    /// A process's state goes with its last thread. Counted by membership rather than by a
    /// counter: a multi-threaded exec reports the other threads' exits around its own event
    /// in no fixed order.
    fn leave(&mut self, tgid: i32) {
        if !self.threads.values().any(|t| t.tgid == tgid) {
            self.procs.remove(&tgid);
        }
    }

    /// Registers a task the tracer has not met: from its parent's clone event (`thread`
    /// known from the clone flags) or, when the task's first stop comes first, from /proc.
    fn adopt(&mut self, tid: i32, from: Option<(i32, bool)>) {
        let (tgid, parent) = match from {
            Some((parent, true)) => (self.threads.get(&parent).map_or(parent, |t| t.tgid), None),
            Some((parent, false)) => (tid, Some(parent)),
            None => {
                let (tgid, ppid) = proc_ids(tid).unwrap_or((tid, 0));
                (tgid, if tgid == tid { Some(ppid) } else { None })
            }
        };
        self.threads.insert(tid, Thread { tgid, ..Thread::default() });
        if self.procs.contains_key(&tgid) {
            return;
        }
        let parent_tgid = parent.and_then(|p| self.threads.get(&p)).map(|t| t.tgid);
        // A fork copies the parent's memory, the scratch area with it.
        let (exe, cwd, scratch) = match parent_tgid.and_then(|p| self.procs.get(&p)) {
            Some(p) => (p.exe.clone(), p.cwd.clone(), p.scratch),
            None => (None, None, None),
        };
        self.procs.insert(tgid, Proc { exe, cwd, scratch });
    }

    fn new_task(&mut self, parent: i32, event: i32) {
        let Ok(child) = sys::event_msg(parent) else { return };
        let child = child as i32;
        if self.threads.contains_key(&child) {
            return;
        }
        let thread = event == sys::EVENT_CLONE && clone_is_thread(parent);
        self.adopt(child, Some((parent, thread)));
    }

    fn exec_done(&mut self, tid: i32) {
        // A thread other than the leader that execs takes the leader's tid; its state moves.
        let old = sys::event_msg(tid).map_or(tid, |m| m as i32);
        let mut th = self.threads.remove(&old).unwrap_or_default();
        if old != tid {
            self.threads.remove(&tid);
        }
        th.pending = None;
        let exe = th.exec_exe.take();
        let prev = std::mem::replace(&mut th.tgid, tid);
        self.threads.insert(tid, th);
        if prev != tid {
            self.leave(prev);
        }
        let p = self.procs.entry(tid).or_default();
        p.scratch = None;
        if exe.is_some() {
            p.exe = exe;
        }
    }
}

/// Whether the clone the stopped `parent` is in made a thread (CLONE_THREAD), from its
/// registers: clone's flags are its first argument, clone3's the first field of its struct.
fn clone_is_thread(parent: i32) -> bool {
    let Ok(regs) = sys::get_regs(parent) else { return false };
    let flags = match regs.orig_rax as u32 {
        nr::CLONE => regs.rdi,
        nr::CLONE3 => sys::read_u64s(parent, regs.rdi, 1).map_or(0, |v| v[0]),
        _ => 0,
    };
    flags & libc::CLONE_THREAD as u64 != 0
}

/// (Tgid, PPid) from /proc/TID/status.
fn proc_ids(tid: i32) -> Option<(i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    Some((field("Tgid:")?, field("PPid:")?))
}
