//! execve/execveat: the kernel would read `#!` lines and PT_INTERP as host paths, so the
//! tracer does it in guest space and hands the kernel a program it can run as it is: the
//! image's dynamic loader with the program as its argument, or a static executable.

use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::calls::{proc_link, Action, Pid, Post, ProcLink};
use super::sys::{self, Regs};
use super::Tracer;
use crate::view::{Op, Outcome};

/// An argument of the new argv: one the tracee already has (by address) or a new string.
enum Arg {
    Orig(u64),
    New(Vec<u8>),
}

/// What a file is to execve.
enum Kind {
    Script { interp: Vec<u8>, optarg: Option<Vec<u8>> },
    Elf { interp: Option<Vec<u8>> },
}

/// The kernel's limit of nested interpreters (BINPRM_MAX_RECURSION).
const MAX_SCRIPTS: usize = 4;

impl Tracer {
    pub(super) fn execve(&mut self, tid: i32, regs: &Regs, at: bool) -> Action {
        match self.plan_exec(tid, regs, at) {
            Ok(a) => a,
            Err(e) => {
                if self.debug {
                    eprintln!("lpmx-shim: [{tid}] exec fails: errno {e}");
                }
                Action::Skip(-e as i64)
            }
        }
    }

    fn plan_exec(&mut self, tid: i32, regs: &Regs, at: bool) -> Result<Action, i32> {
        let a = sys::args(regs);
        let (dfd, path_arg, argv_arg, flags) = if at { (Some(a[0]), 1, 2, a[4]) } else { (None, 0, 1, 0) };
        let given = self.read_path(tid, a[path_arg])?;
        let call = regs.orig_rax;
        // fexecve (execveat of a descriptor): the descriptor's file is a host path already.
        let (mut guest, mut host) = if given.is_empty() {
            if flags & libc::AT_EMPTY_PATH as u64 == 0 {
                return Err(libc::ENOENT);
            }
            let fd = dfd.unwrap_or(0) as i32;
            let h = sys::readlink(Path::new(&format!("/proc/{tid}/fd/{fd}"))).map_err(|_| libc::EBADF)?;
            let g = self.view.guest_path(&h).unwrap_or_else(|| h.clone());
            (g.into_os_string().into_vec(), h)
        } else {
            let follow = flags & libc::AT_SYMLINK_NOFOLLOW as u64 == 0;
            (given.clone(), self.host_of(tid, call, dfd, &given, follow)?)
        };
        // /proc/self/exe re-executes the program, not the loader the kernel knows.
        if let Some((pid, ProcLink::Exe)) = proc_link(&guest) {
            if let Some(e) = self.exe_of_pid(tid, pid) {
                host = self.host_of(tid, call, None, e.as_os_str().as_bytes(), true)?;
                guest = e.into_os_string().into_vec();
            }
        }
        // The new argv's head; the guest's argv from index `keep` follows it.
        let mut head = vec![Arg::Orig(0)];
        let mut scripts = 0;
        let (target, exe) = loop {
            match inspect(&host)? {
                Kind::Script { interp, optarg } => {
                    scripts += 1;
                    if scripts > MAX_SCRIPTS {
                        return Err(libc::ELOOP);
                    }
                    let mut h = vec![Arg::New(interp.clone())];
                    if let Some(o) = optarg {
                        h.push(Arg::New(o));
                    }
                    h.push(Arg::New(std::mem::take(&mut guest)));
                    h.extend(head.drain(1..));
                    head = h;
                    host = self.host_of(tid, call, None, &interp, true)?;
                    guest = interp;
                }
                Kind::Elf { interp: None } => {
                    let exe = self.view.guest_path(&host).unwrap_or_else(|| super::calls::os(&guest).to_path_buf());
                    break (host, exe);
                }
                Kind::Elf { interp: Some(ld) } => {
                    let ld_host = self.host_of(tid, call, None, &ld, true)?;
                    if !matches!(inspect(&ld_host)?, Kind::Elf { interp: None }) {
                        return Err(libc::ELIBBAD);
                    }
                    // The loader's idea of $ORIGIN comes from the path it is given, the
                    // kernel's from /proc/self/exe: give it the program's real guest path.
                    let exe = self.view.guest_path(&host).unwrap_or_else(|| super::calls::os(&guest).to_path_buf());
                    let argv0 = head.remove(0);
                    let mut h = vec![Arg::New(ld)];
                    if self.loader_takes_argv0(&ld_host) {
                        h.push(Arg::New(b"--argv0".to_vec()));
                        h.push(argv0);
                    }
                    h.push(Arg::New(exe.as_os_str().as_bytes().to_vec()));
                    h.append(&mut head);
                    head = h;
                    break (ld_host, exe);
                }
            }
        };
        if let Some(t) = self.threads.get_mut(&tid) {
            t.exec_exe = Some(exe);
        }
        let unchanged = head.len() == 1 && matches!(head[0], Arg::Orig(0));
        if unchanged && target.as_os_str().as_bytes() == given.as_slice() && !at {
            return Ok(Action::Allow);
        }
        if self.debug {
            let show: Vec<String> = head
                .iter()
                .map(|x| match x {
                    Arg::Orig(i) => format!("argv[{i}]"),
                    Arg::New(b) => String::from_utf8_lossy(b).into_owned(),
                })
                .collect();
            eprintln!("lpmx-shim: [{tid}] exec {} {show:?} + argv[1..]", target.display());
        }
        // The guest's argv, after its first: kept by address (the kernel copies the strings
        // before it replaces the memory they are in).
        let orig = read_argv(tid, a[argv_arg])?;
        let rest: &[u64] = if orig.is_empty() { &[] } else { &orig[1..] };
        let mut strings: Vec<u8> = Vec::new();
        let mut target_b = target.into_os_string().into_vec();
        target_b.push(0);
        strings.extend_from_slice(&target_b);
        let mut offsets = Vec::with_capacity(head.len());
        for h in &head {
            match h {
                Arg::Orig(i) => offsets.push(Err(orig.get(*i as usize).copied().unwrap_or(0))),
                Arg::New(b) => {
                    offsets.push(Ok(strings.len()));
                    strings.extend_from_slice(b);
                    strings.push(0);
                }
            }
        }
        strings.resize((strings.len() + 15) & !15, 0);
        let nptr = head.len() + rest.len() + 1;
        let total = strings.len() + nptr * 8;
        let build = |base: u64| {
            let sbase = base + (nptr * 8) as u64;
            let mut blob = Vec::with_capacity(total);
            for o in &offsets {
                let p = match o {
                    Ok(off) => sbase + *off as u64,
                    Err(orig_ptr) => *orig_ptr,
                };
                blob.extend_from_slice(&p.to_ne_bytes());
            }
            for p in rest {
                blob.extend_from_slice(&p.to_ne_bytes());
            }
            blob.extend_from_slice(&0u64.to_ne_bytes());
            blob.extend_from_slice(&strings);
            blob
        };
        let base = self.place(tid, regs, total, build)?;
        let sbase = base + (nptr * 8) as u64;
        let mut new = *regs;
        sys::set_arg(&mut new, path_arg, sbase);
        sys::set_arg(&mut new, argv_arg, base);
        if at {
            sys::set_arg(&mut new, 0, libc::AT_FDCWD as i64 as u64);
            sys::set_arg(&mut new, 4, 0);
        }
        Ok(Action::Rewrite(new, Post::None))
    }

    fn host_of(&mut self, tid: i32, call: u64, dfd: Option<u64>, path: &[u8], follow: bool) -> Result<PathBuf, i32> {
        match self.resolve(tid, call, dfd, path, follow, Op::Read) {
            Outcome::Host(h) => Ok(h),
            Outcome::Fail(e) => Err(e),
            Outcome::Done(_) => Err(libc::EACCES),
        }
    }

    fn exe_of_pid(&self, tid: i32, pid: Pid) -> Option<PathBuf> {
        let t = match pid {
            Pid::Process | Pid::Thread => tid,
            Pid::Id(n) => n,
        };
        let tgid = self.threads.get(&t)?.tgid;
        self.procs.get(&tgid)?.exe.clone()
    }

    /// glibc's loader takes --argv0 since 2.33; older ones would take it for the program.
    fn loader_takes_argv0(&mut self, ld: &Path) -> bool {
        if let Some(&b) = self.loaders.get(ld) {
            return b;
        }
        let b = std::fs::read(ld).is_ok_and(|bytes| bytes.windows(7).any(|w| w == b"--argv0"));
        self.loaders.insert(ld.to_path_buf(), b);
        b
    }
}

/// Reads the guest's argv (NULL: empty, as Linux takes it).
fn read_argv(tid: i32, addr: u64) -> Result<Vec<u64>, i32> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    let mut at = addr;
    let mut buf = [0u8; 512];
    loop {
        let n = sys::read_mem(tid, at, &mut buf).map_err(|_| libc::EFAULT)?;
        if n < 8 {
            return Err(libc::EFAULT);
        }
        for c in buf[..n - n % 8].chunks_exact(8) {
            let p = u64::from_ne_bytes(c.try_into().unwrap());
            if p == 0 {
                return Ok(out);
            }
            out.push(p);
            if out.len() > 1 << 20 {
                return Err(libc::E2BIG);
            }
        }
        at += (n - n % 8) as u64;
    }
}

/// What the kernel would make of the file: the same permission checks (a regular file with
/// an execute bit), then `#!` or ELF, else ENOEXEC.
fn inspect(host: &Path) -> Result<Kind, i32> {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EACCES);
    let mut f = File::open(host).map_err(errno)?;
    let md = f.metadata().map_err(errno)?;
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        return Err(libc::EACCES);
    }
    let mut head = [0u8; 256];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(errno(e)),
        }
    }
    let head = &head[..n];
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = match line.iter().position(|&b| b == b'\n') {
            Some(e) => &line[..e],
            None => line,
        };
        let blank = |b: &u8| *b == b' ' || *b == b'\t';
        let line = trim(line, blank);
        let end = line.iter().position(blank).unwrap_or(line.len());
        let interp = line[..end].to_vec();
        if interp.is_empty() {
            return Err(libc::ENOEXEC);
        }
        let rest = trim(&line[end..], blank);
        let optarg = (!rest.is_empty()).then(|| rest.to_vec());
        return Ok(Kind::Script { interp, optarg });
    }
    if head.len() < 52 || &head[..4] != b"\x7fELF" {
        return Err(libc::ENOEXEC);
    }
    let is64 = head[4] == 2;
    let u16at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as u64;
    let u32at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let u64at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = if is64 {
        if head.len() < 64 {
            return Err(libc::ENOEXEC);
        }
        (u64at(head, 32), u16at(54), u16at(56))
    } else {
        (u32at(head, 28), u16at(42), u16at(44))
    };
    let need = if is64 { 56 } else { 32 };
    if phentsize < need || phnum > 4096 {
        return Err(libc::ENOEXEC);
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    f.read_exact_at(&mut ph, phoff).map_err(|_| libc::ENOEXEC)?;
    for e in ph.chunks_exact(phentsize as usize) {
        if u32at(e, 0) != 3 {
            continue; // not PT_INTERP
        }
        let (off, size) = if is64 { (u64at(e, 8), u64at(e, 32)) } else { (u32at(e, 4), u32at(e, 16)) };
        if size == 0 || size > 4096 {
            return Err(libc::ENOEXEC);
        }
        let mut s = vec![0u8; size as usize];
        f.read_exact_at(&mut s, off).map_err(|_| libc::ENOEXEC)?;
        if let Some(z) = s.iter().position(|&b| b == 0) {
            s.truncate(z);
        }
        return Ok(Kind::Elf { interp: Some(s) });
    }
    Ok(Kind::Elf { interp: None })
}

fn trim(mut s: &[u8], f: impl Fn(&u8) -> bool) -> &[u8] {
    while s.first().is_some_and(&f) {
        s = &s[1..];
    }
    while s.last().is_some_and(&f) {
        s = &s[..s.len() - 1];
    }
    s
}
