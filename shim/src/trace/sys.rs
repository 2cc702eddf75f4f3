//! Thin wrappers over ptrace, waitpid and tracee memory: the only unsafe code of the tracer
//! apart from the fork and the filter's installation.

use std::io;
use std::path::{Path, PathBuf};

pub type Regs = libc::user_regs_struct;

pub const PTRACE_SEIZE: libc::c_uint = 0x4206;
pub const PTRACE_LISTEN: libc::c_uint = 0x4208;
pub const PTRACE_GETEVENTMSG: libc::c_uint = 0x4201;
pub const PTRACE_CONT: libc::c_uint = 7;
pub const PTRACE_SYSCALL: libc::c_uint = 24;
pub const PTRACE_GETREGS: libc::c_uint = 12;
pub const PTRACE_SETREGS: libc::c_uint = 13;

pub const EVENT_FORK: i32 = 1;
pub const EVENT_VFORK: i32 = 2;
pub const EVENT_CLONE: i32 = 3;
pub const EVENT_EXEC: i32 = 4;
pub const EVENT_SECCOMP: i32 = 7;
pub const EVENT_STOP: i32 = 128;

pub const OPTIONS: libc::c_long = 0x01 // TRACESYSGOOD
    | 0x02 // TRACEFORK
    | 0x04 // TRACEVFORK
    | 0x08 // TRACECLONE
    | 0x10 // TRACEEXEC
    | 0x80 // TRACESECCOMP
    | 0x100000; // EXITKILL

fn ptrace(req: libc::c_uint, pid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every request used here takes integers or a pointer to a live local.
    let r = unsafe { libc::ptrace(req, pid, addr as *mut libc::c_void, data as *mut libc::c_void) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn seize(pid: i32) -> io::Result<()> {
    ptrace(PTRACE_SEIZE, pid, 0, OPTIONS as usize).map(drop)
}

/// Resumes a stopped tracee. ESRCH is not an error: the tracee was killed (SIGKILL of its
/// group, an exec by another thread) while stopped, and its exit is on its way to waitpid.
pub fn resume(req: libc::c_uint, pid: i32, sig: i32) -> io::Result<()> {
    match ptrace(req, pid, 0, sig as usize) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r.map(drop),
    }
}

pub fn event_msg(pid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    ptrace(PTRACE_GETEVENTMSG, pid, 0, &mut msg as *mut _ as usize)?;
    Ok(msg as u64)
}

pub fn get_regs(pid: i32) -> io::Result<Regs> {
    // SAFETY: user_regs_struct is plain integers.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    ptrace(PTRACE_GETREGS, pid, 0, &mut regs as *mut _ as usize)?;
    Ok(regs)
}

pub fn set_regs(pid: i32, regs: &Regs) -> io::Result<()> {
    ptrace(PTRACE_SETREGS, pid, 0, regs as *const _ as usize).map(drop)
}

/// The six argument registers of the x86_64 system-call convention, in order.
pub fn args(r: &Regs) -> [u64; 6] {
    [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]
}

pub fn set_arg(r: &mut Regs, i: usize, v: u64) {
    match i {
        0 => r.rdi = v,
        1 => r.rsi = v,
        2 => r.rdx = v,
        3 => r.r10 = v,
        4 => r.r8 = v,
        _ => r.r9 = v,
    }
}

pub fn set_args(r: &mut Regs, a: &[u64; 6]) {
    for (i, v) in a.iter().enumerate() {
        set_arg(r, i, *v);
    }
}

/// waitpid(-1) for this thread's tracees only (`__WNOTHREAD`: another thread of the
/// process may be tracing its own, as the tests do).
pub fn wait_any() -> io::Result<(i32, i32)> {
    let mut status = 0;
    loop {
        // SAFETY: status is a live local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | 0x2000_0000) };
        if pid >= 0 {
            return Ok((pid, status));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Reads up to `buf.len()` bytes; returns how many were readable (a read stops at the first
/// unmapped page).
pub fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: local points at buf; remote memory is the tracee's, checked by the kernel.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Sites that forbid process_vm_readv (a seccomp policy of the batch system): /proc.
        Some(libc::ENOSYS) | Some(libc::EPERM) => proc_mem(pid, addr, buf, false),
        _ => Err(e),
    }
}

pub fn write_mem(pid: i32, addr: u64, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: as in read_mem; the kernel only reads `data`.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n as usize == data.len() {
        return Ok(());
    }
    // Partial writes and refusals: /proc/PID/mem writes through page protections too.
    let mut copy = data.to_vec();
    let done = proc_mem(pid, addr, &mut copy, true)?;
    if done != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

fn proc_mem(pid: i32, addr: u64, buf: &mut [u8], write: bool) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(format!("/proc/{pid}/mem"))?;
    let mut done = 0;
    while done < buf.len() {
        let r = if write {
            f.write_at(&buf[done..], addr + done as u64)
        } else {
            f.read_at(&mut buf[done..], addr + done as u64)
        };
        match r {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// A NUL-terminated string of the tracee's, without its NUL, into `out` (cleared first).
/// Reads to the end of the page first, so a path next to an unmapped page is no fault.
pub fn read_cstr(pid: i32, addr: u64, out: &mut Vec<u8>, max: usize) -> io::Result<()> {
    out.clear();
    if addr == 0 {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    let mut at = addr;
    let mut chunk = [0u8; 4096];
    loop {
        let page_left = 4096 - (at % 4096) as usize;
        let n = read_mem(pid, at, &mut chunk[..page_left])?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        if let Some(z) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..z]);
            return Ok(());
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() > max {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        at += n as u64;
    }
}

pub fn read_u64s(pid: i32, addr: u64, n: usize) -> io::Result<Vec<u64>> {
    let mut bytes = vec![0u8; n * 8];
    let got = read_mem(pid, addr, &mut bytes)?;
    if got < bytes.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(bytes.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap())).collect())
}

pub fn readlink(p: &Path) -> io::Result<PathBuf> {
    std::fs::read_link(p)
}
