//! Claims of the README that no other test exercised: a pin the manifest does not match, a
//! stale mirror, the last-used stamp and `prune --older-than`, the lock directory's
//! heartbeat, `rmi` by digest prefix, the schema-1 refusal and Docker 25's `docker save`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

use crate::proxy::{self, Faults};
use crate::support::{
    blob_gets, json, private_copy, run, service, stderr, stdout, verify_ok, wait_until, Env,
};

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// The digest of `repo:latest`'s manifest as the registry stores it.
fn manifest_digest(reg: &str, repo: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reg}/{repo}:latest"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", stderr(&out));
    format!("sha256:{}", sha256_hex(&out.stdout))
}

fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    stdout(o)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| r.count())
}

/// `repo@sha256:...`: the manifest the registry sends must hash to the pin. A registry that
/// answers the pin with another image's manifest is refused, and nothing is recorded.
#[test]
fn a_pinned_digest_the_manifest_does_not_match_is_refused() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let one = private_copy(&reg, "one", &env);
    let pin = manifest_digest(&reg, &one);
    let liar = proxy::start(
        &reg,
        Faults {
            rewrite: Some((
                leak(format!("/v2/{one}/manifests/{pin}")),
                "/v2/lpmx/layers3/manifests/latest",
            )),
            ..Faults::default()
        },
    );
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &liar.addr)
        .args(["pull", &format!("{}/{one}@{pin}", liar.addr)]));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("does not match its digest") && err.contains(&format!("expected {pin}")),
        "{err}"
    );
    assert_eq!(
        json(&run(env.cmd().args(["images", "--json"]))),
        serde_json::json!([])
    );
    assert_eq!(count(&env.path("cache/lpmx/layers-v1")), 0);
    // The same pin from the registry itself is pulled.
    let out = run(env.cmd().env("LPMX_INSECURE_REGISTRIES", &reg).args([
        "pull",
        "--json",
        &format!("{reg}/{one}@{pin}"),
    ]));
    assert_eq!(json(&out)[0]["manifest"], pin.as_str(), "{}", stderr(&out));
}

/// A mirror that still serves an older image under the name: a tag may come from it (the
/// delay a mirror brings, a whole verified image), a pin it lacks comes from the registry,
/// and nothing in the cache mixes the two.
#[test]
fn a_stale_mirror_delays_but_never_corrupts() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let new = private_copy(&reg, "layers3", &env);
    let old = private_copy(&reg, "one", &env);
    let (new_digest, old_digest) = (manifest_digest(&reg, &new), manifest_digest(&reg, &old));
    // The mirror: everything asked of `new` is answered from `old`, consistently.
    let mirror = proxy::start(
        &reg,
        Faults {
            rewrite: Some((leak(format!("/v2/{new}/")), leak(format!("/v2/{old}/")))),
            ..Faults::default()
        },
    );
    env.write(
        "config/lpmx/config.yaml",
        &format!(
            "registry:\n  insecure: [\"{reg}\", \"{m}\"]\nregistries:\n  \"{reg}\":\n    mirrors: [\"{m}\"]\n",
            m = mirror.addr
        ),
    );
    // By tag: the mirror's (older) image, whole.
    let out = run(env.cmd().args(["pull", "--json", &format!("{reg}/{new}")]));
    let rec = json(&out);
    assert_eq!(rec[0]["manifest"], old_digest.as_str(), "{}", stderr(&out));
    assert_eq!(rec[0]["layers"].as_array().unwrap().len(), 1);
    verify_ok(&env);
    // By digest: the mirror does not have it, the registry does.
    let out = run(env
        .cmd()
        .args(["pull", "--json", &format!("{reg}/{new}@{new_digest}")]));
    let rec = json(&out);
    assert_eq!(rec[0]["manifest"], new_digest.as_str(), "{}", stderr(&out));
    assert_eq!(rec[0]["layers"].as_array().unwrap().len(), 4);
    verify_ok(&env);
    let out = run(env.cmd().args([
        "run",
        &format!("{reg}/{new}@{new_digest}"),
        "cat",
        "/data/keep.txt",
    ]));
    assert_eq!(ok(&out), "v2\n");
}

/// The image record and stamp of the only image in `env`'s cache.
fn stamp_and_record(env: &Env) -> (PathBuf, PathBuf) {
    let images = env.path("cache/lpmx/images-v1");
    let rec = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("an image record");
    (rec.with_extension("used"), rec)
}

fn set_mtime(p: &Path, ago: Duration) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

fn age(p: &Path) -> Duration {
    std::fs::metadata(p)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap_or_default()
}

/// A run stamps the image's last use at most once a minute; `cache prune --older-than DAYS`
/// forgets an image whose last use is older, and then its layers.
#[test]
fn the_last_used_stamp_is_written_at_most_once_a_minute_and_old_images_are_pruned() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let img = format!("{reg}/lpmx/one");
    let run_true = || {
        let out = run(env
            .cmd()
            .env("LPMX_INSECURE_REGISTRIES", &reg)
            .args(["run", &img, "true"]));
        ok(&out);
    };
    run_true();
    let (stamp, record) = stamp_and_record(&env);
    assert!(stamp.is_file(), "{}", stamp.display());
    // Stamped 30 s ago: a run now leaves it.
    set_mtime(&stamp, Duration::from_secs(30));
    run_true();
    let a = age(&stamp);
    assert!(
        a >= Duration::from_secs(29),
        "restamped within the minute ({a:?} ago)"
    );
    // Stamped two minutes ago: a run now stamps it.
    set_mtime(&stamp, Duration::from_secs(120));
    run_true();
    let a = age(&stamp);
    assert!(
        a < Duration::from_secs(20),
        "not restamped after a minute ({a:?} ago)"
    );

    let layers = env.path("cache/lpmx/layers-v1");
    let out = run(env.cmd().args(["cache", "prune", "--older-than", "2"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(count(&layers), 1, "used just now: kept");
    // Last used three days ago, by the record (the pull) and the stamp (the last run).
    let three_days = Duration::from_secs(3 * 86400);
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let then = SystemTime::now() - three_days;
    rec["last_used"] = then
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .into();
    // Published records are read-only; their owner may still make them writable.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&record).unwrap().permissions().mode();
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&record, serde_json::to_vec(&rec).unwrap()).unwrap();
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(&stamp, three_days);
    let out = run(env.cmd().args(["cache", "prune", "--older-than", "4"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(count(&layers), 1, "not older than four days: kept");
    let out = run(env.cmd().args(["cache", "prune", "--older-than", "2"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        json(&run(env.cmd().args(["images", "--json"]))),
        serde_json::json!([])
    );
    assert_eq!(count(&layers), 0, "its layer went with it");
    verify_ok(&env);
}

/// A lock directory's holder refreshes its heartbeat (the owner file's mtime, every 10 s)
/// while it downloads, so a second puller waits for it instead of taking over, and each
/// blob is downloaded once.
#[test]
fn a_live_lock_directory_holder_keeps_its_heartbeat() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let repo = private_copy(&reg, "one", &env);
    // 48 KiB/s: the 1 MiB layer takes over 20 s, two heartbeats.
    let slow = proxy::start(
        &reg,
        Faults {
            rate: Some(48 << 10),
            ..Faults::default()
        },
    );
    let pull = || {
        env.cmd()
            .env("LPMX_LOCK_MODE", "lockdir")
            .env("LPMX_INSECURE_REGISTRIES", &slow.addr)
            .args(["pull", &format!("{}/{repo}", slow.addr)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The layer's lock (locks-v1/HEX.lockdir), held for the whole slow download.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reg}/{repo}:latest"))
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let owner = env.path(&format!(
        "cache/lpmx/locks-v1/{}.lockdir/owner",
        layer.trim_start_matches("sha256:")
    ));
    let first = pull();
    wait_until(
        "the layer's lock directory",
        Duration::from_secs(60),
        || owner.is_file(),
    );
    let second = pull();
    let born = std::fs::metadata(&owner).unwrap().modified().unwrap();
    wait_until(
        "the holder refreshed its heartbeat",
        Duration::from_secs(18),
        || {
            std::fs::metadata(&owner)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > born)
        },
    );
    for c in [first, second] {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let gets = blob_gets(&repo);
    assert!(gets.values().all(|&n| n == 1), "no one took over: {gets:?}");
    verify_ok(&env);
}

/// `rmi` takes a manifest digest prefix (6 hex digits or more, with or without `sha256:`)
/// and removes that image only.
#[test]
fn rmi_by_digest_prefix() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let mut digests = Vec::new();
    for img in ["one", "layers3"] {
        let out = run(env.cmd().env("LPMX_INSECURE_REGISTRIES", &reg).args([
            "pull",
            "--json",
            &format!("{reg}/lpmx/{img}"),
        ]));
        digests.push(json(&out)[0]["manifest"].as_str().unwrap().to_string());
    }
    let names = |env: &Env| -> Vec<String> {
        json(&run(env.cmd().args(["images", "--json"])))
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["manifest"].as_str().unwrap().to_string())
            .collect()
    };
    let hex = digests[0].trim_start_matches("sha256:");
    let out = run(env.cmd().args(["rmi", &hex[..5]]));
    assert_eq!(out.status.code(), Some(125), "five digits are too few");
    let out = run(env.cmd().args(["rmi", &hex[..12]]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(names(&env), [digests[1].clone()]);
    let out = run(env.cmd().args([
        "rmi",
        &format!("sha256:{}", &digests[1].trim_start_matches("sha256:")[..8]),
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(names(&env), Vec::<String>::new());
}

fn blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// A Docker schema-1 manifest is refused with the README's message: what it is and how to
/// fix it, in one line.
#[test]
fn a_schema_1_image_is_refused_saying_why() {
    let env = Env::new();
    let layout = env.path("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let manifest = br#"{"schemaVersion":1,"name":"lpmx/old","tag":"latest","architecture":"amd64","fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"{}"}],"signatures":[]}"#;
    let d = blob(&layout, manifest);
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","digest":"{d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"old"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    let out = run(env
        .cmd()
        .args(["pull", &format!("oci:{}:old", layout.display())]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("uses the Docker schema 1 manifest format, retired in 2019; re-push it with a current Docker or skopeo"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `docker save` of Docker 25 and later: an OCI image layout inside the archive, beside the
/// classic manifest.json. The image pulled is the layout's manifest, by its digest.
#[test]
fn a_docker_25_oci_layout_archive_is_pulled_by_its_manifest() {
    let env = Env::new();
    let Some(fixtures) = service("LPMX_TEST_FIXTURES") else {
        return;
    };
    let dir = env.path("save");
    let cp = run(Command::new("skopeo")
        .args(["copy", "--insecure-policy"])
        .arg(format!("oci:{fixtures}/oci:one"))
        .arg(format!("oci:{}:latest", dir.display())));
    assert!(cp.status.success(), "{}", stderr(&cp));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // As Docker 25 writes it: the names Docker gives, and the classic manifest.json pointing
    // into blobs/.
    let mut index = index;
    index["manifests"][0]["annotations"] = serde_json::json!({
        "io.containerd.image.name": "docker.io/lpmx/one:latest",
        "org.opencontainers.image.ref.name": "latest"
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    let path = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(path(&mdigest))).unwrap()).unwrap();
    let classic = serde_json::json!([{
        "Config": path(m["config"]["digest"].as_str().unwrap()),
        "RepoTags": ["lpmx/one:latest"],
        "Layers": m["layers"].as_array().unwrap().iter()
            .map(|l| path(l["digest"].as_str().unwrap())).collect::<Vec<_>>(),
    }]);
    std::fs::write(dir.join("manifest.json"), classic.to_string()).unwrap();
    let tar = env.path("one-docker25.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .args(["oci-layout", "index.json", "manifest.json", "blobs"])
        .status()
        .unwrap();
    assert!(st.success());
    let img = format!("docker-archive:{}", tar.display());
    let out = run(env.cmd().args(["pull", "--json", &img]));
    let rec = json(&out);
    assert_eq!(rec[0]["manifest"], mdigest.as_str(), "{}", stderr(&out));
    let out = run(env.cmd().args(["run", &img, "sh", "-c", "echo $FIXTURE"]));
    assert_eq!(ok(&out), "one\n");
    verify_ok(&env);
}
