//! The supervisor `run --host-cmd` keeps on the host: it forks, the child enters the
//! container and execs the command; the parent, outside the namespaces, forwards
//! [`FORWARDED`] signals to the child, serves the bridge socket (a thread per call, nothing
//! else), and returns the child's status (128+N when killed by signal N).

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fdpass::{poll_in, Signals};
use super::server::Server;
use super::{Error, Result, FORWARDED, SOCKET_NAME};

/// The private socket directory and its listening socket; the directory is removed on drop.
pub struct Listener {
    dir: PathBuf,
    sock: UnixListener,
}

impl Listener {
    /// Creates `lpmx-bridge.PID.N` (mode 0700) in `$XDG_RUNTIME_DIR`, else `$TMPDIR`, else
    /// `/tmp` (the first that exists and leaves room for a socket path), and listens there.
    pub fn create(image: &str) -> Result<Listener> {
        let bases: Vec<PathBuf> = ["XDG_RUNTIME_DIR", "TMPDIR"]
            .iter()
            .filter_map(std::env::var_os)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
            .chain([PathBuf::from("/tmp")])
            .filter(|p| p.as_os_str().len() < 64)
            .collect();
        let base = bases.first().cloned().unwrap_or_else(|| "/tmp".into());
        let setup = |what, path: &Path| {
            let (image, path) = (image.to_string(), path.to_path_buf());
            move |source| Error::Setup {
                image,
                what,
                path,
                host: crate::host::hostname().into(),
                source,
            }
        };
        let mut n = 0u32;
        let dir = loop {
            let d = base.join(format!("lpmx-bridge.{}.{n}", std::process::id()));
            match std::fs::create_dir(&d) {
                Ok(()) => break d,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(setup("creating the socket directory", &d)(e)),
            }
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(setup("restricting", &dir))?;
        let path = dir.join(SOCKET_NAME);
        let sock = match UnixListener::bind(&path) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(setup("listening on", &path)(e));
            }
        };
        Ok(Listener { dir, sock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(SOCKET_NAME));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Forks: the child runs `child` (which enters the container and execs, or returns the
/// status to exit with); this process supervises it and serves the bridge until it ends.
/// Must be called single-threaded.
pub fn run(listener: Listener, server: Server, child: impl FnOnce() -> u8) -> Result<u8> {
    let image = server.image.clone();
    let fail = |what: &'static str| {
        let image = image.clone();
        move |source| Error::Process {
            image,
            what,
            host: crate::host::hostname().into(),
            source,
        }
    };
    let mut sigs = FORWARDED.to_vec();
    sigs.push(libc::SIGCHLD);
    let signals = Signals::block(&sigs).map_err(fail("blocking signals"))?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the caller checked that this process is single-threaded, so the child may run
    // arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        signals.restore_mask();
        return Err(fail("forking the container's process")(
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        signals.restore_mask();
        drop(signals);
        // The container's command dies with its supervisor rather than outlive the bridge.
        // SAFETY: prctl on this process; getppid has no preconditions.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(crate::exit::OWN_FAILURE.into());
            }
        }
        let code = child();
        // SAFETY: ending the child without running the parent's exit handlers twice.
        unsafe { libc::_exit(code.into()) };
    }
    // Let go of the job's stdin and stdout: only the command (and host programs, through
    // their callers) use them, so readers see their end when the command closes them.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in [0, 1] {
            // SAFETY: replacing a descriptor of ours with /dev/null.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let server = Arc::new(server);
    let status = serve(&listener, &server, &signals, pid);
    drop(listener);
    status.map_err(fail("supervising the container's process"))
}

fn serve(
    listener: &Listener,
    server: &Arc<Server>,
    signals: &Signals,
    pid: libc::pid_t,
) -> std::io::Result<u8> {
    listener.sock.set_nonblocking(true)?;
    loop {
        let ready = poll_in(&[signals.as_raw_fd(), listener.sock.as_raw_fd()], -1)?;
        if ready[0] {
            while let Some(sig) = signals.next()? {
                if sig != libc::SIGCHLD {
                    // SAFETY: the child is not reaped until it is seen to end below.
                    unsafe { libc::kill(pid, sig) };
                    continue;
                }
                let mut st = 0;
                // SAFETY: waiting for our own child without blocking.
                let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
                if r == pid {
                    if libc::WIFEXITED(st) {
                        return Ok(libc::WEXITSTATUS(st) as u8);
                    }
                    if libc::WIFSIGNALED(st) {
                        return Ok(128u8.wrapping_add(libc::WTERMSIG(st) as u8));
                    }
                }
            }
        }
        if ready[1] {
            loop {
                match listener.sock.accept() {
                    Ok((conn, _)) => {
                        let s = Arc::clone(server);
                        let spawned = std::thread::Builder::new()
                            .name("bridge-call".into())
                            .stack_size(256 << 10)
                            .spawn(move || s.serve(conn));
                        // A thread that cannot start drops the connection: the caller says so.
                        drop(spawned);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
}
