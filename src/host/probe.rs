//! Trying things in a throw-away child process. Host checks must not change this process (a
//! user namespace cannot be left once entered) and must not hang it (a lock on a broken NFS
//! mount can block forever), so each attempt runs in a fork with a deadline.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The child's exit code and what it wrote to its report pipe.
    Exited(i32, String),
    Signaled(i32),
    /// Still running at the deadline; it was killed.
    TimedOut,
}

/// Runs `f` in a forked child and returns its report. `f` writes its findings into the
/// `String` it is given and returns the exit code.
///
/// The caller must be single-threaded or accept that only async-signal-safe work is sound in
/// `f`; lpmx-job forks probes before it starts any thread.
pub fn in_child(
    deadline: Duration,
    f: impl FnOnce(&mut String) -> i32,
) -> std::io::Result<Outcome> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned only here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fork; the child only runs `f`, writes to the pipe and calls _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(rd);
        let mut report = String::new();
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut report))).unwrap_or(99);
        let bytes = report.as_bytes();
        // SAFETY: writing a buffer we own to a descriptor we own, then leaving without
        // running the parent's atexit handlers or destructors.
        unsafe {
            libc::write(wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(code);
        }
    }
    drop(wr);
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if start.elapsed() >= deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Ok(Outcome::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut report = String::new();
    std::fs::File::from(rd).read_to_string(&mut report)?;
    if libc::WIFEXITED(status) {
        Ok(Outcome::Exited(libc::WEXITSTATUS(status), report))
    } else {
        Ok(Outcome::Signaled(libc::WTERMSIG(status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_exit_and_text() {
        let o = in_child(Duration::from_secs(5), |r| {
            r.push_str("hello");
            3
        })
        .unwrap();
        assert_eq!(o, Outcome::Exited(3, "hello".into()));
    }

    #[test]
    fn kills_a_hung_child() {
        let t = Instant::now();
        let o = in_child(Duration::from_millis(200), |_| {
            std::thread::sleep(Duration::from_secs(30));
            0
        })
        .unwrap();
        assert_eq!(o, Outcome::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_panic_is_not_success() {
        let o = in_child(Duration::from_secs(5), |_| panic!("boom")).unwrap();
        assert_eq!(o, Outcome::Exited(99, String::new()));
    }
}
