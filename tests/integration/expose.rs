//! Container tools on the host: `lpmx-job expose` wrappers, called as an ordinary user.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{run, service, stderr, stdout, Env};

#[test]
fn an_exposed_tool_runs_in_its_image_with_the_callers_args_dir_and_stdio() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let bin = env.path("wrappers");
    let expose = |cmd: &str, name: &str| {
        let out = run(env
            .cmd()
            .env("LPMX_INSECURE_REGISTRIES", &reg)
            .args([
                "expose",
                &format!("{reg}/lpmx/one"),
                cmd,
                "--as",
                name,
                "--dir",
            ])
            .arg(&bin));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    expose("echo", "bbecho");
    expose("/bin/cat", "bbcat");
    // A call, as a user would make it: the wrapper on PATH, arguments with spaces and quotes.
    let call = |name: &str, args: &[&str]| {
        let mut c = Command::new(bin.join(name));
        c.env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("HOME", env.path("home"))
            .env("XDG_CACHE_HOME", env.path("cache"))
            .env("XDG_CONFIG_HOME", env.path("config"))
            .env("LPMX_SITE_CONFIG", env.path("site/config.yaml"))
            .env("LPMX_INSECURE_REGISTRIES", &reg)
            .current_dir(env.dir.path())
            .args(args);
        c
    };
    // In the image: its Env (the caller's environment has no FIXTURE), its /bin (busybox
    // applets, not the host's).
    expose("env", "bbenv");
    expose("ls", "bbls");
    let out = run(&mut call("bbenv", &[]));
    assert!(
        stdout(&out).lines().any(|l| l == "FIXTURE=one"),
        "{}",
        stderr(&out)
    );
    if let Some(fixtures) = service("LPMX_TEST_FIXTURES") {
        let mut want: Vec<String> =
            std::fs::read_dir(std::path::Path::new(&fixtures).join("rootfs/one/bin"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        want.sort();
        let out = run(&mut call("bbls", &["-1", "/bin"]));
        assert_eq!(
            stdout(&out).lines().collect::<Vec<_>>(),
            want,
            "the image's /bin: {}",
            stderr(&out)
        );
    }
    let out = run(&mut call("bbecho", &["a b", "it's", "$HOME", "\"q\""]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "a b it's $HOME \"q\"\n");
    // The caller's directory: a relative path reads the host file.
    env.write("data.txt", "from the host\n");
    let out = run(&mut call("bbcat", &["data.txt"]));
    assert_eq!(stdout(&out), "from the host\n", "{}", stderr(&out));
    // stdin passes through.
    let mut child = call("bbcat", &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\n");
    // Twenty calls at once.
    let children: Vec<_> = (0..20)
        .map(|i| {
            call("bbecho", &[&format!("call {i}"), "x y"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("call {i} x y\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Listed, removed, and a user's own file is never touched.
    let out = run(env.cmd().args(["expose", "--list", "--dir"]).arg(&bin));
    let listed = stdout(&out);
    assert!(
        listed.contains("bbecho\t") && listed.contains("bbcat\t") && listed.contains("/bin/cat"),
        "{listed}"
    );
    std::fs::write(bin.join("mine"), "#!/bin/sh\necho mine\n").unwrap();
    let out = run(env
        .cmd()
        .args(["expose", "--remove", "mine", "--dir"])
        .arg(&bin));
    assert_eq!(out.status.code(), Some(125));
    assert!(bin.join("mine").exists());
    let out = run(env
        .cmd()
        .args([
            "expose",
            &format!("{reg}/lpmx/one"),
            "ls",
            "--as",
            "mine",
            "--dir",
        ])
        .arg(&bin));
    assert_eq!(
        out.status.code(),
        Some(125),
        "never overwrites a file it did not write"
    );
    let out = run(env
        .cmd()
        .args(["expose", "--remove", "bbecho", "--dir"])
        .arg(&bin));
    assert_eq!(out.status.code(), Some(0));
    assert!(!bin.join("bbecho").exists() && bin.join("bbcat").exists());
}
