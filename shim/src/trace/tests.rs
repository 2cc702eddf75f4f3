//! Real processes under the tracer, in a lower tree made of a static busybox.

use std::ffi::CString;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::{filter, nr, run};
use crate::{Bind, Layout};

fn required() -> bool {
    std::env::var_os("LPMX_SHIM_TESTS_REQUIRED").is_some_and(|v| v == "1")
}

fn busybox() -> Option<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if let Ok(out) = std::process::Command::new("file").arg("-L").arg(p).output() {
            if String::from_utf8_lossy(&out.stdout).contains("statically linked") {
                return Some(PathBuf::from(p));
            }
        }
        if Path::new(p).exists() && std::process::Command::new("file").arg("--version").output().is_err() {
            return Some(PathBuf::from(p));
        }
    }
    assert!(!required(), "a static busybox is required (apt-get install busybox-static)");
    None
}

struct Tree {
    _tmp: tempfile::TempDir,
    layout: Layout,
    root: PathBuf,
}

fn tree(upper: bool) -> Option<Tree> {
    let bb = busybox()?;
    let _w = writing();
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    for d in ["bin", "etc", "proc", "dev", "tmp", "data", "usr/bin"] {
        std::fs::create_dir_all(lower.join(d)).unwrap();
    }
    std::fs::copy(&bb, lower.join("bin/busybox")).unwrap();
    for l in ["sh", "cat", "ls", "pwd", "readlink", "id", "touch", "rm", "mkdir", "echo", "true", "kill", "sleep"] {
        std::os::unix::fs::symlink("busybox", lower.join("bin").join(l)).unwrap();
    }
    std::fs::write(lower.join("etc/x"), "in the lower\n").unwrap();
    std::os::unix::fs::symlink("/etc/x", lower.join("etc/abs")).unwrap();
    std::fs::write(lower.join("bin/script"), "#!/bin/sh\necho script \"$0\" \"$1\"\n").unwrap();
    chmod(&lower.join("bin/script"), 0o755);
    let bound = tmp.path().join("bound");
    std::fs::create_dir_all(&bound).unwrap();
    std::fs::write(bound.join("b"), "bound file\n").unwrap();
    let private = tmp.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    let up = tmp.path().join("upper");
    if upper {
        std::fs::create_dir_all(&up).unwrap();
    }
    // The tests run as root and as an ordinary user: everything readable by both.
    chmod_tree(tmp.path());
    let bind = |g: &str, h: &Path| Bind { guest: g.into(), host: h.to_path_buf(), ro: false };
    let layout = Layout {
        lower: lower.clone(),
        upper: upper.then_some(up),
        binds: vec![bind("/proc", Path::new("/proc")), bind("/dev", Path::new("/dev")), bind("/data", &bound)],
        private,
        workdir: "/".into(),
        fakeroot: false,
    };
    Some(Tree { _tmp: tmp, layout, root: lower })
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chmod_tree(p: &Path) {
    let md = std::fs::symlink_metadata(p).unwrap();
    if md.is_symlink() {
        return;
    }
    if md.is_dir() {
        chmod(p, 0o777);
        for e in std::fs::read_dir(p).unwrap() {
            chmod_tree(&e.unwrap().path());
        }
    }
}

/// Executables are written under the write lock, runs fork under the read lock: a child
/// forked by another test's thread while a copy is open for writing would hold the
/// descriptor until it execs, and an exec of the copy meanwhile fails ETXTBSY.
static FILES: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn writing() -> std::sync::RwLockWriteGuard<'static, ()> {
    FILES.write().unwrap_or_else(|e| e.into_inner())
}

/// Forwarded signals go to every run in progress: the test that sends one runs alone.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs argv in the container; returns (status, stdout).
fn run_cmd(layout: &Layout, argv: &[&str]) -> (u8, String) {
    let _shared = ALONE.read().unwrap_or_else(|e| e.into_inner());
    run_cmd_unlocked(layout, argv)
}

fn run_cmd_unlocked(layout: &Layout, argv: &[&str]) -> (u8, String) {
    let _files = FILES.read().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::NamedTempFile::new().unwrap();
    let fd = out.as_file().as_raw_fd();
    let args: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let wd = CString::new(layout.workdir.as_os_str().as_encoded_bytes()).unwrap();
    let status = run(layout, || {
        // SAFETY: async-signal-safe calls on prepared strings, in the forked child.
        unsafe {
            libc::dup2(fd, 1);
            if libc::chdir(wd.as_ptr()) != 0 {
                return 126;
            }
            libc::execv(ptrs[0], ptrs.as_ptr());
        }
        127
    })
    .unwrap();
    (status, std::fs::read_to_string(out.path()).unwrap())
}

macro_rules! setup {
    ($upper:expr) => {
        match tree($upper) {
            Some(t) => t,
            None => return,
        }
    };
}

#[test]
fn filter_traces_paths_and_allows_the_rest() {
    let p = filter::program(true);
    let (trace, allow, errno) = filter::ACTIONS;
    for &n in &filter::traced(true) {
        assert_eq!(filter::eval(&p, 0xc000_003e, n), trace, "{}", nr::name(n as u64));
    }
    for n in [0u32, 1, 3, 9, 39, 60, 231, 500] {
        assert_eq!(filter::eval(&p, 0xc000_003e, n), allow, "{n}");
    }
    assert_eq!(filter::eval(&p, 0xc000_003e, nr::GETUID), errno);
    assert_eq!(filter::eval(&p, 0xc000_003e, nr::CHROOT), errno | libc::EPERM as u32);
    assert_eq!(filter::eval(&filter::program(false), 0xc000_003e, nr::GETUID), allow);
    assert_eq!(filter::eval(&p, 0x4000_0003, 0), 0x8000_0000);
}

#[test]
fn cat_sees_the_lower() {
    let t = setup!(false);
    let (st, out) = run_cmd(&t.layout, &["/bin/cat", "/etc/x"]);
    assert_eq!((st, out.as_str()), (0, "in the lower\n"));
    let (st, out) = run_cmd(&t.layout, &["/bin/cat", "/etc/abs"]);
    assert_eq!((st, out.as_str()), (0, "in the lower\n"));
}

#[test]
fn ls_lists_the_lower_and_binds() {
    let t = setup!(false);
    let (st, out) = run_cmd(&t.layout, &["/bin/ls", "/"]);
    assert_eq!(st, 0);
    for name in ["bin", "etc", "data", "proc"] {
        assert!(out.lines().any(|l| l == name), "{name} in {out:?}");
    }
    let (st, out) = run_cmd(&t.layout, &["/bin/cat", "/data/b"]);
    assert_eq!((st, out.as_str()), (0, "bound file\n"));
}

#[test]
fn cwd_and_proc_self_exe_are_guest_paths() {
    let t = setup!(false);
    let (st, out) = run_cmd(&t.layout, &["/bin/sh", "-c", "cd /; cd ..; pwd; cd /etc; /bin/pwd; readlink /proc/self/exe"]);
    assert_eq!((st, out.as_str()), (0, "/\n/etc\n/bin/busybox\n"));
}

#[test]
fn scripts_run_through_their_interpreter() {
    let t = setup!(false);
    let (st, out) = run_cmd(&t.layout, &["/bin/sh", "-c", "script one; /bin/script two"]);
    assert_eq!((st, out.as_str()), (0, "script /bin/script one\nscript /bin/script two\n"));
    let _ = &t.root;
}

#[test]
fn exit_codes_and_signals_propagate() {
    let t = setup!(false);
    assert_eq!(run_cmd(&t.layout, &["/bin/sh", "-c", "exit 7"]).0, 7);
    assert_eq!(run_cmd(&t.layout, &["/bin/sh", "-c", "kill -9 $$"]).0, 128 + 9);
    assert_eq!(run_cmd(&t.layout, &["/bin/nonexistent"]).0, 127);
}

#[test]
fn fork_chains_and_background_children_are_waited_for() {
    let t = setup!(false);
    let (st, out) = run_cmd(&t.layout, &["/bin/sh", "-c", "(sleep 0.2; cat /etc/x) & sh -c 'sh -c \"cat /data/b\"'"]);
    assert_eq!(st, 0);
    assert_eq!(out, "bound file\nin the lower\n");
}

#[test]
fn fakeroot_ids_are_root() {
    let mut t = setup!(false);
    t.layout.fakeroot = true;
    let (st, out) = run_cmd(&t.layout, &["/bin/id", "-u"]);
    assert_eq!((st, out.as_str()), (0, "0\n"));
    let (st, out) = run_cmd(&t.layout, &["/bin/sh", "-c", "ls -ln /etc/x | (read m l u g r; echo $u $g)"]);
    assert_eq!((st, out.as_str()), (0, "0 0\n"));
}

#[test]
fn writes_go_where_the_view_says() {
    let t = setup!(true);
    let (st, out) = run_cmd(
        &t.layout,
        &["/bin/sh", "-c", "mkdir /new && echo hi > /new/f && touch /etc/t && cat /new/f && rm /etc/t && ls /etc"],
    );
    assert_eq!(st, 0, "{out}");
    assert_eq!(out, "hi\nabs\nx\n");
    let up = t.layout.upper.as_ref().unwrap();
    assert_eq!(std::fs::read_to_string(up.join("new/f")).unwrap(), "hi\n");
    assert!(!t.root.join("new").exists() && !t.root.join("etc/t").exists());
}

#[test]
fn sigterm_to_the_tracer_reaches_the_child() {
    let t = setup!(false);
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        // SAFETY: signals this process; the forwarding handler is installed by run.
        unsafe { libc::kill(me, libc::SIGTERM) };
    });
    let (st, _) = run_cmd_unlocked(&t.layout, &["/bin/sleep", "5"]);
    killer.join().unwrap();
    assert_eq!(st, 128 + libc::SIGTERM as u8);
}

const PROG: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
static void *worker(void *a) {
    struct stat st;
    for (int i = 0; i < 200; i++)
        if (stat("/etc/x", &st) != 0) { perror("stat"); exit(3); }
    return a;
}
int main(int argc, char **argv) {
    char exe[4096] = {0};
    if (readlink("/proc/self/exe", exe, sizeof exe - 1) < 0) return 4;
    printf("%s %s %d\n", argv[0], exe, argc);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, worker, 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) { execl("/bin/cat", "cat", "/etc/x", (char *)0); _exit(5); }
    int st; waitpid(p, &st, 0);
    return WEXITSTATUS(st);
}
"#;

/// Adds a dynamic program (/usr/bin/prog) with its libraries to the tree; false without gcc.
fn add_dynamic(t: &Tree) -> bool {
    let src = t.layout.private.join("prog.c");
    std::fs::write(&src, PROG).unwrap();
    let bin = t.root.join("usr/bin/prog");
    let ok = std::process::Command::new("gcc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!required(), "gcc is required");
        return false;
    }
    let ldd = std::process::Command::new("ldd").arg(&bin).output().unwrap();
    let _w = writing();
    for l in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = l.split_whitespace().find(|w| w.starts_with('/'));
        if let Some(lib) = lib {
            let dst = t.root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dst).unwrap();
        }
    }
    chmod_tree(&t.root);
    true
}

#[test]
fn dynamic_threaded_program_runs_through_the_image_loader() {
    let t = setup!(false);
    if !add_dynamic(&t) {
        return;
    }
    let (st, out) = run_cmd(&t.layout, &["/usr/bin/prog", "a"]);
    assert_eq!(st, 0, "{out}");
    assert_eq!(out, "/usr/bin/prog /usr/bin/prog 2\nin the lower\n");
    let (st, out) = run_cmd(&t.layout, &["/bin/sh", "-c", "cd /usr && bin/prog"]);
    assert_eq!((st, out.as_str()), (0, "bin/prog /usr/bin/prog 1\nin the lower\n"));
}

const BENCH: &str = r#"
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
    const char *p = argc > 1 ? argv[1] : "/etc/x";
    int n = 20000; struct stat st; double t0 = now();
    for (int i = 0; i < n; i++) getppid();
    double t1 = now();
    for (int i = 0; i < n; i++) stat(p, &st);
    double t2 = now();
    printf("getppid %.0f ns, stat %.0f ns\n", (t1 - t0) / n, (t2 - t1) / n);
    return 0;
}
"#;

/// `cargo test -p lpmx-shim trace::tests::bench -- --ignored --nocapture`: per-call costs
/// natively and traced, and the time of `true`.
#[test]
#[ignore]
fn bench() {
    let t = setup!(false);
    let src = t.layout.private.join("bench.c");
    std::fs::write(&src, BENCH).unwrap();
    let bin = t.root.join("usr/bin/bench");
    assert!(std::process::Command::new("gcc").args(["-O2", "-static", "-o"]).arg(&bin).arg(&src).status().unwrap().success());
    chmod_tree(&t.root);
    let native = std::process::Command::new(&bin).arg(t.root.join("etc/x")).output().unwrap();
    println!("native: {}", String::from_utf8_lossy(&native.stdout).trim());
    // /etc/x is rewritten (two stops), /dev/null passes unchanged through a bind (one).
    for arg in ["/etc/x", "/dev/null"] {
        let (_, out) = run_cmd(&t.layout, &["/usr/bin/bench", arg]);
        println!("traced ({arg}): {}", out.trim());
    }
    for argv in [&["/bin/true"][..], &["/bin/sh", "-c", "true"]] {
        let n = 50;
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(run_cmd(&t.layout, argv).0, 0);
        }
        println!("{argv:?} traced: {:?} each", t0.elapsed() / n);
    }
    let t0 = std::time::Instant::now();
    for _ in 0..50 {
        std::process::Command::new(t.root.join("bin/busybox")).arg("true").status().unwrap();
    }
    println!("busybox true native: {:?} each", t0.elapsed() / 50);
}

#[test]
fn stopped_processes_stay_stopped_until_continued() {
    let t = setup!(false);
    let (st, out) = run_cmd(
        &t.layout,
        &["/bin/sh", "-c", "p=$$; (sleep 0.3; echo cont; kill -CONT $p) & kill -STOP $p; echo resumed; wait"],
    );
    assert_eq!((st, out.as_str()), (0, "cont\nresumed\n"));
}

#[test]
fn chroot_is_refused() {
    let t = setup!(true);
    let (st, out) = run_cmd(
        &t.layout,
        &["/bin/sh", "-c", "chroot / /bin/true 2>/dev/null || echo refused"],
    );
    assert_eq!(st, 0, "{out}");
    assert_eq!(out, "refused\n");
}

const SOCK: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sockaddr_un a = {0};
    a.sun_family = AF_UNIX;
    strcpy(a.sun_path, argv[1]);
    int s = socket(AF_UNIX, SOCK_STREAM, 0), c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(s, (void *)&a, sizeof a) || listen(s, 1)) { perror("bind"); return 1; }
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
    puts("connected");
    return 0;
}
"#;

#[test]
fn unix_sockets_bind_and_connect_in_the_guest() {
    let mut t = setup!(true);
    let src = t.layout.private.join("sock.c");
    std::fs::write(&src, SOCK).unwrap();
    let bin = t.root.join("usr/bin/sock");
    let ok = std::process::Command::new("gcc").args(["-static", "-o"]).arg(&bin).arg(&src).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(!required(), "gcc (with static glibc) is required");
        return;
    }
    chmod_tree(&t.root);
    let (st, out) = run_cmd(&t.layout, &["/usr/bin/sock", "/tmp/s"]);
    assert_eq!((st, out.as_str()), (0, "connected\n"));
    let up = t.layout.upper.clone().unwrap();
    assert!(up.join("tmp/s").exists() && !t.root.join("tmp/s").exists());
    // A host path longer than sun_path: reached through a short link in Layout::private.
    let deep = up.join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    chmod_tree(&up);
    t.layout.binds.push(Bind { guest: "/deep".into(), host: deep.clone(), ro: false });
    let (st, out) = run_cmd(&t.layout, &["/usr/bin/sock", "/deep/s"]);
    assert_eq!((st, out.as_str()), (0, "connected\n"));
    assert!(deep.join("s").exists());
}

const SPAWN: &str = r#"
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
static void *execer(void *a) {
    execl("/bin/cat", "cat", "/etc/x", (char *)0);
    return a;
}
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "thread") == 0) {
        pthread_t t;
        pthread_create(&t, 0, execer, 0);
        for (;;) pause();
    }
    pid_t p;
    char *args[] = {"cat", "/data/b", 0};
    if (posix_spawn(&p, "/bin/cat", 0, 0, args, environ)) return 2;
    int st;
    waitpid(p, &st, 0);
    return WEXITSTATUS(st);
}
"#;

#[test]
fn posix_spawn_and_exec_from_a_thread() {
    let t = setup!(false);
    if !add_dynamic(&t) {
        return;
    }
    let src = t.layout.private.join("spawn.c");
    std::fs::write(&src, SPAWN).unwrap();
    let bin = t.root.join("usr/bin/spawn");
    assert!(std::process::Command::new("gcc").args(["-pthread", "-o"]).arg(&bin).arg(&src).status().unwrap().success());
    chmod_tree(&t.root);
    let (st, out) = run_cmd(&t.layout, &["/usr/bin/spawn"]);
    assert_eq!((st, out.as_str()), (0, "bound file\n"));
    let (st, out) = run_cmd(&t.layout, &["/usr/bin/spawn", "thread"]);
    assert_eq!((st, out.as_str()), (0, "in the lower\n"));
}

#[test]
fn without_room_on_the_stack_a_mapped_area_is_used() {
    let t = setup!(false);
    super::calls::NO_STACK.with(|c| c.set(true));
    let (st, out) = run_cmd(&t.layout, &["/bin/sh", "-c", "cat /etc/x; cd /etc && cat x; (cat /data/b)"]);
    super::calls::NO_STACK.with(|c| c.set(false));
    assert_eq!((st, out.as_str()), (0, "in the lower\nin the lower\nbound file\n"));
}

#[test]
fn proc_links_and_descriptor_relative_paths_are_guest_paths() {
    let t = setup!(false);
    let (st, out) = run_cmd(
        &t.layout,
        &["/bin/sh", "-c", "cd /etc; readlink /proc/self/cwd; readlink /proc/self/fd/0 < x; readlink /proc/$$/root; ls -R /data"],
    );
    assert_eq!((st, out.as_str()), (0, "/etc\n/etc/x\n/\n/data:\nb\n"));
}

/// The view's share of a traced call (`-- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_view_resolve() {
    let t = setup!(false);
    let mut v = crate::view::View::new(t.layout.clone());
    let base = crate::view::Base { host_dir: Path::new("/"), tid: std::process::id() as i32 };
    let n = 20000;
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        let _ = v.resolve(&base, b"/etc/x", true, crate::view::Op::Read);
    }
    println!("resolve /etc/x: {:?}", t0.elapsed() / n);
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        let _ = v.resolve(&base, b"/dev/null", true, crate::view::Op::Read);
    }
    println!("resolve /dev/null: {:?}", t0.elapsed() / n);
}
