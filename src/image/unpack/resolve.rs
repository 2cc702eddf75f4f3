//! Resolving an entry's parent directory inside the destination, as a chroot would: with
//! `openat2(RESOLVE_IN_ROOT)` where the kernel has it, else a userspace walk of the same rules.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::Serialize;

/// How parent paths are resolved inside the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, Linux 5.6+.
    Openat2,
    /// A component-by-component walk with `O_PATH | O_NOFOLLOW`, for older kernels or
    /// seccomp filters that refuse `openat2`.
    Userspace,
}

pub(super) fn openat2_works() -> bool {
    rustix::fs::openat2(
        rustix::fs::CWD,
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .is_ok()
}

/// The resolver this process uses. Probed once: old kernels say ENOSYS, some container
/// seccomp profiles EPERM, and any refusal means the userspace walk, which always works.
pub fn resolver() -> Resolver {
    static CHOICE: OnceLock<Resolver> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        if openat2_works() {
            Resolver::Openat2
        } else {
            Resolver::Userspace
        }
    })
}

/// Same limit as the kernel's MAXSYMLINKS, so both resolvers fail on the same paths.
const MAX_SYMLINKS: u32 = 40;

/// Linux's PATH_MAX less the terminating NUL: openat2 refuses longer paths, so the userspace
/// walk does too, and directory depth stays bounded.
pub(super) const MAX_PATH: usize = 4095;

/// Opens (O_PATH) the directory `path` names, resolved as if `root` were `/`.
pub(super) fn resolve_dir(
    resolver: Resolver,
    root: BorrowedFd<'_>,
    path: &[u8],
) -> rustix::io::Result<OwnedFd> {
    match resolver {
        Resolver::Openat2 => {
            let p: &[u8] = if path.is_empty() { b"." } else { path };
            // IN_ROOT answers EAGAIN when anything on the system was renamed during a lookup
            // that involved `..`; the userspace walk has no such check to trip over.
            for _ in 0..16 {
                match rustix::fs::openat2(
                    root,
                    p,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Err(Errno::AGAIN) => continue,
                    r => return r,
                }
            }
            resolve_userspace(root, path)
        }
        Resolver::Userspace => resolve_userspace(root, path),
    }
}

fn resolve_userspace(root: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    if path.len() > MAX_PATH {
        return Err(Errno::NAMETOOLONG);
    }
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // Only the current directory is held, plus its depth below the root: `..` is then the
    // kernel's own `..` of a directory we walked into (nothing else renames inside a layer
    // being unpacked), and depth 0 is where `..` stops. A stack of fds would run out of
    // descriptors on deep trees.
    let mut cur: Option<OwnedFd> = None;
    let mut depth = 0usize;
    let mut pending: Vec<Vec<u8>> = path
        .split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        let here = cur.as_ref().map_or(root, |fd| fd.as_fd());
        match comp.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if depth > 0 {
                    let up = rustix::fs::openat(here, "..", dir_flags, Mode::empty())?;
                    depth -= 1;
                    cur = if depth == 0 { None } else { Some(up) };
                }
                continue;
            }
            _ => {}
        }
        let fd = rustix::fs::openat(
            here,
            comp.as_slice(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        match FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) {
            FileType::Directory => {
                cur = Some(fd);
                depth += 1;
            }
            FileType::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(here, comp.as_slice(), Vec::new())?;
                let target = target.as_bytes();
                if target.first() == Some(&b'/') {
                    cur = None;
                    depth = 0;
                }
                pending.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            }
            _ => return Err(Errno::NOTDIR),
        }
    }
    match cur {
        Some(fd) => Ok(fd),
        None => rustix::fs::openat(root, ".", dir_flags, Mode::empty()),
    }
}
