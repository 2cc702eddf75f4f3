//! Many pulls at once, killed pulls, a registry that dies, a disk that fills: the cache must
//! stay trustworthy and the registry must see one download per blob.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::proxy::{self, Faults};
use crate::support::{
    blob_get_statuses, blob_gets, json, manifest_gets, private_copy, run, service, stderr, stdout,
    verify_ok, verify_ok_with, wait_until, Env,
};

/// `n` processes pull one uncached image into one fresh cache at once, taking locks in `mode`
/// (None: probed and recorded by whichever comes first): all succeed and the registry serves
/// each blob (4 layers and a config) once.
fn herd_of_pulls(env: &Env, reg: &str, n: usize, mode: Option<&str>) {
    let repo = private_copy(reg, "layers3", env);
    let image = format!("{reg}/{repo}");
    let children: Vec<_> = (0..n)
        .map(|_| {
            let mut c = env.cmd();
            if let Some(m) = mode {
                c.env("LPMX_LOCK_MODE", m);
            }
            c.env("LPMX_INSECURE_REGISTRIES", reg)
                .args(["pull", &image])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "a concurrent pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let gets = blob_gets(&repo);
    assert_eq!(
        gets.len(),
        5,
        "4 layers and a config were fetched: {gets:?}"
    );
    for (digest, n) in &gets {
        assert_eq!(
            *n, 1,
            "blob {digest} downloaded {n} times ({mode:?} locks): {gets:?}"
        );
    }
}

#[test]
fn eight_concurrent_pulls_download_each_blob_once() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    herd_of_pulls(&env, &reg, 8, None);
    verify_ok(&env);
}

#[test]
fn a_killed_pull_leaves_a_cache_the_next_pull_completes() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    // 200 KiB/s: the 1 MiB base layer takes about five seconds, long enough to kill mid-way.
    let slow = proxy::start(
        &reg,
        Faults {
            rate: Some(200 << 10),
            ..Faults::default()
        },
    );
    let tmp = env.path("cache/lpmx/tmp-v1");
    let leftovers = || std::fs::read_dir(&tmp).map_or(0, |r| r.count());
    for delay_ms in [0, 300, 1000] {
        let mut child = env
            .cmd()
            .env("LPMX_INSECURE_REGISTRIES", &slow.addr)
            .args(["pull", &format!("{}/lpmx/layers3", slow.addr)])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Killed while a layer downloads: after its "fetching" line, once its work area
        // exists, not at a time guessed in advance.
        let lines = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(lines).map_while(Result::ok) {
                eprintln!("pull: {l}");
                if l.contains(": fetching ") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the pull said it was fetching a layer");
        wait_until(
            "the pull made its work area",
            Duration::from_secs(30),
            || leftovers() > 0,
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            leftovers() > 0,
            "the killed pull left a work area for the next pull to reclaim"
        );
        verify_ok(&env);
    }
    let rec = {
        let out = run(env.cmd().env("LPMX_INSECURE_REGISTRIES", &reg).args([
            "pull",
            "--json",
            &format!("{reg}/lpmx/layers3"),
        ]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        json(&out)[0].clone()
    };
    assert_eq!(rec["layers"].as_array().unwrap().len(), 4);
    verify_ok(&env);
    assert_eq!(
        leftovers(),
        0,
        "leftovers of the killed pulls were reclaimed"
    );
}

#[test]
fn a_connection_cut_mid_blob_resumes_with_a_range_request() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let repo = private_copy(&reg, "one", &env);
    let flaky = proxy::start(
        &reg,
        Faults {
            cut_after: Some(300_000),
            cut_connections: 1,
            ..Faults::default()
        },
    );
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &flaky.addr)
        .args(["pull", &format!("{}/{repo}", flaky.addr)]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The cut blob: a whole answer cut short, then the rest with a Range request (206), not
    // a restart from zero (a second 200).
    let gets = blob_get_statuses(&repo);
    let again: Vec<_> = gets.values().filter(|v| v.len() > 1).collect();
    assert_eq!(again.len(), 1, "one blob was fetched twice: {gets:?}");
    assert_eq!(
        again[0].as_slice(),
        ["200", "206"],
        "the second GET resumed with a Range: {gets:?}"
    );
    verify_ok(&env);
}

#[test]
fn a_registry_that_dies_mid_pull_is_a_clear_error_and_publishes_nothing() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let dying = proxy::start(
        &reg,
        Faults {
            cut_after: Some(300_000),
            cut_connections: 1,
            die_after_cut: true,
            ..Faults::default()
        },
    );
    let image = format!("{}/lpmx/one", dying.addr);
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &dying.addr)
        .args(["pull", &image]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains(&dying.addr), "names the registry: {err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    let layers = env.path("cache/lpmx/layers-v1");
    assert_eq!(
        std::fs::read_dir(&layers).unwrap().count(),
        0,
        "nothing half-published"
    );
    assert_eq!(
        std::fs::read_dir(env.path("cache/lpmx/tmp-v1"))
            .unwrap()
            .count(),
        0
    );
    verify_ok(&env);
    // The registry is back (the real one, same blobs): the pull completes.
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .args(["pull", &format!("{reg}/lpmx/one")]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    verify_ok(&env);
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_cache_stays_consistent() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    // A 700 KiB tmpfs in a namespace of our own: the 2 MiB busybox layer cannot fit.
    let dir = env.path("small");
    std::fs::create_dir(&dir).unwrap();
    let bin = crate::support::bin();
    let script = format!(
        "mount -t tmpfs -o size=700k tmpfs {d} || exit 99
         {b} --cache {d}/c pull {reg}/lpmx/one; echo \"pull=$?\"
         {b} --cache {d}/c cache verify; echo \"verify=$?\"
         echo \"layers=$(ls {d}/c/layers-v1 | wc -l) tmp=$(ls {d}/c/tmp-v1 | wc -l)\"",
        d = dir.display(),
        b = bin.display()
    );
    let mut c = Command::new("unshare");
    c.args(["-U", "-r", "-m", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", env.path("home"))
        .env("LPMX_SITE_CONFIG", env.path("site/config.yaml"))
        .env("LPMX_INSECURE_REGISTRIES", &reg);
    let out = run(&mut c);
    let text = stdout(&out);
    assert_ne!(
        out.status.code(),
        Some(99),
        "could not mount the small tmpfs"
    );
    assert!(text.contains("pull=125"), "{text}");
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    assert!(text.contains("verify=0"), "{text}");
    assert!(text.contains("layers=0 tmp=0"), "{text}");
}

#[test]
fn lock_directories_also_give_one_download_per_blob() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    herd_of_pulls(&env, &reg, 6, Some("lockdir"));
    let locks = env.path("cache/lpmx/locks-v1");
    let left: Vec<_> = std::fs::read_dir(&locks)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(left.is_empty(), "lock directories released: {left:?}");
    verify_ok(&env);
}

#[test]
fn a_warm_pull_asks_for_one_manifest_and_offline_asks_nothing() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let repo = private_copy(&reg, "multi", &env);
    let image = format!("{reg}/{repo}");
    let pull = |extra: &[&str]| {
        let out = run(env
            .cmd()
            .env("LPMX_INSECURE_REGISTRIES", &reg)
            .arg("pull")
            .args(extra)
            .arg(&image));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    pull(&[]);
    assert_eq!(
        manifest_gets(&repo),
        2,
        "cold: the index, then this platform's manifest"
    );
    let blobs = blob_gets(&repo);
    pull(&[]);
    assert_eq!(manifest_gets(&repo), 3, "warm: only the index");
    assert_eq!(blob_gets(&repo), blobs, "warm: no blob");
    pull(&["--offline"]);
    assert_eq!(manifest_gets(&repo), 3, "offline: nothing");
    let out = run(env
        .cmd()
        .args(["pull", "--offline", &format!("{reg}/lpmx/never-pulled")]));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("without --offline"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mirrors_are_tried_first_and_upstream_after() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    // Held, never listening: refuses every connection, and nothing else can take it.
    let dead_port = crate::support::DeadPort::new();
    let dead = dead_port.addr.clone();
    // The image's own registry is dead; its mirror (the real registry) serves it.
    env.write(
        "config/lpmx/config.yaml",
        &format!("registry:\n  insecure: [\"{reg}\", \"{dead}\"]\nregistries:\n  \"{dead}\":\n    mirrors: [\"{reg}\"]\n  \"{reg}\":\n    mirrors: [\"{dead}\"]\n"),
    );
    let out = run(env.cmd().args(["pull", &format!("{dead}/lpmx/one")]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "the mirror serves: {}",
        stderr(&out)
    );
    // A dead mirror is skipped, with a note naming it, and the registry itself serves.
    let out = run(env.cmd().args(["pull", &format!("{reg}/lpmx/layers3")]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&dead) && stderr(&out).contains(&format!("trying {reg}")),
        "{}",
        stderr(&out)
    );
    verify_ok(&env);
}

#[test]
fn a_read_only_site_cache_is_used_and_never_written() {
    let site = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let repo = private_copy(&reg, "layers3", &site);
    let image = format!("{reg}/{repo}");
    let out = run(site
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .args(["pull", &image]));
    assert_eq!(out.status.code(), Some(0));
    let before = blob_gets(&repo);
    let site_cache = site.path("cache/lpmx");
    let st = Command::new("chmod")
        .args(["-R", "a-w"])
        .arg(&site_cache)
        .status()
        .unwrap();
    assert!(st.success());
    let user = Env::new();
    let out = run(user
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .env("LPMX_READONLY_CACHES", &site_cache)
        .args(["pull", "--json", &image]));
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&site_cache)
        .status();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        blob_gets(&repo),
        before,
        "layers and config came from the site cache"
    );
    assert_eq!(
        std::fs::read_dir(user.path("cache/lpmx/layers-v1"))
            .unwrap()
            .count(),
        0
    );
    let mut cmd = user.cmd();
    cmd.env("LPMX_READONLY_CACHES", &site_cache);
    verify_ok_with(cmd);
}

#[test]
fn verify_finds_damage_and_repair_refetches() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let out = run(env.cmd().env("LPMX_INSECURE_REGISTRIES", &reg).args([
        "pull",
        "--json",
        &format!("{reg}/lpmx/one"),
    ]));
    assert_eq!(out.status.code(), Some(0));
    let layer = json(&out)[0]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let busybox = env.path(&format!("cache/lpmx/layers-v1/{layer}/root/bin/busybox"));
    std::fs::remove_file(&busybox).unwrap();
    let out = run(env.cmd().args(["cache", "verify"]));
    assert_eq!(out.status.code(), Some(1), "damage is a fault");
    assert!(
        stdout(&out).contains(&layer),
        "names the layer: {}",
        stdout(&out)
    );
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .args(["cache", "verify", "--repair"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(busybox.is_file(), "refetched");
    verify_ok(&env);
}

#[test]
fn rmi_and_prune_remove_only_what_nothing_uses() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    for img in ["one", "layers3"] {
        let out = run(env
            .cmd()
            .env("LPMX_INSECURE_REGISTRIES", &reg)
            .args(["pull", &format!("{reg}/lpmx/{img}")]));
        assert_eq!(out.status.code(), Some(0));
    }
    let layers = |env: &Env| {
        std::fs::read_dir(env.path("cache/lpmx/layers-v1"))
            .unwrap()
            .count()
    };
    assert_eq!(layers(&env), 4, "one shares its layer with layers3's base");
    let out = run(env.cmd().args(["rmi", &format!("{reg}/lpmx/layers3")]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(env.cmd().args(["rmi", &format!("{reg}/lpmx/layers3")]));
    assert_eq!(out.status.code(), Some(125), "already gone");
    let out = run(env.cmd().args(["cache", "prune"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(layers(&env), 1, "the shared base layer stays for `one`");
    let images = json(&run(env.cmd().args(["images", "--json"])));
    assert_eq!(images.as_array().unwrap().len(), 1);
    verify_ok(&env);
    let out = run(env.cmd().args(["cache", "prune", "--older-than", "1"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(layers(&env), 1, "used just now: not older than a day");
}

#[test]
fn prune_keeps_what_a_running_container_holds() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let image = format!("{reg}/lpmx/one");
    let mut task = env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .args(["run", &image, "sleep", "30"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let trees = env.path("cache/lpmx/trees-v1");
    let tree_dirs = || -> usize {
        std::fs::read_dir(&trees).map_or(0, |r| r.flatten().filter(|e| e.path().is_dir()).count())
    };
    // The task holds its tree once it runs the command: `sleep` is then the process itself
    // (no fork), so its tree's lock is held by the time its cmdline says sleep.
    let pid = task.id();
    wait_until("the task became sleep", Duration::from_secs(60), || {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
    });
    assert_eq!(tree_dirs(), 1, "the task's tree");
    assert_eq!(run(env.cmd().args(["rmi", &image])).status.code(), Some(0));
    let out = run(env.cmd().args(["cache", "prune"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("a running container uses it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree_dirs(), 1, "the running task's tree stays");
    task.kill().unwrap();
    task.wait().unwrap();
    let out = run(env.cmd().args(["cache", "prune"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(tree_dirs(), 0, "gone once the task ended");
    assert_eq!(
        std::fs::read_dir(env.path("cache/lpmx/layers-v1"))
            .unwrap()
            .count(),
        0
    );
}

/// Eight tasks starting at once on a cold cache send one manifest request for their tag, not
/// eight (Docker Hub counts each against its pull limit): the first resolves it under the
/// tag's lock, the others take its answer. Within `registry.resolve_window` a later start
/// asks nothing; with the window at 0 it asks again; `pull` by hand always asks.
#[test]
fn tasks_starting_together_resolve_a_tag_once() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let repo = private_copy(&reg, "one", &env);
    let image = format!("{reg}/{repo}");
    let start = |vars: &[(&str, &str)]| {
        let mut c = env.cmd();
        c.env("LPMX_INSECURE_REGISTRIES", &reg)
            .envs(vars.iter().copied())
            .args(["-q", "run", &image, "true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let tasks: Vec<_> = (0..8).map(|_| start(&[])).collect();
    for t in tasks {
        let out = t.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(
        manifest_gets(&repo),
        1,
        "8 cold tasks, one manifest request"
    );
    for (digest, n) in blob_gets(&repo) {
        assert_eq!(n, 1, "blob {digest} downloaded {n} times");
    }
    let out = start(&[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(manifest_gets(&repo), 1, "within the window: asked nothing");
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &reg)
        .args(["-q", "pull", &image]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        manifest_gets(&repo),
        2,
        "pull by hand: the registry's answer now"
    );
    // The window is what saves the requests: at 0, eight cold tasks of another cache ask
    // eight times.
    let other = Env::new();
    let repo2 = private_copy(&reg, "one", &other);
    let image2 = format!("{reg}/{repo2}");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            other
                .cmd()
                .env("LPMX_INSECURE_REGISTRIES", &reg)
                .env("LPMX_RESOLVE_WINDOW", "0")
                .args(["-q", "run", &image2, "true"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for t in tasks {
        let out = t.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(manifest_gets(&repo2), 8, "window 0: every task asks");
}
