//! Thin libc wrappers over NUL-terminated byte paths: the resolver runs on every traced
//! `open`/`stat`, so nothing here allocates.

use std::os::fd::RawFd;

/// What a name is, as far as resolution cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K {
    Missing,
    Dir,
    Link,
    /// Regular file, fifo, socket, device.
    Other,
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// `path` must end with a NUL.
pub fn lstat_at(dirfd: RawFd, path: &[u8]) -> Result<libc::stat, i32> {
    debug_assert_eq!(path.last(), Some(&0));
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let r = unsafe {
        libc::fstatat(dirfd, path.as_ptr().cast(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    if r == 0 {
        Ok(unsafe { st.assume_init() })
    } else {
        Err(errno())
    }
}

pub fn kind_of(st: &libc::stat) -> K {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => K::Dir,
        libc::S_IFLNK => K::Link,
        _ => K::Other,
    }
}

/// overlayfs's whiteout: a character device 0/0.
pub fn is_whiteout(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

pub fn readlink_at(dirfd: RawFd, path: &[u8], out: &mut Vec<u8>) -> Result<(), i32> {
    debug_assert_eq!(path.last(), Some(&0));
    out.clear();
    out.reserve(256);
    loop {
        let cap = out.capacity();
        let n = unsafe {
            libc::readlinkat(dirfd, path.as_ptr().cast(), out.as_mut_ptr().cast(), cap)
        };
        if n < 0 {
            return Err(errno());
        }
        let n = n as usize;
        if n < cap {
            unsafe { out.set_len(n) };
            return Ok(());
        }
        out.reserve(cap * 2);
    }
}

pub fn lgetxattr_is_y(path: &[u8], name: &[u8]) -> bool {
    let mut v = [0u8; 4];
    let n = unsafe {
        libc::lgetxattr(path.as_ptr().cast(), name.as_ptr().cast(), v.as_mut_ptr().cast(), v.len())
    };
    n == 1 && v[0] == b'y'
}
