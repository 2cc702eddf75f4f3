//! The seccomp filter: stop (SECCOMP_RET_TRACE) at the calls the tracer rewrites, answer a
//! few itself (chroot's EPERM, fakeroot's ids), allow everything else.
//!
//! Built by hand rather than with seccompiler: it is a sorted table searched as a binary tree
//! of BPF jumps, so an untraced call costs ~7 comparisons (and the kernel's per-syscall
//! action cache, which recognises filters that only look at the number, usually skips even
//! those).

use super::nr;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_BIT: u32 = 0x4000_0000;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The calls the tracer stops at. `fakeroot` adds fstat (ownership of stat results) and
/// getresuid/getresgid (their results are written through pointers).
pub fn traced(fakeroot: bool) -> Vec<u32> {
    let mut v = vec![
        nr::OPEN, nr::STAT, nr::LSTAT, nr::ACCESS, nr::EXECVE, nr::TRUNCATE, nr::GETCWD,
        nr::CHDIR, nr::FCHDIR, nr::RENAME, nr::MKDIR, nr::RMDIR, nr::CREAT, nr::LINK,
        nr::UNLINK, nr::SYMLINK, nr::READLINK, nr::CHMOD, nr::CHOWN, nr::LCHOWN, nr::UTIME,
        nr::MKNOD, nr::STATFS, nr::SETXATTR, nr::LSETXATTR, nr::GETXATTR, nr::LGETXATTR,
        nr::LISTXATTR, nr::LLISTXATTR, nr::REMOVEXATTR, nr::LREMOVEXATTR, nr::UTIMES,
        nr::INOTIFY_ADD_WATCH, nr::OPENAT, nr::MKDIRAT, nr::MKNODAT, nr::FCHOWNAT,
        nr::FUTIMESAT, nr::NEWFSTATAT, nr::UNLINKAT, nr::RENAMEAT, nr::LINKAT, nr::SYMLINKAT,
        nr::READLINKAT, nr::FCHMODAT, nr::FACCESSAT, nr::UTIMENSAT, nr::NAME_TO_HANDLE_AT,
        nr::RENAMEAT2, nr::EXECVEAT, nr::STATX, nr::OPENAT2, nr::FACCESSAT2, nr::FCHMODAT2,
        nr::BIND, nr::CONNECT,
    ];
    if fakeroot {
        v.extend([nr::FSTAT, nr::GETRESUID, nr::GETRESGID]);
    }
    v
}

/// The filter's table: (number, action), sorted by number.
fn table(fakeroot: bool) -> Vec<(u32, u32)> {
    let mut t: Vec<(u32, u32)> = traced(fakeroot).into_iter().map(|n| (n, RET_TRACE)).collect();
    // A container cannot change its root; as in namespace mode, refused.
    t.push((nr::CHROOT, RET_ERRNO | libc::EPERM as u32));
    if fakeroot {
        // SECCOMP_RET_ERRNO with 0 makes the call return 0 without running it: the ids read
        // as root, and the calls that would change them (or a file's owner by descriptor)
        // succeed without effect, as under fakeroot(1).
        for n in [
            nr::GETUID, nr::GETEUID, nr::GETGID, nr::GETEGID, nr::SETUID, nr::SETGID,
            nr::SETREUID, nr::SETREGID, nr::SETRESUID, nr::SETRESGID, nr::SETFSUID,
            nr::SETFSGID, nr::SETGROUPS, nr::FCHOWN,
        ] {
            t.push((n, RET_ERRNO));
        }
    }
    t.sort();
    t.dedup_by_key(|e| e.0);
    t
}

/// The BPF program.
pub fn program(fakeroot: bool) -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, 4), // seccomp_data.arch
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        // Another ABI (i386 by int 0x80) would bypass the path rewriting: it gets nothing.
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, 0), // seccomp_data.nr
        jump(BPF_JGE_K, X32_BIT, 0, 1),
        stmt(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32),
    ];
    tree(&table(fakeroot), &mut p);
    p
}

/// Emits a block that returns for every number: jge splits in halves until a few entries
/// remain, then a chain of jeq. Each block ends in a return, so no jump leaves its block and
/// offsets stay well under the 255 a BPF conditional jump can reach.
fn tree(t: &[(u32, u32)], p: &mut Vec<libc::sock_filter>) {
    if t.len() <= 4 {
        for &(n, act) in t {
            p.push(jump(BPF_JEQ_K, n, 0, 1));
            p.push(stmt(BPF_RET_K, act));
        }
        p.push(stmt(BPF_RET_K, RET_ALLOW));
        return;
    }
    let mid = t.len() / 2;
    let at = p.len();
    p.push(jump(BPF_JGE_K, t[mid].0, 0, 0));
    tree(&t[..mid], p);
    let left = p.len() - at - 1;
    assert!(left <= 255, "filter block too long for a BPF jump");
    p[at].jt = left as u8;
    tree(&t[mid..], p);
}

/// In the child, before the command: no new privileges (required to install a filter
/// unprivileged) and the filter. Async-signal-safe: no allocation.
pub fn install(prog: &[libc::sock_filter]) -> Result<(), i32> {
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut _ };
    // SAFETY: fprog points at the live program; prctl and seccomp take plain arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(*libc::__errno_location());
        }
        // SPEC_ALLOW: the filter is no security boundary (the processes are the user's own,
        // as untraced), so the speculative-store-bypass mitigation the kernel would force on
        // a filtered process is not worth its cost. Kernels before 4.17 refuse the flag.
        let spec_allow = 1 << 2;
        if libc::syscall(libc::SYS_seccomp, 1 /* SET_MODE_FILTER */, spec_allow, &fprog) != 0
            && libc::syscall(libc::SYS_seccomp, 1, 0, &fprog) != 0
        {
            return Err(*libc::__errno_location());
        }
    }
    Ok(())
}

/// Evaluates the program for `nr` the way the kernel does, for the tests.
#[cfg(test)]
pub fn eval(p: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
    let mut acc = 0u32;
    let mut pc = 0;
    loop {
        let i = p[pc];
        match i.code {
            BPF_LD_W_ABS => acc = if i.k == 0 { nr } else { arch },
            BPF_RET_K => return i.k,
            BPF_JEQ_K | BPF_JGE_K => {
                let hit = if i.code == BPF_JEQ_K { acc == i.k } else { acc >= i.k };
                pc += if hit { i.jt } else { i.jf } as usize;
            }
            c => panic!("unknown BPF code {c:#x}"),
        }
        pc += 1;
    }
}

#[cfg(test)]
pub const ACTIONS: (u32, u32, u32) = (RET_TRACE, RET_ALLOW, RET_ERRNO);
