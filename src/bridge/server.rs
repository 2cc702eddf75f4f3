//! The host end of a call: one thread per connection, in the supervisor.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::fdpass::{peer_uid, pidfd_open, poll_in, recv_with_fds};
use super::{find_on_path, host_cwd, host_env, parse_signal_frame, Request, Status};
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
    /// Our uid: the only one served.
    pub uid: u32,
}

/// A call's host program, working directory and environment.
type Launch = (PathBuf, PathBuf, Vec<(OsString, OsString)>);

/// Why a call ended before its host program ran: a status and one line for the caller.
struct Refusal(u8, String);

impl Server {
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
        let (path, cwd, env) = match self.check(&req, &name) {
            Ok(t) => t,
            Err(Refusal(code, why)) => {
                let _ = writeln!(err, "{}", self.line(&name, &why));
                return send(&conn, Status::Exit(code));
            }
        };
        let mut cmd = Command::new(&path);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
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
            .current_dir(&cwd)
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
            .unwrap_or_else(|| crate::environ::DEFAULT_PATH.into());
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
        let cwd = host_cwd(&self.binds, &inside)
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                Refusal(
                    CWD_NOT_ON_HOST,
                    format!(
                        "the working directory {} exists only in the container, not on the host \
                         {}; cd to a directory bound from the host (your home, the job's \
                         directory, /tmp, or a --bind) first",
                        if req.cwd.is_empty() {
                            "(unknown)".into()
                        } else {
                            inside.display().to_string()
                        },
                        host()
                    ),
                )
            })?;
        let env = host_env(&self.host_env, &self.container_env, &req.env);
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
