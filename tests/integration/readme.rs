//! The README's main job, `contrib/examples/hello.sh`, run as an ordinary user with the
//! lpmx-job under test: a tiny image made locally, run rootless, no registry involved.

use std::process::Command;

use crate::support::{bin, run, stderr, stdout, Env};

#[test]
fn the_readme_main_job_runs_a_container() {
    let env = Env::new();
    let script = env.write("hello.sh", include_str!("../../contrib/examples/hello.sh"));
    let out = run(Command::new("bash")
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", env.path("home"))
        .env("LPMX_SITE_CONFIG", env.path("site/config.yaml"))
        .env("LPMX_JOB", bin()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("hello from a rootless container"), "{text}");
    let uid = unsafe { libc::getuid() };
    assert!(
        text.contains(&format!("uid={uid}(")),
        "runs as the user: {text}"
    );
    // The image stays for the commands it suggests, and the first of them runs.
    let layout = env.path("home/lpmx-hello/layout");
    assert!(
        layout.join("index.json").is_file(),
        "kept: {}",
        layout.display()
    );
    assert!(text.contains("Try next:"), "{text}");
    // It runs in the image: its /bin holds busybox and the applets hello.sh linked, not the
    // host's /bin.
    let out = run(env.cmd().args([
        "run",
        &format!("oci:{}:hello", layout.display()),
        "sh",
        "-c",
        "echo $0 in $(pwd); ls /bin",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let bin: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        bin,
        ["busybox", "cat", "echo", "env", "id", "ls", "sh", "true", "uname"],
        "{text}"
    );
}
