//! The few system calls the bridge needs that std does not offer: descriptors over a Unix
//! socket (SCM_RIGHTS), the peer's uid (SO_PEERCRED), signals as a descriptor (signalfd),
//! and poll.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn retry<T: PartialOrd + Default>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        let r = f();
        if r >= T::default() {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends `data` with `fds` attached (SCM_RIGHTS); returns the bytes sent.
pub fn send_with_fds(sock: &impl AsRawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call,
    // and the control buffer is aligned (u64) and CMSG_SPACE bytes long.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
        let dst = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
        for (i, fd) in fds.iter().enumerate() {
            dst.add(i).write_unaligned(*fd);
        }
        retry(|| libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)).map(|n| n as usize)
    }
}

/// Receives into `buf` and up to `max_fds` descriptors (close-on-exec).
pub fn recv_with_fds(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let bytes = size_of::<libc::c_int>() * max_fds;
    // SAFETY: arithmetic.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: as in send_with_fds; the kernel writes at most msg_controllen bytes of control
    // data, which is walked with the CMSG_* macros within that length.
    let n = unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = retry(|| libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC))?;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let src = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..len / size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(src.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("more descriptors than expected"));
        }
        n as usize
    };
    Ok((n, fds))
}

/// The uid of the process at the other end of a Unix socket, as this namespace sees it.
pub fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    // SAFETY: getsockopt fills the ucred it is given, of the length given.
    unsafe {
        let mut cred: libc::ucred = zeroed();
        let mut len = size_of::<libc::ucred>() as libc::socklen_t;
        retry(|| {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        })?;
        Ok(cred.uid)
    }
}

/// Signals blocked and read from a descriptor instead of interrupting the process.
pub struct Signals {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl Signals {
    /// Blocks `sigs` in this thread (threads started later inherit the mask) and opens a
    /// non-blocking signalfd for them.
    pub fn block(sigs: &[libc::c_int]) -> io::Result<Signals> {
        // SAFETY: sigset operations on local sets; signalfd returns a new descriptor.
        unsafe {
            let mut set: libc::sigset_t = zeroed();
            libc::sigemptyset(&mut set);
            for s in sigs {
                libc::sigaddset(&mut set, *s);
            }
            let mut old: libc::sigset_t = zeroed();
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                let e = io::Error::last_os_error();
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                return Err(e);
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
                old,
            })
        }
    }

    /// The next pending signal, if any.
    pub fn next(&self) -> io::Result<Option<libc::c_int>> {
        // SAFETY: signalfd reads whole signalfd_siginfo records into the zeroed one.
        unsafe {
            let mut info: libc::signalfd_siginfo = zeroed();
            let want = size_of::<libc::signalfd_siginfo>();
            let n = libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                want,
            );
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(e),
                };
            }
            Ok((n as usize == want).then_some(info.ssi_signo as libc::c_int))
        }
    }

    /// Restores the signal mask from before [`Signals::block`] (in a forked child).
    pub fn restore_mask(&self) {
        // SAFETY: setting this thread's mask to a saved one.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable (or hung up); returns their `revents`. `timeout_ms`
/// -1 waits forever.
pub fn poll_in(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll reads and writes the array it is given, of the length given.
    retry(|| unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) })?;
    Ok(p.iter().map(|p| p.revents != 0).collect())
}

/// A pidfd for a child (Linux 5.3+), or None where the kernel has none.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor just returned to us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
