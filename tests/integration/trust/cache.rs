//! A group cache attacked by a member: the test user (victim) and the attacker share a cache
//! through their common group. Each test performs an attack of issue 11 that worked on the
//! lpmx-job before it (D2, D4, D5, D12, D13, entries changed by another member, untrusted
//! entries used under `cache.trust: self`) and asserts that it now fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A cache directory both users reach: under the harness's shared directory, of the shared
/// group, setgid and group-writable, as a site would make one.
struct Shared {
    dir: tempfile::TempDir,
    reg: String,
    group: String,
}

impl Shared {
    fn new() -> Option<Shared> {
        let base = service("LPMX_TEST_SHARED")?;
        let reg = service("LPMX_TEST_REGISTRY")?;
        let group = group()?;
        attacker()?;
        let dir = tempfile::Builder::new()
            .prefix("trust-cache.")
            .tempdir_in(&base)
            .unwrap();
        let out = run(Command::new("chgrp").arg(&group).arg(dir.path()));
        assert!(out.status.success());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2770)).unwrap();
        Some(Shared { dir, reg, group })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn image(&self, name: &str) -> String {
        format!("{}/lpmx/{name}", self.reg)
    }

    /// The victim's lpmx-job on the group cache.
    fn victim(&self, env: &Env) -> Command {
        let mut c = env.cmd();
        c.env("LPMX_CACHE", self.root())
            .env("LPMX_CACHE_GROUP", &self.group)
            .env("LPMX_INSECURE_REGISTRIES", &self.reg);
        c
    }

    /// The attacker's lpmx-job on the same cache.
    fn attacker_lpmx(&self) -> Command {
        let mut c = as_attacker("env").unwrap();
        c.arg(format!("LPMX_CACHE={}", self.root().display()))
            .arg(format!("LPMX_CACHE_GROUP={}", self.group))
            .arg(format!("LPMX_INSECURE_REGISTRIES={}", self.reg))
            .arg("LPMX_SITE_CONFIG=/nonexistent")
            .arg(bin());
        c
    }

    /// A shell command run as the attacker in the cache directory.
    fn attacker_sh(&self, script: &str) -> std::process::Output {
        let mut c = as_attacker("sh").unwrap();
        c.args(["-c", &format!("cd '{}' && {script}", self.root().display())]);
        run(&mut c)
    }
}

/// The fixture's manifest and config digests (hex), as tests/run.sh built it.
fn fixture(name: &str) -> (String, String) {
    let dir = service("LPMX_TEST_FIXTURES").unwrap();
    let text = std::fs::read_to_string(Path::new(&dir).join("fixtures.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hex = |k: &str| {
        v[name][k]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    (hex("digest"), hex("config"))
}

/// Runs a command that must finish within `limit`: a hang (a FIFO opened for writing waits
/// for a reader forever) is a failure, not a blocked test run.
fn bounded(c: &mut Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
            let o = std::process::Output {
                status,
                stdout: out,
                stderr: err,
            };
            eprintln!(
                "$ {c:?}\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
                o.status.code(),
                stdout(&o),
                stderr(&o)
            );
            return o;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hung for more than {limit:?}: {c:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// D2: a member replaced `tmp-v1` with a symlink to the victim's home; the victim's next
/// command chowned it to the group and made it group-writable.
#[test]
fn a_symlinked_top_level_directory_is_refused_and_what_it_points_at_untouched() {
    let env = Env::new();
    let Some(s) = Shared::new() else {
        return;
    };
    let home = env.path("home");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = mode(&home);
    // Planted before the victim's first use.
    let out = s.attacker_sh(&format!("ln -s '{}' tmp-v1", home.display()));
    assert!(out.status.success(), "the attacker can plant it");
    let out = run(s.victim(&env).arg("images"));
    assert_eq!(mode(&home), before, "the victim's home is untouched");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("tmp-v1") && err.contains("symbolic link") && err.contains("lpmxattack"),
        "names the path, what it is and who owns it: {err}"
    );
    // Swapped in after the victim made the cache (the attack): the victim's
    // directories cannot be moved any more (sticky), and were they, they would be refused.
    let out = s.attacker_sh("rm tmp-v1");
    assert!(out.status.success());
    let out = run(s.victim(&env).arg("images"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let swap = s.attacker_sh(&format!(
        "mv tmp-v1 tmp-v1.old && ln -s '{}' tmp-v1",
        home.display()
    ));
    let out = run(s.victim(&env).arg("images"));
    assert_eq!(mode(&home), before, "the victim's home is untouched");
    assert!(
        !swap.status.success(),
        "the victim's tmp-v1 cannot be moved"
    );
    assert_eq!(out.status.code(), Some(0));
}

/// D4: predictable work-file names (HOST.PID.N) let a member plant symlinks that the
/// victim's pull wrote through, destroying the victim's private file.
#[test]
fn planted_symlinks_for_predictable_names_are_never_written_through() {
    let env = Env::new();
    let Some(s) = Shared::new() else {
        return;
    };
    // The cache's directories exist (as after any earlier use), so tmp-v1 can be planted in.
    let out = run(s.victim(&env).args(["cache", "info"]));
    assert_eq!(out.status.code(), Some(0));
    let private = env.write("home/private", "precious\n");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim().split('.').next().unwrap().to_string();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The next 3,000 PIDs (other users' processes take some), the first 8 names each: what
    // the old naming would use next.
    let script = format!(
        "for my $p ({} .. {}) {{ for my $n (0 .. 7) {{ symlink('{}', \"tmp-v1/{host}.$p.$n\") }} }}",
        last + 1,
        last + 3000,
        private.display()
    );
    let out = s.attacker_sh(&format!("perl -e '{}'", script.replace('\'', "'\\''")));
    assert!(out.status.success());
    let planted = std::fs::read_dir(s.root().join("tmp-v1")).unwrap().count();
    assert!(planted >= 24000, "{planted} symlinks planted");
    let out = run(s.victim(&env).args(["pull", &s.image("layers3")]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(s.victim(&env).args(["pull", &s.image("layers3")]));
    assert_eq!(out.status.code(), Some(0), "a warm pull too");
    assert_eq!(std::fs::read_to_string(&private).unwrap(), "precious\n");
    assert_eq!(mode(&private).0, 0o600);
}

/// D5: a FIFO in place of a config blob or of an image's `.used` stamp made `run` and
/// `cache verify` block forever.
#[test]
fn fifos_planted_in_the_cache_end_in_a_clear_error_not_a_hang() {
    let env = Env::new();
    let Some(s) = Shared::new() else {
        return;
    };
    let limit = Duration::from_secs(30);
    let (manifest, _) = fixture("layers3");
    let img = s.image("layers3");
    let out = run(s.victim(&env).args(["pull", &img]));
    assert_eq!(out.status.code(), Some(0));
    // A stamp not yet made is the attacker's to plant; old, so that a run stamps it.
    let out = s.attacker_sh(&format!(
        "mkfifo -m 666 images-v1/{manifest}.used && touch -h -d 2000-01-01 images-v1/{manifest}.used"
    ));
    assert!(out.status.success());
    let out = bounded(s.victim(&env).args(["run", &img, "true"]), limit);
    assert_eq!(out.status.code(), Some(0), "the run itself goes on");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{manifest}.used")) && err.contains("a FIFO"),
        "says why the stamp was not written: {err}"
    );
    let out = bounded(s.victim(&env).arg("images"), limit);
    assert_eq!(out.status.code(), Some(0));
    // The victim's config blob cannot be replaced now (sticky, read-only); were it, reading
    // it must still not hang.
    let (_, config) = fixture("layers3");
    let swap = s.attacker_sh(&format!(
        "mkfifo -m 666 blobs-v1/.f.$$ && mv -f blobs-v1/.f.$$ blobs-v1/{config}; s=$?; rm -f blobs-v1/.f.$$; exit $s"
    ));
    for args in [vec!["run", img.as_str(), "true"], vec!["cache", "verify"]] {
        bounded(s.victim(&env).args(&args), limit);
    }
    assert!(!swap.status.success(), "the blob cannot be replaced");
    assert!(
        std::fs::symlink_metadata(s.root().join("blobs-v1").join(&config))
            .unwrap()
            .is_file()
    );
    // ...so plant one for an image the victim has not pulled yet.
    let (one_manifest, one_config) = fixture("one");
    let out = s.attacker_sh(&format!("mkfifo -m 666 blobs-v1/{one_config}"));
    assert!(out.status.success());
    let one = s.image("one");
    for args in [
        vec!["run", one.as_str(), "true"],
        vec!["pull", one.as_str()],
    ] {
        let out = bounded(s.victim(&env).args(&args), limit);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&one_config) && err.contains("a FIFO") && err.contains("lpmxattack"),
            "{args:?}: names the path, the FIFO and its owner: {err}"
        );
    }
    let _ = one_manifest;
    let out = bounded(s.victim(&env).args(["cache", "verify"]), limit);
    assert!(
        stderr(&out).contains(&one_config) || stdout(&out).contains(&one_config),
        "verify reports the FIFO"
    );
}

/// What one member published, another cannot change: every way the attacker tries fails.
#[test]
fn another_member_cannot_modify_rename_or_remove_a_published_entry() {
    let env = Env::new();
    let Some(s) = Shared::new() else {
        return;
    };
    let (manifest, config) = fixture("layers3");
    let img = s.image("layers3");
    let out = run(s.victim(&env).args(["run", &img, "true"]));
    assert_eq!(out.status.code(), Some(0));
    let layer = fixture_layer("layers3");
    let attempts = [
        format!("chmod u+w,g+w layers-v1/{layer}"),
        format!("chmod g+w blobs-v1/{config}"),
        format!("echo evil > blobs-v1/{config}"),
        format!("echo evil > layers-v1/{layer}/root/evil"),
        format!("echo evil >> layers-v1/{layer}/layer.json"),
        format!("echo evil > trees-v1/{manifest}/root/evil"),
        format!("mv layers-v1/{layer} layers-v1/gone"),
        format!("mv trees-v1/{manifest} trees-v1/gone"),
        format!("mv blobs-v1/{config} blobs-v1/gone"),
        format!("mv images-v1/{manifest}.json images-v1/gone.json"),
        format!("rm -rf layers-v1/{layer}"),
        format!("rm -f blobs-v1/{config}"),
        format!("rm -f images-v1/{manifest}.json"),
        "rm refs-v1/*.json".to_string(),
        "mv layers-v1 gone".to_string(),
        "mv tmp-v1 gone".to_string(),
    ];
    for a in &attempts {
        let out = s.attacker_sh(a);
        assert!(!out.status.success(), "the attacker could: {a}");
    }
    // The attacker's own lpmx-job cannot remove it either, and says whose it is.
    let out = run(s.attacker_lpmx().args(["rmi", &img]));
    assert!(
        stderr(&out).contains("lpmxtest"),
        "rmi names the owner: {}",
        stderr(&out)
    );
    // Older than 0 days: anything not used in this very second.
    std::thread::sleep(Duration::from_secs(2));
    let out = run(s
        .attacker_lpmx()
        .args(["cache", "prune", "--older-than", "0"]));
    assert_eq!(out.status.code(), Some(0), "prune reports, does not fail");
    assert!(stderr(&out).contains("lpmxtest"), "{}", stderr(&out));
    // All still there and intact.
    let out = run(s.victim(&env).args(["cache", "verify"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = run(s.victim(&env).args(["run", &img, "true"]));
    assert_eq!(out.status.code(), Some(0));
    // And the owner can remove its own, saying whose they were.
    let out = run(s.victim(&env).args(["rmi", &img]));
    assert_eq!(out.status.code(), Some(0));
    let out = run(s.victim(&env).args(["cache", "prune"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("published by lpmxtest"),
        "{}",
        stderr(&out)
    );
    assert!(!s.root().join("layers-v1").join(&layer).exists());
}

fn fixture_layer(name: &str) -> String {
    let dir = service("LPMX_TEST_FIXTURES").unwrap();
    let text = std::fs::read_to_string(Path::new(&dir).join("fixtures.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[name]["layers"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string()
}

/// `cache.trust: self` does not use what another member published: the attacker pulls first
/// and doctors its own published entries (it owns them), and the victim runs the image.
#[test]
fn trust_self_pulls_again_rather_than_use_another_members_entries() {
    let env = Env::new();
    let Some(s) = Shared::new() else {
        return;
    };
    let (manifest, _) = fixture("one");
    let layer = fixture_layer("one");
    let img = s.image("one");
    let out = run(s.attacker_lpmx().args(["run", &img, "true"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = s.attacker_sh(&format!(
        "for d in layers-v1/{layer} trees-v1/{manifest}; do chmod u+w $d $d/root && echo pwned > $d/root/PWNED; done"
    ));
    assert!(out.status.success());
    // Trusting the group, the victim gets the attacker's content...
    let out = run(s.victim(&env).args(["run", &img, "cat", "/PWNED"]));
    assert_eq!(stdout(&out), "pwned\n", "the group is trusted");
    // ...under `self`, the victim's own pull of it.
    let me = unsafe { libc::getuid() };
    let out = run(s.victim(&env).env("LPMX_CACHE_TRUST", "self").args([
        "run",
        &img,
        "sh",
        "-c",
        "test ! -e /PWNED && echo clean",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "clean\n");
    let own: PathBuf = s.root().join(format!("users-v1/{me}"));
    assert!(own
        .join("layers-v1")
        .join(&layer)
        .join("layer.json")
        .is_file());
    assert_eq!(mode(&own).1, me);
    let out = run(s
        .victim(&env)
        .env("LPMX_CACHE_TRUST", "self")
        .args(["config", "show"]));
    assert!(stdout(&out).contains("cache.trust") && stdout(&out).contains("self"));
}

/// D12: `cache.group` set umask 0002 for the whole process, so the command in the container
/// created group-writable files.
#[test]
fn the_command_keeps_the_callers_umask_with_a_group_cache() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let Some(s) = Shared::new() else {
        return;
    };
    let img = s.image("one");
    for (umask, want_mode) in [(0o077, 0o600), (0o022, 0o644)] {
        let mut c = s.victim(&env);
        // SAFETY: umask in the child before exec.
        unsafe {
            c.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        let out = run(c.args([
            "run",
            &img,
            "sh",
            "-c",
            "umask; rm -f $HOME/made; touch $HOME/made",
        ]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), format!("{umask:04o}"));
        assert_eq!(mode(&env.path("home/made")).0, want_mode);
    }
}

/// D13: with a group cache, the default binds ($HOME, /etc/hosts, /etc/resolv.conf)
/// vanished: overlayfs could not copy up directories of a gid not mapped in the namespace.
#[test]
fn default_binds_are_there_with_a_group_cache() {
    let env = Env::new();
    let Some(s) = Shared::new() else {
        return;
    };
    env.write("home/marker", "here\n");
    // `one`'s tree is built and published by another member, `layers3`'s by the victim.
    let out = run(s.attacker_lpmx().args(["run", &s.image("one"), "true"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for img in [s.image("one"), s.image("layers3")] {
        let out = run(s.victim(&env).args(["run", &img, "cat", "/etc/hosts"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), std::fs::read_to_string("/etc/hosts").unwrap());
        let out = run(s
            .victim(&env)
            .args(["run", &img, "sh", "-c", "cat $HOME/marker"]));
        assert_eq!(stdout(&out), "here\n", "{}", stderr(&out));
        if Path::new("/etc/resolv.conf").exists() {
            let out = run(s
                .victim(&env)
                .args(["run", &img, "cat", "/etc/resolv.conf"]));
            assert_eq!(
                stdout(&out),
                std::fs::read_to_string("/etc/resolv.conf").unwrap()
            );
        }
    }
}
