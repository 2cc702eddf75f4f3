//! Pulling from the real registries (plain HTTP, TLS, basic auth) and from local OCI
//! layouts into a private cache, as an ordinary user.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{json, run, service, stderr, Env};

/// The plain-HTTP registry and a command that may reach it.
fn http(env: &Env) -> Option<(String, Command)> {
    let reg = service("LPMX_TEST_REGISTRY")?;
    let mut c = env.cmd();
    c.env("LPMX_INSECURE_REGISTRIES", &reg);
    Some((reg, c))
}

fn cache(env: &Env) -> PathBuf {
    env.path("cache/lpmx")
}

fn layer_root(env: &Env, digest: &str) -> PathBuf {
    cache(env)
        .join("layers-v1")
        .join(digest.trim_start_matches("sha256:"))
        .join("root")
}

fn layer_json(env: &Env, digest: &str) -> serde_json::Value {
    let p = cache(env)
        .join("layers-v1")
        .join(digest.trim_start_matches("sha256:"))
        .join("layer.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Pulls and returns the one image record printed by `--json`.
pub fn pull_ok(mut c: Command, image: &str, extra: &[&str]) -> serde_json::Value {
    let out = run(c.args(["pull", "--json"]).args(extra).arg(image));
    assert_eq!(
        out.status.code(),
        Some(0),
        "pull {image} failed: {}",
        stderr(&out)
    );
    json(&out)[0].clone()
}

fn layers(rec: &serde_json::Value) -> Vec<String> {
    rec["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pulls_a_one_layer_image() {
    let env = Env::new();
    let Some((reg, c)) = http(&env) else { return };
    let rec = pull_ok(c, &format!("{reg}/lpmx/one"), &[]);
    assert_eq!(rec["names"][0], format!("{reg}/lpmx/one:latest"));
    assert_eq!(rec["platform"], "linux/amd64");
    let l = layers(&rec);
    assert_eq!(l.len(), 1);
    let root = layer_root(&env, &l[0]);
    assert!(root.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    // The listing shows it, and a second pull is warm: nothing fetched again.
    let (_, mut c) = http(&env).unwrap();
    let out = run(c.args(["images", "--json"]));
    let images = json(&out);
    assert_eq!(images.as_array().unwrap().len(), 1);
    let (_, mut c) = http(&env).unwrap();
    let out = run(c.args(["pull", &format!("{reg}/lpmx/one")]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !stderr(&out).contains("fetching"),
        "warm pull fetched: {}",
        stderr(&out)
    );
}

#[test]
fn layers_record_whiteouts_and_opaque_dirs() {
    let env = Env::new();
    let Some((reg, c)) = http(&env) else { return };
    let rec = pull_ok(c, &format!("{reg}/lpmx/layers3:latest"), &[]);
    let l = layers(&rec);
    assert_eq!(l.len(), 4, "base and three layers");
    let all: Vec<serde_json::Value> = l.iter().map(|d| layer_json(&env, d)).collect();
    let whiteouts: Vec<&str> = all
        .iter()
        .flat_map(|j| j["stats"]["whiteouts"].as_array().unwrap())
        .filter_map(|v| v.as_str())
        .collect();
    let opaque: Vec<&str> = all
        .iter()
        .flat_map(|j| j["stats"]["opaque_dirs"].as_array().unwrap())
        .filter_map(|v| v.as_str())
        .collect();
    assert!(whiteouts.contains(&"etc/gone.txt"), "{whiteouts:?}");
    assert!(opaque.contains(&"data/old"), "{opaque:?}");
    // Whiteout markers are records, not files.
    for d in &l {
        let root = layer_root(&env, d);
        for e in walkdir::WalkDir::new(&root) {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".wh."),
                "whiteout extracted as a file in {}",
                root.display()
            );
        }
    }
    // Hard links inside a layer stay hard links; symlinks stay as written.
    let l1 = layer_root(&env, &l[1]);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(l1.join("data/hard1")).unwrap().ino(),
        std::fs::metadata(l1.join("data/hard2")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(l1.join("data/abs")).unwrap(),
        Path::new("/data/keep.txt")
    );
    assert_eq!(
        std::fs::read_link(l1.join("data/rel")).unwrap(),
        Path::new("keep.txt")
    );
}

#[test]
fn multi_platform_index_picks_this_host_or_the_asked_platform() {
    let env = Env::new();
    let Some((reg, c)) = http(&env) else { return };
    let rec = pull_ok(c, &format!("{reg}/lpmx/multi"), &[]);
    assert_eq!(rec["platform"], "linux/amd64");
    let arch = std::fs::read_to_string(layer_root(&env, &layers(&rec)[0]).join("arch")).unwrap();
    assert_eq!(arch.trim(), "amd64");
    let (_, c) = http(&env).unwrap();
    let rec = pull_ok(
        c,
        &format!("{reg}/lpmx/multi"),
        &["--platform", "linux/arm64"],
    );
    assert_eq!(rec["platform"], "linux/arm64");
    let arch = std::fs::read_to_string(layer_root(&env, &layers(&rec)[0]).join("arch")).unwrap();
    assert_eq!(arch.trim(), "arm64");
    let (_, mut c) = http(&env).unwrap();
    let out = run(c.args([
        "pull",
        "--platform",
        "linux/s390x",
        &format!("{reg}/lpmx/multi"),
    ]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/ppc64le") && err.contains("--platform"),
        "{err}"
    );
}

#[test]
fn docker_schema2_and_oci_give_the_same_tree() {
    let env = Env::new();
    let Some((reg, c)) = http(&env) else { return };
    let oci = pull_ok(c, &format!("{reg}/lpmx/one"), &[]);
    let (_, c) = http(&env).unwrap();
    let v2 = pull_ok(c, &format!("{reg}/lpmx/one-v2s2"), &[]);
    let diff = |r: &serde_json::Value| -> Vec<String> {
        r["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["diff_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(diff(&oci), diff(&v2));
    assert!(
        v2["layers"][0]["media_type"]
            .as_str()
            .unwrap()
            .contains("docker"),
        "{v2}"
    );
}

#[test]
fn pulls_from_an_oci_layout_and_refuses_a_corrupt_blob() {
    let env = Env::new();
    let Some(fixtures) = service("LPMX_TEST_FIXTURES") else {
        return;
    };
    let layout = Path::new(&fixtures).join("oci");
    let rec = pull_ok(env.cmd(), &format!("oci:{}:one", layout.display()), &[]);
    assert!(layer_root(&env, &layers(&rec)[0])
        .join("bin/busybox")
        .is_file());

    // A copy of the layout whose layer blob is damaged: refused, nothing published.
    let bad = env.path("bad-layout");
    let st = Command::new("cp")
        .arg("-r")
        .arg(&layout)
        .arg(&bad)
        .status()
        .unwrap();
    assert!(st.success());
    let env2 = Env::new();
    let layer = layers(&rec)[0].clone();
    let blob = bad
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let out = run(env2
        .cmd()
        .args(["pull", &format!("oci:{}:one", bad.display())]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(layer.trim_start_matches("sha256:").get(..12).unwrap()),
        "names the layer: {err}"
    );
    assert!(
        !layer_root(&env2, &layer).exists(),
        "a corrupt layer must not be published"
    );
    let tmp = env2.path("cache/lpmx/tmp-v1");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "work areas cleaned up"
    );
    let out = run(env2.cmd().args(["images", "--json"]));
    assert_eq!(json(&out).as_array().unwrap().len(), 0);
}

/// Trusts the test CA for `reg` in this test's user config file.
fn trust_ca(env: &Env, reg: &str) {
    let ca = service("LPMX_TEST_CA").unwrap();
    env.write(
        "config/lpmx/config.yaml",
        &format!("registries:\n  \"{reg}\":\n    ca: {ca}\n"),
    );
}

/// The TLS registry with basic auth, trusted, and its user and password.
fn auth_registry(env: &Env) -> Option<(String, String, String)> {
    let reg = service("LPMX_TEST_REGISTRY_AUTH")?;
    trust_ca(env, &reg);
    Some((
        reg,
        service("LPMX_TEST_REGISTRY_USER").unwrap(),
        service("LPMX_TEST_REGISTRY_PASSWORD").unwrap(),
    ))
}

#[test]
fn tls_registry_needs_its_ca() {
    let env = Env::new();
    let Some(reg) = service("LPMX_TEST_REGISTRY_TLS") else {
        return;
    };
    let out = run(env.cmd().args(["pull", &format!("{reg}/lpmx/one")]));
    assert_eq!(
        out.status.code(),
        Some(125),
        "an unknown CA must be refused"
    );
    assert!(stderr(&out).contains(&reg), "{}", stderr(&out));
    trust_ca(&env, &reg);
    pull_ok(env.cmd(), &format!("{reg}/lpmx/one"), &[]);
}

#[test]
fn auth_registry_uses_docker_credentials() {
    let env = Env::new();
    let Some((reg, user, pass)) = auth_registry(&env) else {
        return;
    };
    let out = run(env.cmd().args(["pull", &format!("{reg}/lpmx/one")]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("credentials") && err.contains(&reg), "{err}");
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let dc = env.write(
        "docker/config.json",
        &format!("{{\"auths\":{{\"{reg}\":{{\"auth\":\"{auth}\"}}}}}}"),
    );
    let mut c = env.cmd();
    c.env("DOCKER_CONFIG", dc.parent().unwrap());
    pull_ok(c, &format!("{reg}/lpmx/one"), &[]);
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{user}:nope"));
    std::fs::write(
        &dc,
        format!("{{\"auths\":{{\"{reg}\":{{\"auth\":\"{wrong}\"}}}}}}"),
    )
    .unwrap();
    let env2 = Env::new();
    trust_ca(&env2, &reg);
    let out = run(env2
        .cmd()
        .env("DOCKER_CONFIG", dc.parent().unwrap())
        .args(["pull", &format!("{reg}/lpmx/one")]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
}

/// `skopeo login` (as `podman login` and `buildah login`) writes containers-auth.json(5)
/// files, not Docker's: a real login into `$XDG_RUNTIME_DIR/containers/auth.json`, then one
/// into `$REGISTRY_AUTH_FILE`, each read by lpmx-job with no Docker config at all.
#[test]
fn auth_registry_uses_podman_and_skopeo_logins() {
    let env = Env::new();
    let Some((reg, user, pass)) = auth_registry(&env) else {
        return;
    };
    let ca_dir = service("LPMX_TEST_CERT_DIR").unwrap();
    let runtime = env.path("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let login = |extra: &[(&str, &std::path::Path)]| {
        let mut c = Command::new("skopeo");
        c.args([
            "login",
            "--cert-dir",
            &ca_dir,
            "-u",
            &user,
            "--password-stdin",
            &reg,
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", env.path("home"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        for (k, v) in extra {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("skopeo");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pass.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "skopeo login: {}", stderr(&out));
    };
    login(&[]);
    assert!(runtime.join("containers/auth.json").is_file());
    let mut c = env.cmd();
    c.env("XDG_RUNTIME_DIR", &runtime);
    pull_ok(c, &format!("{reg}/lpmx/one"), &[]);

    let env2 = Env::new();
    trust_ca(&env2, &reg);
    let file = env2.path("auth/mine.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    login(&[("REGISTRY_AUTH_FILE", &file)]);
    assert!(file.is_file());
    let out = run(env2.cmd().args(["pull", &format!("{reg}/lpmx/one")]));
    assert_eq!(
        out.status.code(),
        Some(125),
        "no login file named: no credentials"
    );
    let mut c = env2.cmd();
    c.env("REGISTRY_AUTH_FILE", &file);
    pull_ok(c, &format!("{reg}/lpmx/one"), &[]);
}

/// A real docker-registry of this test's own, serving TLS with the certificate sites make
/// the usual way (`openssl req -x509 ... -addext subjectAltName=...`: self-signed and marked
/// CA:TRUE, which WebPKI refuses as a server's own certificate). Killed on drop.
struct SelfSignedRegistry {
    child: std::process::Child,
    addr: String,
    cert: PathBuf,
}

impl Drop for SelfSignedRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn self_signed_registry(env: &Env) -> SelfSignedRegistry {
    let dir = env.path("selfsigned");
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ]));
    assert!(out.status.success());
    let text = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert));
    assert!(
        crate::support::stdout(&text).contains("CA:TRUE"),
        "the usual self-signed certificate is a CA"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("storage").display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry is installed by tests/run.sh");
    let reg = SelfSignedRegistry { child, addr, cert };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(&reg.addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "registry on {} did not start",
            reg.addr
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let src = service("LPMX_TEST_REGISTRY").unwrap();
    let out = run(Command::new("skopeo")
        .args([
            "copy",
            "--insecure-policy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{src}/lpmx/one:latest"))
        .arg(format!("docker://{}/lpmx/one:latest", reg.addr))
        .env("HOME", env.path("home")));
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    reg
}

/// A self-signed CA:TRUE certificate configured as the registry's `ca` is accepted when the
/// registry presents exactly it, as curl --cacert and skopeo --cert-dir accept it; not
/// configured, the refusal says what is wrong and which setting fixes it; configured but
/// reached by a name it does not carry, it is still refused, naming the name.
#[test]
fn a_self_signed_registry_certificate_is_trusted_when_configured() {
    let env = Env::new();
    if service("LPMX_TEST_REGISTRY").is_none() {
        return;
    }
    let reg = self_signed_registry(&env);
    let img = format!("{}/lpmx/one", reg.addr);
    let out = run(env.cmd().args(["pull", &img]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("CA certificate as its own")
            && err.contains(&format!("\"{}\": {{ca: FILE}}", reg.addr)),
        "{err}"
    );
    env.write(
        "config/lpmx/config.yaml",
        &format!(
            "registries:\n  \"{}\":\n    ca: {}\n",
            reg.addr,
            reg.cert.display()
        ),
    );
    pull_ok(env.cmd(), &img, &[]);
    // The same certificate for a name it does not carry.
    let port = reg.addr.rsplit(':').next().unwrap();
    let by_name = format!("localhost:{port}");
    env.write(
        "config/lpmx/config.yaml",
        &format!(
            "registries:\n  \"{by_name}\":\n    ca: {}\n",
            reg.cert.display()
        ),
    );
    let out = run(env.cmd().args(["pull", &format!("{by_name}/lpmx/one")]));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("does not name localhost"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_image_and_dead_registry_are_clear_errors() {
    let env = Env::new();
    let Some((reg, mut c)) = http(&env) else {
        return;
    };
    let out = run(c.args(["pull", &format!("{reg}/lpmx/nope:1")]));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("404") || stderr(&out).contains("no such image"),
        "{}",
        stderr(&out)
    );
    // A port nobody listens on.
    // Held, never listening: refuses every connection, and nothing else can take it.
    let dead_port = crate::support::DeadPort::new();
    let dead = dead_port.addr.clone();
    let out = run(env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &dead)
        .args(["pull", &format!("{dead}/lpmx/one")]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach registry") && err.contains(&dead),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bad_reference_is_a_clear_error() {
    let env = Env::new();
    let out = run(env.cmd().args(["pull", "Bad/Name"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("lowercase"), "{}", stderr(&out));
}

#[test]
fn pulls_a_docker_save_archive() {
    let env = Env::new();
    let Some(fixtures) = service("LPMX_TEST_FIXTURES") else {
        return;
    };
    let Some((reg, c)) = http(&env) else { return };
    let archive = Path::new(&fixtures).join("one.docker.tar");
    let from_archive = pull_ok(
        env.cmd(),
        &format!("docker-archive:{}", archive.display()),
        &[],
    );
    let from_registry = pull_ok(c, &format!("{reg}/lpmx/one"), &[]);
    assert_eq!(
        from_archive["layers"][0]["diff_id"],
        from_registry["layers"][0]["diff_id"]
    );
    assert_eq!(
        from_archive["config"], from_registry["config"],
        "the same image config"
    );
    assert!(
        layer_root(&env, from_archive["layers"][0]["digest"].as_str().unwrap())
            .join("bin/busybox")
            .is_file()
    );
    // A truncated archive is refused without publishing anything.
    let env2 = Env::new();
    let bytes = std::fs::read(&archive).unwrap();
    let cut = env2.path("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = run(env2
        .cmd()
        .args(["pull", &format!("docker-archive:{}", cut.display())]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("cut.tar"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(env2.path("cache/lpmx/layers-v1"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn bars_on_a_terminal_lines_in_a_log() {
    let env = Env::new();
    let Some((reg, mut c)) = http(&env) else {
        return;
    };
    let out = run(c.args(["pull", &format!("{reg}/lpmx/layers3")]));
    let log = stderr(&out);
    assert!(
        !log.contains('\u{1b}') && !log.contains('\r'),
        "no terminal control codes in a log: {log:?}"
    );
    let fetching = log.lines().filter(|l| l.contains(": fetching ")).count();
    let done = log.lines().filter(|l| l.contains(": done, ")).count();
    assert_eq!(
        (fetching, done),
        (4, 4),
        "a line per layer when it starts and when it ends: {log}"
    );
    assert!(
        log.lines().all(|l| l.starts_with("lpmx-job[")),
        "every line names the node: {log}"
    );
    // Under a pseudo-terminal (util-linux `script`), bars instead.
    let env2 = Env::new();
    let cmd = format!(
        "env HOME={} XDG_CACHE_HOME={} LPMX_SITE_CONFIG=/nonexistent LPMX_INSECURE_REGISTRIES={reg} {} pull {reg}/lpmx/layers3",
        env2.path("home").display(),
        env2.path("cache").display(),
        crate::support::bin().display()
    );
    let out = run(Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm"));
    assert_eq!(out.status.code(), Some(0));
    let tty = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        tty.contains('█') || tty.contains('░'),
        "a progress bar on a terminal: {tty:?}"
    );
}

#[test]
fn a_group_shared_cache_is_setgid_and_group_writable() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let Some((reg, mut c)) = http(&env) else {
        return;
    };
    let gid = unsafe { libc::getgid() };
    let out = run(c
        .env("LPMX_CACHE_GROUP", gid.to_string())
        .args(["pull", &format!("{reg}/lpmx/layers3")]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let root = cache(&env);
    for d in ["", "layers-v1", "blobs-v1", "locks-v1", "tmp-v1"] {
        let m = std::fs::metadata(root.join(d)).unwrap();
        assert_eq!(
            m.mode() & 0o3070,
            0o3070,
            "{d}: setgid, sticky and group rwx, got {:o}",
            m.mode()
        );
        assert_eq!(m.gid(), gid);
    }
    // Published entries are the group's to read, no one's to write (issue 11).
    for e in walkdir::WalkDir::new(root.join("layers-v1")).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_symlink() {
            continue;
        }
        let mode = e.metadata().unwrap().mode();
        let want = if e.file_type().is_dir() { 0o050 } else { 0o040 };
        assert_eq!(
            mode & 0o070,
            mode & 0o070 | want,
            "{} group-readable",
            e.path().display()
        );
        assert_eq!(
            mode & 0o022,
            0,
            "{} writable by group or others: {mode:o}",
            e.path().display()
        );
    }
    // A group the user is not in is refused, naming it.
    let env2 = Env::new();
    let out = run(env2
        .cmd()
        .env("LPMX_CACHE_GROUP", "root")
        .args(["cache", "info"]));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("cache.group root") && stderr(&out).contains("not a member"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn login_checks_and_stores_credentials_and_logout_removes_them() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let Some((reg, user, pass)) = auth_registry(&env) else {
        return;
    };
    let docker = env.path("docker");
    let login = |password: &str| {
        let mut child = env
            .cmd()
            .env("DOCKER_CONFIG", &docker)
            .args(["login", &reg, "-u", &user, "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("wrong");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !docker.join("config.json").exists(),
        "nothing stored after a refusal"
    );
    let out = login(&pass);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = docker.join("config.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut c = env.cmd();
    c.env("DOCKER_CONFIG", &docker);
    pull_ok(c, &format!("{reg}/lpmx/one"), &[]);
    let out = run(env
        .cmd()
        .env("DOCKER_CONFIG", &docker)
        .args(["logout", &reg]));
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(v["auths"].as_object().unwrap().is_empty(), "{v}");
}

#[test]
fn search_lists_a_registry_catalog() {
    let env = Env::new();
    let Some((reg, mut c)) = http(&env) else {
        return;
    };
    let out = run(c.args(["search", "--registry", &reg, "lpmx/one"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = crate::support::stdout(&out);
    assert!(
        text.lines().any(|l| l == format!("{reg}/lpmx/one")),
        "{text}"
    );
    assert!(!text.contains("layers3"), "filtered by the term: {text}");
}

#[test]
fn a_warm_pull_of_a_local_layout_rewrites_nothing() {
    let env = Env::new();
    let Some(fixtures) = service("LPMX_TEST_FIXTURES") else {
        return;
    };
    let image = format!("oci:{}:one", Path::new(&fixtures).join("oci").display());
    pull_ok(env.cmd(), &image, &[]);
    let records: Vec<_> = std::fs::read_dir(cache(&env).join("images-v1"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    assert_eq!(records.len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = run(env.cmd().args(["pull", &image]));
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("fetching"), "{}", stderr(&out));
    for (p, t) in records {
        assert_eq!(
            std::fs::metadata(&p).unwrap().modified().unwrap(),
            t,
            "{} rewritten",
            p.display()
        );
    }
}

/// `cache info` counts what `images` lists: the `.used` stamps beside the records are not
/// images (it said 2 for one image, and 1 after `rmi` and `prune` had removed it).
#[test]
fn cache_info_counts_images_as_images_lists_them() {
    let env = Env::new();
    let Some((reg, _)) = http(&env) else {
        return;
    };
    let cmd = || {
        let mut c = env.cmd();
        c.env("LPMX_INSECURE_REGISTRIES", &reg);
        c
    };
    let count = || -> u64 {
        let out = run(cmd().args(["cache", "info", "--json"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        json(&out)["usage"]["image_count"].as_u64().unwrap()
    };
    let img = format!("{reg}/lpmx/one");
    assert_eq!(run(cmd().args(["-q", "pull", &img])).status.code(), Some(0));
    // A run stamps the image's last use (`HEX.used` beside `HEX.json`).
    assert_eq!(
        run(cmd().args(["run", &img, "true"])).status.code(),
        Some(0)
    );
    let stamps = std::fs::read_dir(cache(&env).join("images-v1"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".used"))
        .count();
    assert_eq!(stamps, 1, "the run left its stamp");
    let listed = json(&run(cmd().args(["images", "--json"])));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(count(), 1);
    assert_eq!(run(cmd().args(["rmi", &img])).status.code(), Some(0));
    assert_eq!(run(cmd().args(["cache", "prune"])).status.code(), Some(0));
    assert_eq!(count(), 0);
}

/// An image whose later layer deletes a file with a name that is not UTF-8 (umoci writes the
/// whiteout `.wh.gone-\xff`, as podman does): it pulls, the file is gone from the root, its
/// neighbours stay, and `cache verify` proves the result.
#[test]
fn a_whiteout_of_a_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let Some(fixtures) = service("LPMX_TEST_FIXTURES") else {
        return;
    };
    let layout = env.path("layout");
    let ok = |c: &mut Command| {
        let out = run(c);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    ok(Command::new("cp")
        .arg("-a")
        .arg(Path::new(&fixtures).join("oci"))
        .arg(&layout));
    let bundle = env.path("bundle");
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    ok(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image("one")])
        .arg(&bundle));
    let odd = std::ffi::OsStr::from_bytes(b"gone-\xff");
    let dir = bundle.join("rootfs/nu");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(odd), "bytes\n").unwrap();
    std::fs::write(dir.join("keep"), "kept\n").unwrap();
    ok(Command::new("umoci")
        .args(["repack", "--image", &image("nu1")])
        .arg(&bundle));
    // The next layer is made on top of nu1 (a repack diffs against what was unpacked).
    let bundle2 = env.path("bundle2");
    ok(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image("nu1")])
        .arg(&bundle2));
    std::fs::remove_file(bundle2.join("rootfs/nu").join(odd)).unwrap();
    ok(Command::new("umoci")
        .args(["repack", "--image", &image("nu2")])
        .arg(&bundle2));
    let out = run(env
        .cmd()
        .args(["run", &format!("oci:{}", image("nu2")), "ls", "/nu"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(crate::support::stdout(&out), "keep\n");
    // The layer below still has it: the whiteout deleted exactly that name.
    let out = run(env
        .cmd()
        .args(["run", &format!("oci:{}", image("nu1")), "ls", "/nu"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(crate::support::stdout(&out).lines().count(), 2);
    let out = run(env.cmd().args(["cache", "verify"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A config blob past the 16 MiB read cap is refused as too large, naming the digest and the
/// limit, not left to fail its digest check after being read whole.
#[test]
fn a_config_over_the_read_cap_is_refused_as_too_large() {
    use sha2::Digest as _;
    let env = Env::new();
    let Some(fixtures) = service("LPMX_TEST_FIXTURES") else {
        return;
    };
    let layout = env.path("layout");
    let out = run(Command::new("cp")
        .arg("-a")
        .arg(Path::new(&fixtures).join("oci"))
        .arg(&layout));
    assert!(out.status.success());
    let blobs = layout.join("blobs/sha256");
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let one = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "one")
        .unwrap()
        .clone();
    let hex_of = |d: &serde_json::Value| {
        d.as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(hex_of(&one["digest"]))).unwrap())
            .unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blobs.join(hex_of(&manifest["config"]["digest"]))).unwrap(),
    )
    .unwrap();
    config["padding"] = "x".repeat(17 << 20).into();
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.clone().into();
    manifest["config"]["size"] = cs.into();
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let mut entry = one.clone();
    entry["digest"] = md.into();
    entry["size"] = ms.into();
    entry["annotations"]["org.opencontainers.image.ref.name"] = "big".into();
    let mut index = index;
    index["manifests"].as_array_mut().unwrap().push(entry);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let out = run(env
        .cmd()
        .args(["pull", &format!("oci:{}:big", layout.display())]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("config {cd} is larger than 16777216 bytes"))
            && !err.contains("does not match"),
        "{err}"
    );
}
