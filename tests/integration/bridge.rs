//! The host command bridge (`run --host-cmd NAME`), for real, as an ordinary user, with the
//! busybox fixture of the plain-HTTP registry: host programs are small scripts in a host
//! directory put on the host's PATH only, so a call that works can only have gone through
//! the bridge.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{run, service, stderr, stdout, Env};

const HOST_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

struct Ctx {
    env: Env,
    reg: String,
    img: String,
    /// The host-only directory of bridged scripts.
    hostbin: PathBuf,
}

fn ctx() -> Option<Ctx> {
    let reg = service("LPMX_TEST_REGISTRY")?;
    let env = Env::new();
    let hostbin = env.path("hostbin");
    std::fs::create_dir(&hostbin).unwrap();
    let c = Ctx {
        img: format!("{reg}/lpmx/one"),
        env,
        reg,
        hostbin,
    };
    let out = run(c.cmd().args(["-q", "pull", &c.img]));
    assert_eq!(out.status.code(), Some(0), "pull: {}", stderr(&out));
    Some(c)
}

impl Ctx {
    fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("LPMX_INSECURE_REGISTRIES", &self.reg)
            .env("PATH", format!("{}:{HOST_PATH}", self.hostbin.display()));
        c
    }

    /// A host script `name` (POSIX sh) in the host-only directory.
    fn script(&self, name: &str, body: &str) {
        let p = self.hostbin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `lpmx-job run -w DIR --host-cmd NAME... IMG ARGS...`, in the test's directory.
    fn run(&self, names: &[&str], args: &[&str]) -> Output {
        run(&mut self.run_cmd(names, args))
    }

    fn run_cmd(&self, names: &[&str], args: &[&str]) -> Command {
        self.run_opts(&[], names, args)
    }

    /// As `run_cmd`, with more options of `run`.
    fn run_opts(&self, opts: &[&str], names: &[&str], args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["-q", "run", "-w"])
            .arg(self.env.dir.path())
            .args(opts);
        for n in names {
            c.args(["--host-cmd", n]);
        }
        c.arg(&self.img).args(args);
        c
    }
}

fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o)
}

fn mnt_ns() -> String {
    std::fs::read_link("/proc/self/ns/mnt")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_bridged_command_runs_on_the_host_with_the_callers_arguments_env_and_directory() {
    let Some(c) = ctx() else { return };
    c.script(
        "hostinfo",
        r#"echo "ns=$(readlink /proc/self/ns/mnt)"
for a in "$@"; do echo "arg=[$a]"; done
echo "pwd=$(pwd)"
echo "PATH=$PATH"
echo "FIXTURE=${FIXTURE-unset}"
echo "CALLER=${CALLER-unset}"
echo "SOCKET=${LPMX_BRIDGE_SOCKET-unset}""#,
    );
    let dir = c.env.dir.path().display().to_string();
    let mut cmd = c.run_cmd(
        &["hostinfo"],
        &[
            "sh",
            "-c",
            "echo inside=$(readlink /proc/self/ns/mnt) FIXTURE=$FIXTURE; \
             CALLER=set hostinfo 'a b' '' \"q'uote\"",
        ],
    );
    cmd.env("FIXTURE", "host");
    let text = ok(&run(&mut cmd));
    let host = mnt_ns();
    let (first, rest) = text.split_once('\n').unwrap();
    assert_ne!(
        first,
        format!("inside={host} FIXTURE=one"),
        "the caller is in its own mount namespace"
    );
    assert!(first.ends_with(" FIXTURE=one"), "{first}");
    assert_eq!(
        rest,
        format!(
            "ns={host}\narg=[a b]\narg=[]\narg=[q'uote]\npwd={dir}\nPATH={}:{HOST_PATH}\n\
             FIXTURE=host\nCALLER=set\nSOCKET=unset\n",
            c.hostbin.display(),
        )
    );

    // Under a --bind SRC:DST, the call runs in the matching directory under SRC.
    let data = c.env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let bind = format!("{}:/mnt/d", data.display());
    let out = run(&mut c.run_opts(
        &["-b", &bind],
        &["hostinfo"],
        &["sh", "-c", "cd /mnt/d/sub && hostinfo | grep pwd="],
    ));
    assert_eq!(ok(&out), format!("pwd={}\n", data.join("sub").display()));

    // A working directory that exists only in the image (`squeue` from `/` in an image whose
    // WorkingDir is `/`): the directory `run` was started from.
    let out = c.run(
        &["hostinfo"],
        &["sh", "-c", "cd /etc && hostinfo | grep pwd="],
    );
    assert_eq!(ok(&out), format!("pwd={}\n", c.env.dir.path().display()));
}

#[test]
fn every_kind_of_root_has_the_bridge() {
    let Some(c) = ctx() else { return };
    c.script("hostuid", "echo \"host uid $(id -u)\"");
    let uid = unsafe { libc::getuid() };
    let want = format!("host uid {uid}\n");
    let persist = c.env.path("persist");
    let persist = format!("--write={}", persist.display());
    for opts in [
        &[][..],
        &["--fakeroot"][..],
        &["--write"][..],
        &[&persist[..]][..],
        &[&persist[..]][..],
    ] {
        let out = run(&mut c.run_opts(opts, &["hostuid"], &["hostuid"]));
        assert_eq!(ok(&out), want, "{opts:?}");
    }
    // The bridge is never written into a --write=DIR.
    assert!(!c.env.path("persist/upper/.lpmx/bin").exists());
    // Where overlayfs is refused.
    let mut cmd = c.run_cmd(&["hostuid"], &["sh", "-c", "hostuid; ls /.lpmx/bin"]);
    cmd.env("LPMX_INTERNAL_NO_OVERLAY", "1");
    assert_eq!(ok(&run(&mut cmd)), format!("{want}hostuid\n"));
}

#[test]
fn exit_statuses_come_back_and_unknown_names_get_127() {
    let Some(c) = ctx() else { return };
    c.script("hostfail", "echo failing >&2; exit ${1:-3}");
    // As the container's own command, and from a shell inside.
    let out = c.run(&["hostfail"], &["hostfail"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stderr(&out), "failing\n");
    let out = c.run(
        &["hostfail"],
        &["sh", "-c", "hostfail 0; echo $?; hostfail 42; echo $?"],
    );
    assert_eq!(ok(&out), "0\n42\n");

    // A name that is not bridged, called through a link to the bridge: 127 and one line.
    let link = c.env.path("notallowed");
    let script = format!(
        "ln -s /.lpmx/bin/hostfail {l} && {l} x; echo $?",
        l = link.display()
    );
    let out = c.run(&["hostfail"], &["sh", "-c", &script]);
    assert_eq!(ok(&out), "127\n");
    let err = stderr(&out);
    assert!(
        err.contains("notallowed (host command): not a bridged host command (bridged: hostfail)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // Bridged but missing on the host: 127 and one line naming the host's PATH.
    let out = c.run(&["no-such-host-tool"], &["no-such-host-tool"]);
    assert_eq!(out.status.code(), Some(127));
    let err = stderr(&out);
    assert!(
        err.contains("no-such-host-tool (host command): command not found on the host"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // A bad name is refused before anything runs.
    let out = c.run(&["/bin/sh"], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("--host-cmd \"/bin/sh\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stdin_and_stdout_are_the_callers_own_files() {
    let Some(c) = ctx() else { return };
    // stdin piped into a bridged `cat` (the host's) arrives; its output is ours.
    let mut child = c
        .run_cmd(&["cat"], &["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"piped through\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "piped through\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));

    // Passed, not copied: the host program's stdout is the very pipe the caller writes to.
    c.script("fdof", "readlink /proc/self/fd/1");
    let text = ok(&c.run(&["fdof"], &["sh", "-c", "readlink /proc/self/fd/1; fdof"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("pipe:["), "{text}");
    assert_eq!(lines[0], lines[1], "the same pipe inside and on the host");

    // A closed stdin becomes /dev/null for the host program.
    c.script("stdinof", "readlink /proc/self/fd/0");
    let out = c.run(&["stdinof"], &["sh", "-c", "stdinof <&-"]);
    assert_eq!(ok(&out), "/dev/null\n");
}

#[test]
fn fifty_bridged_calls_at_once() {
    let Some(c) = ctx() else { return };
    // On the host, each call marks itself in flight, records how many were in flight with
    // it, and waits before leaving: served one at a time, every count would be 1.
    let flight = c.env.path("inflight");
    let seen = c.env.path("seen");
    std::fs::create_dir(&flight).unwrap();
    std::fs::create_dir(&seen).unwrap();
    c.script(
        "hostecho",
        &format!(
            "touch {f}/$1; ls {f} | wc -l > {s}/$1; sleep 0.3; rm {f}/$1; echo \"call $1\"",
            f = flight.display(),
            s = seen.display()
        ),
    );
    let script = "i=0; while [ $i -lt 50 ]; do \
                  (hostecho $i || echo FAIL $i) & i=$((i+1)); done; wait";
    let text = ok(&c.run(&["hostecho"], &["sh", "-c", script]));
    let mut got: Vec<&str> = text.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("call {i}")).collect();
    want.sort();
    assert_eq!(got, want);
    let most = std::fs::read_dir(&seen)
        .unwrap()
        .map(|e| {
            let t = std::fs::read_to_string(e.unwrap().path()).unwrap();
            t.trim().parse::<usize>().unwrap()
        })
        .max()
        .unwrap();
    assert!(most > 1, "the host served the calls one at a time");
    eprintln!("calls in flight together on the host, at most: {most}");
}

fn wait_for_file(p: &std::path::Path, what: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(t) = std::fs::read_to_string(p) {
            if t.ends_with('\n') {
                return t.trim().to_string();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} never came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gone(pid: i32) -> bool {
    // Gone, or a zombie nobody waits for any more.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_signal_to_the_caller_ends_the_host_process() {
    let Some(c) = ctx() else { return };
    let (caller_pid, host_pid) = (c.env.path("caller.pid"), c.env.path("host.pid"));
    c.script(
        "hostsleep",
        &format!("echo $$ > {}; exec sleep 30", host_pid.display()),
    );
    let script = format!("echo $$ > {}; exec hostsleep", caller_pid.display());
    let mut child = c
        .run_cmd(&["hostsleep"], &["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let caller: i32 = wait_for_file(&caller_pid, "the caller's pid")
        .parse()
        .unwrap();
    let host: i32 = wait_for_file(&host_pid, "the host process's pid")
        .parse()
        .unwrap();
    let start = Instant::now();
    unsafe { libc::kill(caller, libc::SIGTERM) };
    let status = child.wait().unwrap();
    // The caller died of the host process's SIGTERM; the supervisor says 128+15.
    assert_eq!(status.code(), Some(143), "{status:?}");
    while !gone(host) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "host process {host} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_supervisor_forwards_signals_and_cleans_up() {
    let Some(c) = ctx() else { return };
    c.script("hosttrue", "true");
    // The socket's directory goes in $TMPDIR: a private one, so nothing else's is counted.
    let tmpdir = c.env.path("t");
    std::fs::create_dir(&tmpdir).unwrap();
    let mut child = c
        .run_cmd(&["hosttrue"], &["sleep", "60"])
        .env("TMPDIR", &tmpdir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sup = child.id();
    // The supervisor stays itself; its child becomes `sleep`.
    let start = Instant::now();
    let sleeper = loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children")).unwrap_or_default();
        let found = kids.split_whitespace().find(|k| {
            std::fs::read(format!("/proc/{k}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        });
        if let Some(k) = found {
            break k.parse::<i32>().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no sleep under {sup}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let cmdline = std::fs::read(format!("/proc/{sup}/cmdline")).unwrap();
    assert!(!cmdline.starts_with(b"sleep\0"));
    let dirs = |pid: u32| -> Vec<String> {
        std::fs::read_dir(&tmpdir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("lpmx-bridge.{pid}.")))
            .collect()
    };
    let made = dirs(sup);
    assert_eq!(made.len(), 1, "{made:?}");
    let mode = std::fs::metadata(tmpdir.join(&made[0]))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    unsafe { libc::kill(sup as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert_eq!(status.signal(), None);
    assert!(gone(sleeper));
    assert_eq!(dirs(sup), Vec::<String>::new(), "socket directory removed");
}

/// The bridge serves its own user only (SO_PEERCRED): with the socket made reachable on
/// purpose, the second ordinary user connects but its call is refused and nothing runs,
/// while the same call made by the user runs.
#[test]
fn another_user_reaching_the_socket_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(c) = ctx() else { return };
    let Some(mut check) = crate::support::as_attacker("true") else {
        return;
    };
    assert!(
        check.status().unwrap().success(),
        "sudo to the attacker works"
    );
    let calls = c.env.path("calls");
    c.script("hostmark", &format!("id -u >> {}", calls.display()));
    let tmpdir = c.env.path("t");
    std::fs::create_dir(&tmpdir).unwrap();
    let mut task = c
        .run_cmd(&["hostmark"], &["sleep", "120"])
        .env("TMPDIR", &tmpdir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sock = PathBuf::new();
    crate::support::wait_until("the bridge's socket", Duration::from_secs(60), || {
        let found = std::fs::read_dir(&tmpdir)
            .ok()
            .and_then(|mut r| r.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("sock"))
            .filter(|p| p.exists());
        found.map(|p| sock = p).is_some()
    });
    // Opened up, as a careless umask or a shared TMPDIR might: only the server's check is left.
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(c.env.dir.path(), 0o711);
    mode(&tmpdir, 0o711);
    mode(sock.parent().unwrap(), 0o711);
    mode(&sock, 0o777);
    // A client: lpmx-job under the bridged name, told the socket.
    let client_dir = c.env.path("client");
    std::fs::create_dir(&client_dir).unwrap();
    mode(&client_dir, 0o755);
    let client = client_dir.join("hostmark");
    std::os::unix::fs::symlink(crate::support::bin(), &client).unwrap();
    let sock_env = format!("LPMX_BRIDGE_SOCKET={}", sock.display());

    let mine = run(Command::new("env")
        .arg("-i")
        .arg(format!("PATH={HOST_PATH}"))
        .arg(&sock_env)
        .arg(&client));
    assert_eq!(mine.status.code(), Some(0), "{}", stderr(&mine));
    let uid = unsafe { libc::getuid() };
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), format!("{uid}\n"));

    let py = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); print('connected')",
        sock.display().to_string()
    );
    let mut connect = crate::support::as_attacker("python3").unwrap();
    let reached = run(connect.args(["-c", &py]));
    let mut call = crate::support::as_attacker("env").unwrap();
    let theirs = run(call.arg(&sock_env).arg(&client));
    let _ = task.kill();
    let _ = task.wait();
    assert_eq!(
        stdout(&reached),
        "connected\n",
        "the attacker reaches the socket: {}",
        stderr(&reached)
    );
    assert_ne!(theirs.status.code(), Some(0), "the attacker's call ran");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        format!("{uid}\n"),
        "nothing ran for the attacker"
    );
}
