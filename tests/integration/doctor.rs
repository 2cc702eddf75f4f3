//! `lpmx-job doctor` on this host, as an ordinary user, and on a host where user namespaces
//! are denied (simulated by setting the per-namespace sysctl to 0 in a namespace of our own).

use std::process::Command;

use crate::support::{bin, json, run, stderr, stdout, Env};

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

#[test]
fn this_host_can_run_containers() {
    let env = Env::new();
    let out = run(env.cmd().args(["doctor", "--json"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "user namespaces work on these machines: {}",
        stdout(&out)
    );
    let r = json(&out);
    assert_eq!(r["can_run"], true);
    assert_ne!(r["uid"], 0);
    for name in [
        "identity",
        "user namespace",
        "mount namespace",
        "tmpfs",
        "overlayfs",
        "cache directory",
        "cache locking",
        "free space",
    ] {
        assert_eq!(
            check(&r, name)["verdict"],
            "ok",
            "{name}: {}",
            check(&r, name)
        );
    }
    assert_eq!(r["lock_mode"], "flock");
    assert!(check(&r, "cache directory")["detail"]
        .as_str()
        .unwrap()
        .contains(env.path("cache/lpmx").to_str().unwrap()));
    assert!(
        env.path("cache/lpmx").is_dir(),
        "doctor prepares the cache directory"
    );
    assert_eq!(
        std::fs::read_dir(env.path("cache/lpmx")).unwrap().count(),
        0,
        "the lock probe leaves nothing behind"
    );
    for name in ["kernel", "/dev/fuse", "batch system", "MPI launch"] {
        check(&r, name);
    }
}

#[test]
fn text_report_has_a_verdict_per_line() {
    let env = Env::new();
    let out = run(env.cmd().arg("doctor"));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("verdict: containers can run on this host"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("ok") && l.contains("user namespace")),
        "{text}"
    );
    let out = run(env.cmd().args(["-q", "doctor"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).is_empty(),
        "-q prints nothing when all is well"
    );
}

/// `unshare -U -r` gives us a namespace whose own user.max_user_namespaces we may set to 0:
/// inside it, exactly as on a host whose admin forbade them, no user namespace can be made.
fn in_denying_namespace(env: &Env, args: &[&str]) -> std::process::Output {
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces || exit 99; exec \"{}\" \"$@\"",
        bin().display()
    );
    let mut c = Command::new("unshare");
    c.args(["-U", "-r", "sh", "-c", &script, "sh"]).args(args);
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", env.path("home"))
        .env("XDG_CACHE_HOME", env.path("cache"))
        .env("XDG_CONFIG_HOME", env.path("config"))
        .env("LPMX_SITE_CONFIG", env.path("site/config.yaml"));
    run(&mut c)
}

#[test]
fn denied_user_namespaces_fail_with_the_setting_and_the_fix() {
    let env = Env::new();
    let out = in_denying_namespace(&env, &["doctor", "--json"]);
    assert_ne!(
        out.status.code(),
        Some(99),
        "could not set up the denying namespace: {}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(1), "containers cannot run there");
    let r = json(&out);
    assert_eq!(r["can_run"], false);
    let ns = check(&r, "user namespace");
    assert_eq!(ns["verdict"], "fail");
    assert!(
        ns["detail"]
            .as_str()
            .unwrap()
            .contains("user.max_user_namespaces is 0"),
        "{ns}"
    );
    assert!(
        ns["fix"]
            .as_str()
            .unwrap()
            .contains("sysctl -w user.max_user_namespaces="),
        "{ns}"
    );
    // Inside that namespace we are uid 0, but not root on the host, and doctor says so.
    assert_eq!(check(&r, "identity")["verdict"], "info");

    let out = in_denying_namespace(&env, &["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL") && text.contains("fix: ") && text.contains("cannot run"),
        "{text}"
    );
}

#[test]
fn unwritable_cache_fails_and_names_it() {
    let env = Env::new();
    let out = run(env
        .cmd()
        .args(["doctor", "--json", "--cache", "/proc/lpmx-cache"]));
    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    let c = check(&r, "cache directory");
    assert_eq!(c["verdict"], "fail");
    assert!(
        c["detail"].as_str().unwrap().contains("/proc/lpmx-cache"),
        "{c}"
    );
    assert!(
        c["detail"].as_str().unwrap().contains("flag --cache"),
        "says where the setting came from: {c}"
    );
}

#[test]
fn cache_filesystem_is_recognised() {
    let env = Env::new();
    let shm = tempfile::Builder::new()
        .prefix("lpmx-doctor.")
        .tempdir_in("/dev/shm")
        .expect("/dev/shm is tmpfs here");
    let out = run(env
        .cmd()
        .args(["doctor", "--json", "--cache"])
        .arg(shm.path().join("c")));
    assert_eq!(out.status.code(), Some(0));
    let r = json(&out);
    let detail = check(&r, "cache directory")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("on tmpfs") && detail.contains("memory of this node"),
        "{detail}"
    );
}

#[test]
fn batch_and_mpi_environment_are_detected() {
    let env = Env::new();
    let out = run(env
        .cmd()
        .args(["doctor", "--json"])
        .env("SLURM_JOB_ID", "4242")
        .env("SLURM_PROCID", "1")
        .env("PMIX_RANK", "1")
        .env("SLURM_MPI_TYPE", "pmix"));
    let r = json(&out);
    let b = check(&r, "batch system")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        b.contains("Slurm") && b.contains("SLURM_JOB_ID=4242"),
        "{b}"
    );
    let m = check(&r, "MPI launch")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(m.contains("PMIx") && m.contains("PMIX_RANK=1"), "{m}");

    let out = run(env
        .cmd()
        .args(["doctor", "--json"])
        .env("PBS_JOBID", "17.server")
        .env("PMI_RANK", "0")
        .env("PMI_SIZE", "2"));
    let r = json(&out);
    assert!(check(&r, "batch system")["detail"]
        .as_str()
        .unwrap()
        .contains("PBS"));
    assert!(check(&r, "MPI launch")["detail"]
        .as_str()
        .unwrap()
        .contains("PMI1"));
}

#[test]
fn lock_mode_says_where_it_comes_from() {
    let env = Env::new();
    let r = json(&run(env.cmd().args(["doctor", "--json"])));
    assert!(
        check(&r, "cache locking")["detail"]
            .as_str()
            .unwrap()
            .contains("probed here"),
        "{r}"
    );
    let out = run(env
        .cmd()
        .env("LPMX_LOCK_MODE", "lockdir")
        .args(["doctor", "--json"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "lock directories still let containers run"
    );
    let r = json(&out);
    assert_eq!(r["lock_mode"], "lockdir");
    let c = check(&r, "cache locking");
    assert_eq!(c["verdict"], "warn");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("forced by cache.lock_mode"),
        "{c}"
    );
    // Once a cache exists, its recorded mode is what every node uses.
    let out = run(env.cmd().args(["cache", "info", "--json"]));
    assert_eq!(json(&out)["lock_mode"], "flock");
    let r = json(&run(env.cmd().args(["doctor", "--json"])));
    assert!(
        check(&r, "cache locking")["detail"]
            .as_str()
            .unwrap()
            .contains("mode flock (recorded in the cache)"),
        "{r}"
    );
}
