//! The command line itself: verbs, exit statuses, completions and man pages.

use crate::support::{run, stderr, stdout, Env};

#[test]
fn help_lists_the_verbs() {
    let env = Env::new();
    let out = run(env.cmd().arg("--help"));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for verb in ["doctor", "config", "completions", "man"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(verb)),
            "{verb} missing from --help:\n{text}"
        );
    }
    assert!(text.contains("--cache"), "{text}");
}

#[test]
fn version_prints_the_crate_version() {
    let env = Env::new();
    let out = run(env.cmd().arg("--version"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out).trim(),
        format!("lpmx-job {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_flag_is_one_line_and_status_125() {
    let env = Env::new();
    let out = run(env.cmd().args(["doctor", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--no-such-flag") && err.contains("usage: lpmx-job doctor"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn unknown_verb_and_missing_verb_fail_with_125() {
    let env = Env::new();
    let out = run(env.cmd().arg("frobnicate"));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("frobnicate"));
    let out = run(&mut env.cmd());
    assert_eq!(out.status.code(), Some(125), "no verb is a usage error");
}

#[test]
fn quiet_and_verbose_conflict() {
    let env = Env::new();
    let out = run(env.cmd().args(["-q", "-v", "config", "show"]));
    assert_eq!(out.status.code(), Some(125));
    // Refused for the conflict itself, in one line, and nothing shown.
    let err = stderr(&out);
    assert!(
        err.contains("'--quiet' cannot be used with '--verbose"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn completions_for_each_shell() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef lpmx-job"),
        ("fish", "complete -c lpmx-job"),
    ] {
        let out = run(env.cmd().args(["completions", shell]));
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = stdout(&out);
        assert!(text.contains(marker), "{shell}: {marker} not in output");
        assert!(text.contains("doctor"), "{shell} completes verbs");
    }
    let out = run(env.cmd().args(["completions", "tcsh"]));
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn man_page_to_stdout_and_to_a_directory() {
    let env = Env::new();
    let out = run(env.cmd().arg("man"));
    assert_eq!(out.status.code(), Some(0));
    let page = stdout(&out);
    assert!(page.contains(".TH lpmx-job 1"), "roff header");
    assert!(page.contains("doctor"));
    let dir = env.path("man");
    let out = run(env.cmd().args(["man", "--dir"]).arg(&dir));
    assert_eq!(out.status.code(), Some(0));
    for name in ["lpmx-job.1", "lpmx-job-doctor.1", "lpmx-job-config.1"] {
        assert!(dir.join(name).is_file(), "{name} written");
    }
}

#[test]
fn man_into_an_unwritable_place_names_it() {
    let env = Env::new();
    let out = run(env.cmd().args(["man", "--dir", "/proc/lpmx-man"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("/proc/lpmx-man"), "{}", stderr(&out));
}

/// The completion scripts shipped in contrib/ are what the binary generates now. They are
/// compiled in, since the test user may not be able to read the source tree.
#[test]
fn shipped_completions_are_current() {
    let env = Env::new();
    let shipped = [
        (
            "bash",
            include_str!("../../contrib/completions/lpmx-job.bash"),
        ),
        (
            "zsh",
            include_str!("../../contrib/completions/lpmx-job.zsh"),
        ),
        (
            "fish",
            include_str!("../../contrib/completions/lpmx-job.fish"),
        ),
    ];
    for (shell, text) in shipped {
        let out = run(env.cmd().args(["completions", shell]));
        assert!(
            stdout(&out) == text,
            "contrib/completions/lpmx-job.{shell} is stale: run `lpmx-job completions {shell} > contrib/completions/lpmx-job.{shell}`"
        );
    }
}

/// A reader that is already gone (`lpmx-job man | head` once head has exited): every verb
/// that lists something ends quietly, killed by SIGPIPE as `cat` is, or with status 0;
/// never a panic, never "error: Broken pipe" with 125.
#[test]
fn a_closed_stdout_ends_a_listing_quietly() {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    for args in [
        &["completions", "bash"][..],
        &["man"][..],
        &["config", "show"][..],
        &["--help"][..],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two-element array it is given.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both fds were just made by pipe and are owned here alone.
        let (reader, writer) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        drop(reader);
        let out = env
            .cmd()
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}, stderr: {err}",
            out.status
        );
        assert_eq!(err, "", "{args:?} says nothing on stderr");
    }
}

/// A verb's missing argument is named in the one-line error (clap puts it on a line of its
/// own, which was lost).
#[test]
fn a_missing_argument_is_named() {
    let env = Env::new();
    for (verb, name) in [("run", "<IMAGE"), ("pull", "<IMAGE>")] {
        let out = run(env.cmd().arg(verb));
        assert_eq!(out.status.code(), Some(125));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("not provided: {name}")),
            "{verb}: {err}"
        );
    }
}
