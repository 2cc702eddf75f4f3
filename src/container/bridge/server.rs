//! The host end of a call: one thread per connection, in the supervisor.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::fdpass::{peer_uid, pidfd_open, poll_in, recv_with_fds};
use super::Beneath;
use super::{find_on_path, host_cwd, host_env, open_beneath, parse_signal_frame, Request, Status};
use super::{CWD_NOT_ON_HOST, MAX_REQUEST};
use crate::exit;

/// What every call needs, fixed when the container starts.
#[derive(Debug, Clone)]
pub struct Server {
    /// The image, for messages.
    pub image: String,
    /// The bridged names.
    pub names: Vec<String>,
    /// The supervisor's environment (the host's).
    pub host_env: Vec<(OsString, OsString)>,
    /// The environment the container's command started with.
    pub container_env: Vec<(OsString, OsString)>,
    /// The binds, container path then host path, in mount order.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Each bind's source directory, opened when the server was made (before the container
    /// ran anything): a call's working directory is resolved beneath it. None for a file
    /// or a source that could not be opened.
    pub bind_dirs: Vec<Option<Arc<OwnedFd>>>,
    /// Our uid: the only one served.
    pub uid: u32,
    /// The host directory `run` was started from, opened when the server was made: where a
    /// call from a directory that exists only in the image runs (`squeue` does not care, and
    /// `sbatch` then submits from the job's directory, as shared/DESIGN.md has it).
    pub start_dir: Option<(PathBuf, Arc<OwnedFd>)>,
}

/// A call's host program, working directory (host path, for messages, and an open
/// descriptor to fchdir to) and environment.
type Launch = (PathBuf, (PathBuf, OwnedFd), Vec<(OsString, OsString)>);

/// Why a call ended before its host program ran: a status and one line for the caller.
struct Refusal(u8, String);

impl Server {
    /// The server of one container, its bind sources opened now: call it before the
    /// container's command starts, so that what the command later does to the host tree
    /// (a source swapped for a symlink through another bind) cannot move them.
    pub fn new(
        image: String,
        names: Vec<String>,
        host_env: Vec<(OsString, OsString)>,
        container_env: Vec<(OsString, OsString)>,
        binds: Vec<(PathBuf, PathBuf)>,
        uid: u32,
        start_dir: Option<PathBuf>,
    ) -> Server {
        use rustix::fs::{Mode, OFlags};
        let open = |dir: &Path| {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            rustix::fs::open(dir, flags, Mode::empty())
                .ok()
                .map(Arc::new)
        };
        let bind_dirs = binds.iter().map(|(_, src)| open(src)).collect();
        let start_dir = start_dir.and_then(|d| open(&d).map(|fd| (d, fd)));
        Server {
            image,
            names,
            host_env,
            container_env,
            binds,
            bind_dirs,
            uid,
            start_dir,
        }
    }

    /// Serves one connection to its end. Failures that cannot reach the caller's stderr are
    /// dropped: the client then reports the bridge's failure itself.
    pub fn serve(&self, conn: UnixStream) {
        let _ = self.serve_inner(conn);
    }

    fn serve_inner(&self, mut conn: UnixStream) -> io::Result<()> {
        conn.set_nonblocking(false)?;
        if peer_uid(&conn)? != self.uid {
            return Ok(());
        }
        let mut head = [0u8; 4];
        let (mut got, fds) = recv_with_fds(&conn, &mut head, 3)?;
        if got == 0 {
            return Ok(());
        }
        while got < head.len() {
            let n = conn.read(&mut head[got..])?;
            if n == 0 {
                return Ok(());
            }
            got += n;
        }
        let Ok::<[OwnedFd; 3], _>([stdin, stdout, stderr]) = fds.try_into() else {
            return Ok(());
        };
        let len = u32::from_le_bytes(head) as usize;
        if len > MAX_REQUEST {
            return Ok(());
        }
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body)?;
        let mut err = std::fs::File::from(stderr.try_clone()?);
        let req = match Request::decode(&body) {
            Ok(r) => r,
            Err(why) => {
                let _ = writeln!(err, "{}", self.line("(unknown)", &why));
                return send(&conn, Status::Exit(exit::OWN_FAILURE));
            }
        };
        let name = req.name.to_string_lossy().into_owned();
        let (path, (_, cwd), env) = match self.check(&req, &name) {
            Ok(t) => t,
            Err(Refusal(code, why)) => {
                let _ = writeln!(err, "{}", self.line(&name, &why));
                return send(&conn, Status::Exit(code));
            }
        };
        let mut cmd = Command::new(&path);
        let cwd_fd = cwd.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The directory opened beneath the bind, by descriptor: nothing resolves
                // its path again, so nothing can redirect it.
                if libc::fchdir(cwd_fd) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The supervisor blocks the signals it reads from a signalfd, and a mask
                // survives exec: the host program starts with none blocked.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            })
        };
        let spawned = cmd
            .arg0(&req.name)
            .args(&req.args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let code = match e.kind() {
                    io::ErrorKind::NotFound => exit::NOT_FOUND,
                    _ => exit::NOT_EXECUTABLE,
                };
                let why = format!("cannot run {} on {}: {e}", path.display(), host());
                let _ = writeln!(err, "{}", self.line(&name, &why));
                return send(&conn, Status::Exit(code));
            }
        };
        drop(err);
        // Wait for the program while relaying the caller's signals; a caller gone before the
        // program ends takes it along (SIGTERM).
        let pidfd = pidfd_open(child.id());
        let mut caller_gone = false;
        let status = loop {
            let mut fds = Vec::with_capacity(2);
            if !caller_gone {
                fds.push(conn.as_raw_fd());
            }
            if let Some(p) = &pidfd {
                fds.push(p.as_raw_fd());
            }
            let timeout = if pidfd.is_some() { -1 } else { 50 };
            let ready = if fds.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(50));
                vec![]
            } else {
                poll_in(&fds, timeout)?
            };
            if !caller_gone && ready.first() == Some(&true) {
                let mut frame = [0u8; 8];
                match conn.read_exact(&mut frame) {
                    Ok(()) => {
                        if let Some(sig) = parse_signal_frame(&frame) {
                            // SAFETY: the child is not reaped yet, so its pid is still ours.
                            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
                        }
                    }
                    Err(_) => {
                        caller_gone = true;
                        // SAFETY: as above.
                        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                    }
                }
            }
            if let Some(st) = child.try_wait()? {
                break st;
            }
        };
        if caller_gone {
            return Ok(());
        }
        send(&conn, Status::from_wait(status))
    }

    /// Name, host program, working directory and environment of a call, or its refusal.
    fn check(&self, req: &Request, name: &str) -> Result<Launch, Refusal> {
        if !self.names.iter().any(|n| OsStr::new(n) == req.name) {
            return Err(Refusal(
                exit::NOT_FOUND,
                format!(
                    "not a bridged host command (bridged: {}); `lpmx-job run --host-cmd {name}` \
                     bridges it",
                    if self.names.is_empty() {
                        "none".into()
                    } else {
                        self.names.join(", ")
                    }
                ),
            ));
        }
        let host_path = self
            .host_env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| crate::container::environ::DEFAULT_PATH.into());
        let Some(path) = find_on_path(&req.name, &host_path) else {
            return Err(Refusal(
                exit::NOT_FOUND,
                format!(
                    "command not found on the host {} (PATH={})",
                    host(),
                    host_path.to_string_lossy()
                ),
            ));
        };
        let inside = PathBuf::from(&req.cwd);
        let shown = || {
            if req.cwd.is_empty() {
                "(unknown)".into()
            } else {
                inside.display().to_string()
            }
        };
        // A directory that exists only in the image: the directory `run` started from.
        let only_inside = || match &self.start_dir {
            Some((dir, fd)) => rustix::io::dup(fd.as_fd())
                .map(|fd| (dir.clone(), fd))
                .map_err(|e| {
                    Refusal(
                        exit::OWN_FAILURE,
                        format!("opening {} on {}: {e}", dir.display(), host()),
                    )
                }),
            None => Err(Refusal(
                CWD_NOT_ON_HOST,
                format!(
                    "the working directory {} exists only in the container, not on the host \
                     {}, and the directory lpmx-job started from is gone; cd to a directory \
                     bound from the host (your home, the job's directory, /tmp, or a --bind) \
                     first",
                    shown(),
                    host()
                ),
            )),
        };
        let env = host_env(&self.host_env, &self.container_env, &req.env);
        let Some((i, rest)) = host_cwd(&self.binds, &inside) else {
            return Ok((path, only_inside()?, env));
        };
        let src = &self.binds[i].1;
        let Some(root) = self.bind_dirs.get(i).cloned().flatten() else {
            return Ok((path, only_inside()?, env));
        };
        let cwd = match open_beneath(root.as_fd(), src, &rest) {
            Ok(fd) => (src.join(&rest), fd),
            Err(Beneath::Missing(_)) => only_inside()?,
            Err(Beneath::Symlink(at)) => {
                return Err(Refusal(
                    CWD_NOT_ON_HOST,
                    format!(
                        "the working directory {} is {} on the host {}, where {} is a \
                         symbolic link: the bridge never follows one out of a bind; cd to the \
                         directory itself",
                        shown(),
                        src.join(&rest).display(),
                        host(),
                        at.display()
                    ),
                ))
            }
            Err(Beneath::Escapes) => {
                return Err(Refusal(
                    CWD_NOT_ON_HOST,
                    format!(
                        "the working directory {:?} leaves its bind ({})",
                        req.cwd,
                        src.display()
                    ),
                ))
            }
            Err(Beneath::Io(at, e)) => {
                return Err(Refusal(
                    exit::OWN_FAILURE,
                    format!("opening {} on {}: {e}", at.display(), host()),
                ))
            }
        };
        Ok((path, cwd, env))
    }

    fn line(&self, name: &str, why: &str) -> String {
        format!(
            "lpmx-job[{}]: error: {}: {name} (host command): {why}",
            host(),
            self.image
        )
    }
}

fn host() -> &'static str {
    crate::host::hostname()
}

fn send(mut conn: &UnixStream, s: Status) -> io::Result<()> {
    conn.write_all(&s.encode())
}

#[cfg(test)]
mod tests {
    use super::super::fdpass::send_with_fds;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// D9, as a raw client would do it: the real client sends getcwd() (symlinks already
    /// resolved inside the container); a hand-made request can name any path. Through a
    /// symlink in a bound directory it would reach a host directory no bind shows.
    #[test]
    fn a_raw_clients_working_directory_through_a_host_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let bound = d.path().join("bound");
        let outside = d.path().join("outside");
        let hostbin = d.path().join("hostbin");
        for p in [&bound, &outside, &hostbin] {
            std::fs::create_dir(p).unwrap();
        }
        std::os::unix::fs::symlink(&outside, bound.join("link")).unwrap();
        let ran = d.path().join("ran");
        let script = hostbin.join("where");
        std::fs::write(&script, format!("#!/bin/sh\npwd > '{}'\n", ran.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let server = Server::new(
            "img".into(),
            vec!["where".into()],
            vec![(
                "PATH".into(),
                format!("{}:/usr/bin:/bin", hostbin.display()).into(),
            )],
            vec![],
            vec![("/work".into(), bound.clone())],
            rustix::process::getuid().as_raw(),
            Some(hostbin.clone()),
        );
        let errors = d.path().join("stderr");
        let call = |cwd: &str| {
            let (mine, theirs) = UnixStream::pair().unwrap();
            let s = server.clone();
            let t = std::thread::spawn(move || s.serve(theirs));
            let null = std::fs::File::open("/dev/null").unwrap();
            let err = std::fs::File::create(&errors).unwrap();
            let body = Request {
                name: "where".into(),
                cwd: cwd.into(),
                args: vec![],
                env: vec![],
            }
            .encode();
            let head = (body.len() as u32).to_le_bytes();
            let fds = [null.as_raw_fd(), err.as_raw_fd(), err.as_raw_fd()];
            let sent = send_with_fds(&mine, &head, &fds).unwrap();
            (&mine).write_all(&head[sent..]).unwrap();
            (&mine).write_all(&body).unwrap();
            let mut frame = [0u8; 8];
            (&mine).read_exact(&mut frame).unwrap();
            t.join().unwrap();
            (
                Status::decode(&frame).unwrap(),
                std::fs::read_to_string(&errors).unwrap(),
            )
        };
        for cwd in ["/work/link", "/work/link/", "/work/./link"] {
            let (st, err) = call(cwd);
            assert_eq!(st, Status::Exit(CWD_NOT_ON_HOST), "{cwd}: {err}");
            assert!(err.contains("symbolic link"), "{err}");
            assert!(
                !ran.exists(),
                "{cwd}: ran in {:?}",
                std::fs::read_to_string(&ran)
            );
        }
        let (st, err) = call("/work");
        assert_eq!(st, Status::Exit(0), "{err}");
        assert_eq!(
            std::fs::read_to_string(&ran).unwrap().trim_end(),
            bound.display().to_string()
        );
        // A directory that exists only in the image (under a bind or under none): where
        // `run` started.
        for cwd in ["/etc", "/work/not-on-the-host"] {
            let (st, err) = call(cwd);
            assert_eq!(st, Status::Exit(0), "{cwd}: {err}");
            assert_eq!(
                std::fs::read_to_string(&ran).unwrap().trim_end(),
                hostbin.display().to_string()
            );
        }
    }
}
