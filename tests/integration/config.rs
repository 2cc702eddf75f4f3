//! Configuration precedence and error messages, through the real binary.

use std::os::unix::fs::PermissionsExt;

use crate::support::{json, run, stderr, Env};

fn show(cmd: &mut std::process::Command) -> serde_json::Value {
    let out = run(cmd.args(["config", "show", "--json"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "config show failed: {}",
        stderr(&out)
    );
    json(&out)
}

fn key<'a>(v: &'a serde_json::Value, k: &str) -> (&'a serde_json::Value, String) {
    let e = &v["keys"][k];
    assert!(!e.is_null(), "key {k} missing in {v}");
    (&e["value"], e["source"].as_str().unwrap().to_string())
}

#[test]
fn defaults_follow_xdg() {
    let env = Env::new();
    let v = show(&mut env.cmd());
    let (dir, src) = key(&v, "cache.dir");
    assert_eq!(
        dir.as_str().unwrap(),
        env.path("cache/lpmx").to_str().unwrap()
    );
    assert_eq!(src, "default");
    let v = show(env.cmd().env_remove("XDG_CACHE_HOME"));
    assert_eq!(
        key(&v, "cache.dir").0.as_str().unwrap(),
        env.path("home/.cache/lpmx").to_str().unwrap()
    );
    // Every key is listed, set or not.
    for k in [
        "cache.dir",
        "cache.group",
        "cache.readonly",
        "cache.lock_timeout",
        "registry.insecure",
        "progress",
    ] {
        key(&v, k);
    }
}

#[test]
fn each_layer_overrides_the_one_below() {
    let env = Env::new();
    let site = env.write(
        "site/config.yaml",
        "cache:\n  dir: /site/cache\n  lock_timeout: 10\n  group: hpc\nprogress: line\n",
    );
    let user = env.write(
        "config/lpmx/config.yaml",
        "cache:\n  dir: /user/cache\n  lock_timeout: 20\n",
    );
    let named = env.write(
        "named.yaml",
        "cache:\n  dir: /named/cache\nregistry:\n  insecure: [\"a:1\"]\n",
    );

    let v = show(&mut env.cmd());
    assert_eq!(
        key(&v, "cache.dir"),
        (
            &"/user/cache".into(),
            format!("user file {}", user.display())
        )
    );
    assert_eq!(key(&v, "cache.lock_timeout").0, 20);
    assert_eq!(
        key(&v, "cache.group"),
        (&"hpc".into(), format!("site file {}", site.display()))
    );
    assert_eq!(key(&v, "progress").0, "line");

    let v = show(env.cmd().env("LPMX_CONFIG", &named));
    assert_eq!(
        key(&v, "cache.dir"),
        (
            &"/named/cache".into(),
            format!("config file {}", named.display())
        )
    );
    assert_eq!(
        key(&v, "cache.lock_timeout").0,
        20,
        "LPMX_CONFIG sets only what it names"
    );
    assert_eq!(key(&v, "registry.insecure").0, &serde_json::json!(["a:1"]));

    let v = show(
        env.cmd()
            .env("LPMX_CONFIG", &named)
            .env("LPMX_CACHE", "/env/cache")
            .env("LPMX_INSECURE_REGISTRIES", "b:2,c:3"),
    );
    assert_eq!(
        key(&v, "cache.dir"),
        (&"/env/cache".into(), "environment LPMX_CACHE".into())
    );
    assert_eq!(
        key(&v, "registry.insecure").0,
        &serde_json::json!(["b:2", "c:3"])
    );

    let v = show(
        env.cmd()
            .env("LPMX_CONFIG", &named)
            .env("LPMX_CACHE", "/env/cache")
            .args(["--cache", "/flag/cache"]),
    );
    assert_eq!(
        key(&v, "cache.dir"),
        (&"/flag/cache".into(), "flag --cache".into())
    );

    // --config takes the place of LPMX_CONFIG.
    let other = env.write("other.yaml", "cache:\n  dir: /other/cache\n");
    let v = show(
        env.cmd()
            .env("LPMX_CONFIG", &named)
            .arg("--config")
            .arg(&other),
    );
    assert_eq!(key(&v, "cache.dir").0, "/other/cache");
}

#[test]
fn paths_expand_variables_and_home() {
    let env = Env::new();
    env.write(
        "site/config.yaml",
        "cache:\n  dir: $SCRATCH/${USER}/lpmx\n  readonly: [\"~/ro\"]\n",
    );
    let v = show(env.cmd().env("SCRATCH", "/scratch").env("USER", "ann"));
    assert_eq!(key(&v, "cache.dir").0, "/scratch/ann/lpmx");
    let ro = format!("{}/ro", env.path("home").display());
    assert_eq!(key(&v, "cache.readonly").0, &serde_json::json!([ro]));
    let out = run(env.cmd().env("USER", "ann").args(["config", "show"]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("$SCRATCH") && err.contains("cache.dir") && err.contains("site file"),
        "{err}"
    );
}

#[test]
fn text_output_names_files_and_sources() {
    let env = Env::new();
    let user = env.write("config/lpmx/config.yaml", "cache:\n  group: proj\n");
    let out = run(env.cmd().args(["config", "show"]));
    assert_eq!(out.status.code(), Some(0));
    let text = crate::support::stdout(&out);
    assert!(
        text.contains(&format!("# user file {}: read", user.display())),
        "{text}"
    );
    assert!(
        text.contains("site file") && text.contains("absent"),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with("cache.group")).unwrap();
    assert!(
        line.contains("proj") && line.contains("[user file"),
        "{line}"
    );
}

/// Runs `config show` on a user file with `yaml` and returns the one-line error.
fn config_error(env: &Env, yaml: &str) -> String {
    let path = env.write("config/lpmx/config.yaml", yaml);
    let out = run(env.cmd().args(["config", "show"]));
    assert_eq!(out.status.code(), Some(125), "bad config must fail");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line without -v: {err}");
    assert!(
        err.contains(path.to_str().unwrap()),
        "names the file: {err}"
    );
    err
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let env = Env::new();
    let err = config_error(
        &env,
        "# site settings\ncache:\n  dir: /x\n  lock_timeot: 5\n",
    );
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("lock_timeot"), "{err}");
    let err = config_error(&env, "colour: blue\n");
    assert!(err.contains("line 1") && err.contains("colour"), "{err}");
}

#[test]
fn wrong_type_names_file_line_and_key() {
    let env = Env::new();
    let err = config_error(&env, "cache:\n  dir: /x\n  lock_timeout: one hour\n");
    assert!(
        err.contains("line 3") && err.contains("`cache.lock_timeout`"),
        "{err}"
    );
    let err = config_error(&env, "registry:\n  insecure: 127.0.0.1:5000\n");
    assert!(
        err.contains("line 2") && err.contains("`registry.insecure`"),
        "{err}"
    );
    let err = config_error(&env, "progress: fancy\n");
    assert!(
        err.contains("line 1") && err.contains("`progress`") && err.contains("fancy"),
        "{err}"
    );
}

#[test]
fn broken_yaml_names_the_line() {
    let env = Env::new();
    let err = config_error(&env, "cache:\n  dir: [unclosed\n");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn verbose_shows_the_offending_lines() {
    let env = Env::new();
    env.write("config/lpmx/config.yaml", "cache:\n  lock_timeout: soon\n");
    let out = run(env.cmd().args(["-v", "config", "show"]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.lines().count() > 1 && err.contains("lock_timeout: soon"),
        "{err}"
    );
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let env = Env::new();
    let p = env.write("config/lpmx/config.yaml", "cache:\n  dir: /x\n");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = run(env.cmd().args(["config", "show"]));
    assert_eq!(
        out.status.code(),
        Some(125),
        "an unreadable config is not silently skipped"
    );
    let err = stderr(&out);
    assert!(
        err.contains(p.to_str().unwrap()) && err.contains("Permission denied"),
        "{err}"
    );
}

#[test]
fn named_file_must_exist_but_conventional_ones_need_not() {
    let env = Env::new();
    let out = run(env
        .cmd()
        .env("LPMX_CONFIG", env.path("missing.yaml"))
        .args(["config", "show"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("missing.yaml"), "{}", stderr(&out));
    let out = run(env.cmd().args(["config", "show"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "absent site and user files are fine"
    );
}

#[test]
fn bad_environment_value_names_the_variable() {
    let env = Env::new();
    let out = run(env
        .cmd()
        .env("LPMX_LOCK_TIMEOUT", "ten")
        .args(["config", "show"]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("LPMX_LOCK_TIMEOUT") && err.contains("ten"),
        "{err}"
    );
    let out = run(env
        .cmd()
        .env("LPMX_PROGRESS", "sparkly")
        .args(["config", "show"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("LPMX_PROGRESS"), "{}", stderr(&out));
}

#[test]
fn config_errors_stop_other_verbs_too() {
    let env = Env::new();
    env.write("site/config.yaml", "cache: {dir: /x, bogus: 1}\n");
    let out = run(env.cmd().arg("doctor"));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("bogus"), "{}", stderr(&out));
}
