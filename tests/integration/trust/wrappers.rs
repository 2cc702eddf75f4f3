//! Wrappers and the bridge, attacked (issue 11, D6, D7, D9): `expose` into a directory the
//! attacker can write, values that would end a comment line of the wrapper, and a caller
//! inside the container that sets what makes the host's loader or shells run code. The
//! bridge's raw-client working directory (D9) is tried at the server's level, in
//! src/container/bridge/server.rs, which can send what no real client sends.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const SECRET: &str = "the victim's private file\n";

/// The fixture image through its OCI layout: no registry needed.
fn fixture_image() -> Option<String> {
    let f = service("LPMX_TEST_FIXTURES")?;
    Some(format!("oci:{f}/oci:one"))
}

/// A directory of this test the attacker can reach (the test's own is 0700): the test's
/// directory opened to traversal, and a 0600 file of the victim's in it.
fn victim_with_secret(env: &Env) -> PathBuf {
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let secret = env.write("home/secret", SECRET);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

fn secret_intact(secret: &Path) {
    let m = secret.symlink_metadata().unwrap();
    assert!(m.is_file(), "{} is no longer a file", secret.display());
    assert_eq!(
        std::fs::read_to_string(secret).unwrap(),
        SECRET,
        "written through"
    );
    assert_eq!(
        m.mode() & 0o7777,
        0o600,
        "re-moded through a planted symlink"
    );
}

/// A wrapper directory shared with the group: the victim's, group-writable, setgid
/// (`sticky`: also sticky).
fn shared_dir(env: &Env, name: &str, sticky: bool) -> PathBuf {
    let d = env.path(name);
    std::fs::create_dir(&d).unwrap();
    let out = run(Command::new("chgrp").arg(group().unwrap()).arg(&d));
    assert!(out.status.success());
    let mode = if sticky { 0o3770 } else { 0o2770 };
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
    d
}

/// The attacker plants, in `dir`, symlinks to `target` under the temporary names an
/// `expose --as NAME` of the next 3,000 processes would have used (`.NAME.lpmx-expose.PID`).
fn plant_temp_names(dir: &Path, name: &str, target: &Path) {
    let out = run(as_attacker("perl")
        .unwrap()
        .arg("-e")
        .arg(
            r#"open my $f, "<", "/proc/sys/kernel/ns_last_pid" or die; my $l = <$f>;
               my $n = 0;
               for my $p ($l + 1 .. $l + 3000) {
                   $n++ if symlink($ARGV[0], "$ARGV[1]/.$ARGV[2].lpmx-expose.$p");
               }
               print "$n\n";"#,
        )
        .arg(target)
        .arg(dir)
        .arg(name));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "3000", "the attacker planted them all");
}

fn expose(env: &Env, image: &str, command: &str, name: &str, dir: &Path) -> std::process::Output {
    run(env
        .cmd()
        .args(["expose", image, command, "--as", name, "--dir"])
        .arg(dir))
}

/// D6: `expose --dir` into a group-writable directory, where the attacker planted symlinks
/// to the victim's private file under every temporary name the old code could use. The
/// old code wrote the wrapper into the private file, made it 0755, and installed the
/// attacker's symlink as the wrapper. Now: the file is intact, the wrapper is a regular
/// file of the victim's, and the directory is warned about. Both without and with the
/// sticky bit (sticky stops renames over others' files, not a write through a symlink).
#[test]
fn expose_into_a_shared_dir_never_writes_through_a_planted_symlink() {
    let env = Env::new();
    let (Some(img), Some(_)) = (fixture_image(), attacker()) else {
        return;
    };
    let secret = victim_with_secret(&env);
    for sticky in [false, true] {
        let dir = shared_dir(&env, if sticky { "bin-t" } else { "bin-s" }, sticky);
        plant_temp_names(&dir, "tool", &secret);
        let out = expose(&env, &img, "/bin/echo", "tool", &dir);
        secret_intact(&secret);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let w = dir.join("tool");
        let m = w.symlink_metadata().unwrap();
        assert!(
            m.is_file(),
            "the installed wrapper is a {:?}",
            m.file_type()
        );
        assert_eq!(m.uid(), unsafe { libc::getuid() }, "the victim's own");
        assert_eq!(m.mode() & 0o777, 0o755);
        assert!(std::fs::read_to_string(&w)
            .unwrap()
            .contains("# lpmx-job expose:"));
        let err = stderr(&out);
        assert!(
            err.contains("warning:") && err.contains("writable by its group"),
            "{err}"
        );
        assert_eq!(err.contains("(sticky)"), sticky, "{err}");

        // The final name itself a symlink of the attacker's: refused, nothing written.
        let out = run(as_attacker("ln")
            .unwrap()
            .arg("-s")
            .arg(&secret)
            .arg(dir.join("tool2")));
        assert!(out.status.success(), "{}", stderr(&out));
        let out = expose(&env, &img, "/bin/echo", "tool2", &dir);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
        secret_intact(&secret);
    }
}

/// D6, `--list` and `--remove`: in a directory others can write, the attacker imitates a
/// wrapper (marker and all) and links to one. The old code listed the imitation as the
/// victim's own tool and removed it. Now neither is listed, removed nor replaced.
#[test]
fn list_and_remove_ignore_another_users_imitation_and_symlinks() {
    let env = Env::new();
    let (Some(img), Some(_)) = (fixture_image(), attacker()) else {
        return;
    };
    let _secret = victim_with_secret(&env);
    let dir = shared_dir(&env, "bin", false);
    let out = expose(&env, &img, "/bin/cat", "mine", &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(as_attacker("sh").unwrap().arg("-c").arg(format!(
        "cd '{}' && printf '#!/bin/sh\\n# lpmx-job expose: {img} /bin/ls\\necho attacker\\n' \
         > fake && chmod 755 fake && ln -s mine alias",
        dir.display()
    )));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(env.cmd().args(["expose", "--list", "--dir"]).arg(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let names: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["mine"], "only the victim's own wrapper is listed");

    let out = run(env
        .cmd()
        .args(["expose", "--remove", "fake", "--dir"])
        .arg(&dir));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("belongs to uid"), "{}", stderr(&out));
    assert!(dir.join("fake").is_file());
    let out = run(env
        .cmd()
        .args(["expose", "--remove", "alias", "--dir"])
        .arg(&dir));
    assert_eq!(out.status.code(), Some(125));
    assert!(dir.join("alias").symlink_metadata().is_ok());
    let out = expose(&env, &img, "/bin/cat", "fake", &dir);
    assert_eq!(
        out.status.code(),
        Some(125),
        "another user's file is not replaced"
    );
    assert!(std::fs::read_to_string(dir.join("fake"))
        .unwrap()
        .contains("echo attacker"));
    // The victim's own wrapper is still theirs to remove.
    let out = run(env
        .cmd()
        .args(["expose", "--remove", "mine", "--dir"])
        .arg(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!dir.join("mine").exists());
}

/// A call of wrapper `name` in `dir`, from the test's directory, as a user makes it.
fn call(env: &Env, dir: &Path, name: &str) -> std::process::Output {
    run(Command::new(dir.join(name))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", env.path("home"))
        .env("XDG_CACHE_HOME", env.path("cache"))
        .env("XDG_CONFIG_HOME", env.path("config"))
        .env("LPMX_SITE_CONFIG", env.path("site/config.yaml"))
        .current_dir(env.dir.path()))
}

/// D7: a newline in the command, or in an `oci:` path, ended the wrapper's comment line,
/// and the next line ran as shell code on the host at every call of the wrapper. Now no
/// call creates the marker (the values are refused); and an image that does not exist is
/// refused before any wrapper names it.
#[test]
fn a_newline_in_the_command_or_the_image_runs_nothing_on_the_host() {
    let env = Env::new();
    let Some(img) = fixture_image() else {
        return;
    };
    let fixtures = service("LPMX_TEST_FIXTURES").unwrap();
    let dir = env.path("bin");
    // Every attack first, then what each did: one run shows all that got through.
    let mut ran = Vec::new();

    let out1 = expose(&env, &img, "/bin/echo\ntouch pwned1", "t1", &dir);
    if dir.join("t1").exists() {
        call(&env, &dir, "t1");
    }
    if env.path("pwned1").exists() {
        ran.push("the command's second line");
    }

    // A layout whose directory name carries the code: `#` comments out the rest of the line.
    let evil = env.path("lay\ntouch pwned2\n#");
    std::fs::create_dir(&evil).unwrap();
    let layout = Path::new(&fixtures).join("oci");
    for f in ["index.json", "oci-layout"] {
        std::fs::copy(layout.join(f), evil.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(layout.join("blobs"), evil.join("blobs")).unwrap();
    let out2 = expose(
        &env,
        &format!("oci:{}:one", evil.display()),
        "/bin/echo",
        "t2",
        &dir,
    );
    if dir.join("t2").exists() {
        call(&env, &dir, "t2");
    }
    if env.path("pwned2").exists() {
        ran.push("the oci: path's second line");
    }

    // Images that do not exist: a tag the layout lacks, a repository the registry lacks.
    let mut missing = vec![format!("oci:{fixtures}/oci:no-such-tag")];
    if let Some(reg) = service("LPMX_TEST_REGISTRY") {
        missing.push(format!("{reg}/lpmx/no-such-image"));
    }
    for image in missing {
        let out = run(env
            .cmd()
            .env(
                "LPMX_INSECURE_REGISTRIES",
                service("LPMX_TEST_REGISTRY").unwrap_or_default(),
            )
            .args(["expose", &image, "/bin/echo", "--as", "t3", "--dir"])
            .arg(&dir));
        if out.status.code() != Some(125) || dir.join("t3").exists() {
            ran.push(if image.starts_with("oci:") {
                "a missing tag accepted"
            } else {
                "a missing repository accepted"
            });
            let _ = std::fs::remove_file(dir.join("t3"));
        } else {
            assert!(stderr(&out).contains(&image), "{}", stderr(&out));
        }
    }
    assert!(ran.is_empty(), "got through: {ran:?}");
    for out in [out1, out2] {
        assert_eq!(out.status.code(), Some(125));
        let err = stderr(&out);
        assert!(err.contains("control character"), "{err}");
    }
}

/// D9: inside `run --host-cmd NAME`, the caller sets what makes the host's loader or shell
/// run code: a shared object of its own in LD_PRELOAD (a real one, compiled here, whose
/// constructor creates a marker when it runs outside the container), a BASH_ENV script, an
/// exported bash function overriding a command the host script calls. The old bridge
/// passed them all and the marker appeared on the host. Now the host program runs, and no
/// marker does.
#[test]
fn a_bridged_command_never_runs_the_callers_preload_or_shell_start_up_code() {
    let env = Env::new();
    let Some(img) = fixture_image() else {
        return;
    };
    let marker = |n: &str| env.path(&format!("ran-on-host-{n}"));
    // Runs inside too (the bridge client goes through the host's loader): only outside the
    // container, where /.lpmx does not exist, is it the attack.
    let src = env.write(
        "evil.c",
        &format!(
            "#include <fcntl.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void evil(void) {{\n\
             if (access(\"/.lpmx\", F_OK) != 0) close(open(\"{}\", O_CREAT | O_WRONLY, 0644));\n}}\n",
            marker("preload").display()
        ),
    );
    let so = env.path("evil.so");
    let out = run(Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src));
    assert!(out.status.success(), "cc: {}", stderr(&out));
    let evil_sh = env.write(
        "evil.sh",
        &format!(
            "[ -e /.lpmx ] || touch '{}'\n",
            marker("bash_env").display()
        ),
    );
    let hostbin = env.path("hostbin");
    std::fs::create_dir(&hostbin).unwrap();
    for (name, body) in [
        ("hostsh", "#!/bin/sh\necho ran on the host\n"),
        (
            "hostbash",
            "#!/bin/bash\nid -u >/dev/null\necho ran on the host\n",
        ),
    ] {
        let p = hostbin.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = format!(
        "LD_PRELOAD={so} hostsh && LD_PRELOAD={so} hostbash && BASH_ENV={sh} hostbash && \
         env 'BASH_FUNC_id%%=() {{ touch {f}; }}' hostbash",
        so = so.display(),
        sh = evil_sh.display(),
        f = marker("function").display(),
    );
    let out = run(env
        .cmd()
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", hostbin.display()),
        )
        .args(["-q", "run", "-w"])
        .arg(env.dir.path())
        .args(["--host-cmd", "hostsh", "--host-cmd", "hostbash", &img])
        .args(["sh", "-c", &script]));
    let ran: Vec<_> = ["preload", "bash_env", "function"]
        .into_iter()
        .filter(|m| marker(m).exists())
        .collect();
    assert!(ran.is_empty(), "the caller's code ran on the host: {ran:?}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ran on the host\n".repeat(4));
}
