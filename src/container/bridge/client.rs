//! The container end of a call: lpmx-job started as `/.lpmx/bin/NAME` (a symlink to itself)
//! with [`SOCKET_ENV`] set. It sends the call with its stdin, stdout and stderr, relays the
//! signals it gets, and ends as the host program ended: the same exit status, or killed by
//! the same signal.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::fdpass::{poll_in, send_with_fds, Signals};
use super::{signal_frame, Error, Request, Result, Status, EXE_NAME, FORWARDED, SOCKET_ENV};

/// Runs the call when this process is a bridge client, with [`SOCKET_ENV`] set and either
/// started as [`EXE_NAME`] by a `/.lpmx/bin/NAME` script (argv: EXE, script, ARGS), or
/// under a name other than lpmx-job's (argv: NAME, ARGS; a symlink to a static executable);
/// None otherwise. Returns the exit status, or ends the process by the host program's signal.
pub fn from_argv0() -> Option<u8> {
    let sock = std::env::var_os(SOCKET_ENV).filter(|s| !s.is_empty())?;
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    let base = |a: &OsString| Path::new(a).file_name().map(|n| n.to_os_string());
    let mut name = base(&argv0)?;
    if name == EXE_NAME {
        name = base(&args.next()?)?;
    } else if name == "lpmx-job" {
        return None;
    }
    let args: Vec<OsString> = args.collect();
    Some(match call(Path::new(&sock), name, args) {
        Ok(Status::Exit(c)) => c,
        Ok(Status::Signal(s)) => die_by(s),
        Err(e) => {
            eprintln!("lpmx-job[{}]: error: {e}", crate::host::hostname());
            crate::exit::OWN_FAILURE
        }
    })
}

fn call(sock: &Path, name: OsString, args: Vec<OsString>) -> Result<Status> {
    let shown = name.to_string_lossy().into_owned();
    let fail = |what: &'static str, path: &Path| {
        let (name, path) = (shown.clone(), path.to_path_buf());
        move |source| Error::Client {
            name,
            what,
            path,
            host: crate::host::hostname().into(),
            source,
        }
    };
    // Blocked before anything else: a signal that comes early is relayed once the call runs.
    let signals = Signals::block(FORWARDED).map_err(fail("blocking signals", Path::new("")))?;
    let null_path = Path::new("/dev/null");
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(null_path)
        .map_err(fail("opening", null_path))?;
    let mut conn = UnixStream::connect(sock).map_err(fail("connecting to", sock))?;
    let req = Request {
        name,
        cwd: std::env::current_dir()
            .map(PathBuf::into_os_string)
            .unwrap_or_default(),
        args,
        env: std::env::vars_os().collect(),
    };
    let body = req.encode();
    let fds: Vec<RawFd> = (0..3)
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        .map(|fd| match unsafe { libc::fcntl(fd, libc::F_GETFD) } {
            -1 => null.as_raw_fd(),
            _ => fd,
        })
        .collect();
    let head = (body.len() as u32).to_le_bytes();
    let sent = send_with_fds(&conn, &head, &fds).map_err(fail("sending the call to", sock))?;
    conn.write_all(&head[sent..])
        .and_then(|()| conn.write_all(&body))
        .map_err(fail("sending the call to", sock))?;
    // The host program holds stdin and stdout now: let go of ours, so a reader sees the end
    // of output when the host program closes it.
    for fd in [0, 1] {
        if fds[fd as usize] == fd {
            // SAFETY: replacing an open descriptor of ours with /dev/null.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    loop {
        let ready = poll_in(&[conn.as_raw_fd(), signals.as_raw_fd()], -1)
            .map_err(fail("waiting on", sock))?;
        if ready[1] {
            while let Ok(Some(sig)) = signals.next() {
                let _ = conn.write_all(&signal_frame(sig));
            }
        }
        if ready[0] {
            let mut frame = [0u8; 8];
            return match conn.read_exact(&mut frame) {
                Ok(()) => Status::decode(&frame).ok_or_else(|| Error::Protocol {
                    name: shown.clone(),
                    why: format!("the host side answered {frame:?}, not a status"),
                    host: crate::host::hostname().into(),
                }),
                Err(_) => Err(Error::Protocol {
                    name: shown.clone(),
                    why: format!(
                        "the host side ended the call without a status (was the container's \
                         main command over, or the caller refused?) at {}",
                        sock.display()
                    ),
                    host: crate::host::hostname().into(),
                }),
            };
        }
    }
}

/// Ends this process by `sig`, as the host program ended (no core file); returns 128+sig
/// for a signal that does not kill.
fn die_by(sig: i32) -> u8 {
    // SAFETY: plain libc calls on this process: no core file, default action, unblocked.
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    128u8.wrapping_add(sig as u8)
}
