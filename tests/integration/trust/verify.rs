//! `cache verify` proves content (issue 11, D3): files swapped in an image tree or a layer,
//! whatever their size, and damaged blobs are faults naming the image, the path and what
//! differs, and `--repair` restores what the image says. Hostile images that fail to unpack
//! leave no work area (D11), and a layer larger than its manifest declares is cut off as
//! soon as it passes that size (D14).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::support::{json, run, service, stderr, stdout, verify_ok, Env};

fn registry(env: &Env) -> Option<(String, Command)> {
    let reg = service("LPMX_TEST_REGISTRY")?;
    let mut c = env.cmd();
    c.env("LPMX_INSECURE_REGISTRIES", &reg);
    Some((reg, c))
}

fn cache(env: &Env) -> PathBuf {
    env.path("cache/lpmx")
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces `p` by a new file (a new inode, as an attacker's rename would make) with
/// `content`, executable, after giving the owner write access to its directory: the owner
/// simulating what a group member could do to a writable cache.
fn swap(p: &Path, content: &[u8]) {
    let dir = p.parent().unwrap();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700)).unwrap();
    let tmp = dir.join(".swap");
    std::fs::write(&tmp, content).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

fn verify(env: &Env, extra: &[&str], reg: &str) -> (i32, String) {
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", reg)
        .args(["cache", "verify"])
        .args(extra));
    (
        out.status.code().unwrap(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// Pulls `{reg}/lpmx/one`, builds its tree (a run), and returns the image name, its
/// manifest hex and its one layer's hex.
fn pulled_and_run(env: &Env) -> Option<(String, String, String, String)> {
    let (reg, mut c) = registry(env)?;
    let image = format!("{reg}/lpmx/one");
    let out = run(c.args(["pull", "--json", &image]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rec = json(&out)[0].clone();
    let hex_of = |v: &serde_json::Value| {
        v.as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let manifest = hex_of(&rec["manifest"]);
    let layer = hex_of(&rec["layers"][0]["digest"]);
    let out = run(env.cmd().args(["run", &image, "cat", "/etc/passwd"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    Some((reg, image, manifest, layer))
}

#[test]
fn swapped_tree_and_layer_files_are_faults_and_repair_restores_them() {
    let env = Env::new();
    let Some((reg, image, manifest, layer)) = pulled_and_run(&env) else {
        return;
    };
    let tree = cache(&env).join("trees-v1").join(&manifest).join("root");
    let layer_root = cache(&env).join("layers-v1").join(&layer).join("root");
    let passwd = std::fs::read(tree.join("etc/passwd")).unwrap();
    let group = std::fs::read(layer_root.join("etc/group")).unwrap();
    let (code, text) = verify(&env, &[], &reg);
    assert_eq!(code, 0, "clean before the attack: {text}");

    // The attack of D3: the tree's /bin/id (a symlink to busybox) becomes a script...
    swap(&tree.join("bin/id"), b"#!/bin/sh\necho pwned\n");
    let out = run(env.cmd().args(["run", &image, "id"]));
    assert!(
        stdout(&out).contains("pwned"),
        "the swap works as the issue says"
    );
    // ...a tree file is swapped for one of the same size, and so is a layer file.
    let mut same = passwd.clone();
    same[0] ^= 0x20;
    swap(&tree.join("etc/passwd"), &same);
    let mut same = group.clone();
    same[0] ^= 0x20;
    swap(&layer_root.join("etc/group"), &same);

    let (code, text) = verify(&env, &[], &reg);
    assert_eq!(code, 1, "faults: {text}");
    let fault = |needle: &str, what: &str| {
        assert!(
            text.lines().any(|l| l.starts_with("FAULT")
                && l.contains(needle)
                && l.contains(what)
                && l.contains(&image)),
            "a fault naming {image}, {needle} and {what:?}: {text}"
        );
    };
    fault("/bin/id", "a file, its layer 1 says a symlink");
    fault("/etc/passwd", "content differs");
    fault("/etc/group", "content differs");
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("layers-v1/{layer}")) && l.contains("/etc/group")),
        "the layer swap is named as the layer's: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("trees-v1/{manifest}")) && l.contains("/etc/passwd")),
        "the tree swap is named as the tree's: {text}"
    );
    assert!(text.contains("--repair` fixes them"), "{text}");

    let (code, text) = verify(&env, &["--repair"], &reg);
    assert_eq!(code, 0, "repaired: {text}");
    let (code, text) = verify(&env, &[], &reg);
    assert_eq!(code, 0, "clean after the repair: {text}");
    let out = run(env.cmd().args(["run", &image, "id", "-u"]));
    assert_eq!(stdout(&out).trim(), unsafe { libc::getuid() }.to_string());
    // The image's own content again (a run's /etc/passwd and /etc/group gain the user).
    assert_eq!(std::fs::read(tree.join("etc/passwd")).unwrap(), passwd);
    assert_eq!(std::fs::read(layer_root.join("etc/group")).unwrap(), group);
    let out = run(env.cmd().args(["run", &image, "cat", "/etc/passwd"]));
    assert!(out.stdout.starts_with(&passwd), "{}", stdout(&out));
}

#[test]
fn damaged_blobs_are_faults_and_repair_fetches_them_again() {
    let env = Env::new();
    let Some((reg, image, manifest, layer)) = pulled_and_run(&env) else {
        return;
    };
    let blobs = cache(&env).join("blobs-v1");
    let layer_blob = blobs.join(&layer);
    assert!(layer_blob.is_file(), "the pull kept the layer's blob");
    let mut bytes = std::fs::read(&layer_blob).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    swap(&layer_blob, &bytes);
    let manifest_blob = blobs.join(&manifest);
    let mut bytes = std::fs::read(&manifest_blob).unwrap();
    bytes.push(b' ');
    swap(&manifest_blob, &bytes);

    let (code, text) = verify(&env, &[], &reg);
    assert_eq!(code, 1, "{text}");
    for (path, what) in [
        (format!("blobs-v1/{layer}:"), "blob content hashes to"),
        (format!("blobs-v1/{manifest}:"), "its content hashes to"),
        (format!("layers-v1/{layer}:"), "its blob is damaged"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("FAULT") && l.contains(&path) && l.contains(what)),
            "a fault at {path} saying {what:?}: {text}"
        );
    }
    let (code, text) = verify(&env, &["--repair"], &reg);
    assert_eq!(code, 0, "{text}");
    assert_eq!(verify(&env, &[], &reg).0, 0);
    let out = run(env.cmd().args(["run", &image, "true"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// One member of a hand-made layer.
enum Member<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
}

fn tar_of(members: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        match m {
            Member::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Member::File(p, data) => {
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// An OCI layout (`DIR`, tag `t`) with one uncompressed layer; the manifest declares
/// `declared` as its size (the truth when None) and the config `diff_id` (the truth when
/// None), so a hostile image can lie about either.
fn layout(dir: &Path, layer: &[u8], declared: Option<u64>, diff_id: Option<&str>) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = hex(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        format!("sha256:{h}")
    };
    let ld = put(layer);
    let diff = diff_id.map(String::from).unwrap_or_else(|| ld.clone());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff]}, "config": {},
    }))
    .unwrap();
    let cd = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld,
                    "size": declared.unwrap_or(layer.len() as u64)}],
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                           "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "t"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    ld
}

fn entries(p: &Path) -> Vec<String> {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// 2,040 nested directories: each name fits the 4,095 bytes a tar member may have, but
/// below the cache's work area the real path is past PATH_MAX and the depth past the
/// 1,024 descriptors a process may hold, so removing it by path (or by std's recursion,
/// one descriptor per level) fails. The lie in the config makes the pull fail after the
/// whole tree is unpacked.
#[test]
fn a_deep_hostile_image_fails_and_leaves_no_work_area() {
    let env = Env::new();
    let mut members = Vec::new();
    let mut p = String::new();
    let mut names = Vec::new();
    for _ in 0..2040 {
        if !p.is_empty() {
            p.push('/');
        }
        p.push('d');
        names.push(p.clone());
    }
    for n in &names {
        members.push(Member::Dir(n));
    }
    let deepest = format!("{p}/f");
    members.push(Member::File(&deepest, &[7u8; 4096]));
    let tar = tar_of(&members);
    let lie = format!("sha256:{}", "0".repeat(64));
    let image = format!("oci:{}:t", env.path("deep").display());
    layout(&env.path("deep"), &tar, None, Some(&lie));
    let out = run(env.cmd().args(["pull", &image]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("uncompressed") && err.contains(&lie),
        "names the mismatch: {err}"
    );
    assert!(err.len() < 2000, "a clear error, not a 4 KB path: {err}");
    assert_eq!(
        entries(&cache(&env).join("tmp-v1")),
        Vec::<String>::new(),
        "no work area left"
    );
    assert!(entries(&cache(&env).join("layers-v1")).is_empty());

    // The same tree with an honest config pulls, and verify proves it, by descriptor.
    let honest = env.path("honest");
    layout(&honest, &tar, None, None);
    let image = format!("oci:{}:t", honest.display());
    let out = run(env.cmd().args(["pull", &image]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    verify_ok(&env);
    // Its tree cannot be built by path: the run fails, and leaves no work area either.
    let out = run(env.cmd().args(["run", &image, "true"]));
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(entries(&cache(&env).join("tmp-v1")), Vec::<String>::new());
}

#[test]
fn prune_removes_stale_work_areas() {
    let env = Env::new();
    let out = run(env.cmd().args(["cache", "info"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tmp = cache(&env).join("tmp-v1");
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
    // A name of a live process of this host (pid 1), and one of no known scheme.
    let stale = [format!("{}.1.0", host.trim()), "Zq81xk".to_string()];
    let fresh = tmp.join("fresh-one");
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    for name in &stale {
        let p = tmp.join(name);
        std::fs::create_dir_all(p.join("root/a/b")).unwrap();
        std::fs::File::create(p.join("root/a/b/blob"))
            .unwrap()
            .write_all(&[1; 10000])
            .unwrap();
        for q in [p.join("root"), p.clone()] {
            std::fs::File::open(&q)
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
    }
    std::fs::create_dir_all(fresh.join("root")).unwrap();
    let out = run(env.cmd().args(["cache", "prune"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        entries(&tmp),
        vec!["fresh-one".to_string()],
        "stale work areas removed"
    );
}

/// A 4 MB layer whose manifest declares 1,000 bytes: the pull stops reading once 1,000 bytes
/// are passed, and says so with both sizes.
#[test]
fn a_layer_larger_than_declared_is_cut_off_at_its_declared_size() {
    let env = Env::new();
    let mut x: u32 = 1;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let tar = tar_of(&[Member::File("big", &noise)]);
    let dir = env.path("liar");
    let digest = layout(&dir, &tar, Some(1000), None);
    let started = std::time::Instant::now();
    let out = run(env
        .cmd()
        .args(["pull", &format!("oci:{}:t", dir.display())]));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(&digest)
            && err.contains("larger than its manifest declares")
            && err.contains("1000 bytes declared"),
        "{err}"
    );
    let received: u64 = err
        .split(" received")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("names the size received: {err}"));
    assert!(
        received > 1000 && received <= 1000 + (1 << 20),
        "stopped within one read of the declared size, not at the blob's {} bytes: {received}",
        tar.len()
    );
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    assert!(entries(&cache(&env).join("layers-v1")).is_empty());
    assert!(entries(&cache(&env).join("tmp-v1")).is_empty());
    assert!(!cache(&env)
        .join("blobs-v1")
        .join(digest.trim_start_matches("sha256:"))
        .exists());
}
