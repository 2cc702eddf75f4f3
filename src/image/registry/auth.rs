//! Authentication: Bearer tokens fetched for a challenge, Basic credentials, and the
//! credentials of the Docker config (inline `auths`, `credHelpers`, `credsStore`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;

use super::{Client, Error, Result};
use crate::image::reference::{Remote, DOCKER_HUB};

#[derive(Clone)]
pub(super) struct Token {
    pub(super) value: String,
    pub(super) expires: Instant,
}

/// Credentials for one registry, as `docker login` stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Client {
    pub(super) fn basic_for(&self, r: &Remote) -> Option<&Credentials> {
        self.credentials.get(&r.registry).or_else(|| {
            // `docker login` on Docker Hub stores its credentials under this historic key.
            (r.registry == DOCKER_HUB)
                .then(|| self.credentials.get(DOCKER_HUB_INDEX))
                .flatten()
        })
    }

    /// Answers a 401: fetches a Bearer token for the challenge's realm, or checks that Basic
    /// credentials exist for a Basic challenge.
    pub(super) fn authenticate(
        &self,
        r: &Remote,
        challenge: &str,
        key: &(String, String),
    ) -> Result<()> {
        let auth_err = |why: String| Error::Auth {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            why,
        };
        let (scheme, params) = parse_challenge(challenge);
        let creds = self.basic_for(r);
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| auth_err("Bearer challenge without a realm".into()))?;
                // A login check (no repository) asks for a token of no particular scope.
                let scope = params
                    .get("scope")
                    .cloned()
                    .or_else(|| (!r.repository.is_empty()).then(|| Self::scope(r)));
                let mut query: Vec<(&str, String)> =
                    scope.map(|s| ("scope", s)).into_iter().collect();
                if let Some(s) = params.get("service") {
                    query.push(("service", s.clone()));
                }
                // The token service is as prone to 503s and rate limits as the registry.
                let resp = self.with_retries(&r.registry, realm, &|| {
                    let mut req = self.http.get(realm.as_str()).query(&query);
                    if let Some(c) = creds {
                        req = req.basic_auth(&c.user, Some(&c.password));
                    }
                    req.send()
                })?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    let whose = if creds.is_some() {
                        "refused the stored credentials"
                    } else {
                        "wants credentials and none are stored"
                    };
                    return Err(auth_err(format!(
                        "token service {realm} answered {status}: it {whose}"
                    )));
                }
                if !status.is_success() {
                    // Not a credentials problem: say what the token service answered.
                    return Err(Error::Status {
                        registry: r.registry.clone(),
                        url: realm.clone(),
                        status,
                        body: resp.text().unwrap_or_default(),
                    });
                }
                let body: serde_json::Value = resp
                    .json()
                    .map_err(|e| auth_err(format!("token service {realm} sent no JSON: {e}")))?;
                let value = body["token"]
                    .as_str()
                    .or(body["access_token"].as_str())
                    .ok_or_else(|| auth_err(format!("token service {realm} sent no token")))?
                    .to_string();
                // Renew a little early so a token never expires between check and use.
                let ttl = body["expires_in"].as_u64().unwrap_or(60).max(10);
                let expires = Instant::now() + Duration::from_secs(ttl.saturating_sub(5));
                self.tokens
                    .lock()
                    .unwrap()
                    .insert(key.clone(), Token { value, expires });
                Ok(())
            }
            "basic" if creds.is_some() => {
                if self.basic.lock().unwrap().insert(r.registry.clone()) {
                    Ok(())
                } else {
                    Err(auth_err("the stored credentials were refused".into()))
                }
            }
            "basic" => Err(auth_err(
                "Basic authentication is required and no credentials are stored".into(),
            )),
            _ => Err(auth_err(format!("unsupported challenge {challenge:?}"))),
        }
    }
}

/// Splits `Bearer realm="https://auth",service="x",scope="repository:a:pull"`.
pub fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, remaining) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        params.insert(k, v);
        rest = remaining.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    (scheme.to_string(), params)
}

/// The key `docker login` uses for Docker Hub, and the server address its credential helpers
/// are asked about.
const DOCKER_HUB_INDEX: &str = "https://index.docker.io/v1/";

/// How long a credential helper may take (some fetch tokens over the network).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the Docker config yields for a registry: credentials by registry host, and what the
/// caller should tell the user (a credential helper missing or failing, an unreadable config).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DockerCredentials {
    pub credentials: HashMap<String, Credentials>,
    pub warnings: Vec<String>,
}

/// The parts of a Docker `config.json` that concern credentials. Keys are registry hosts as
/// Docker's `ConvertToHostname` makes them (`https://ghcr.io/` is `ghcr.io`), with Docker
/// Hub's aliases (`https://index.docker.io/v1/`, `registry-1.docker.io`) as `docker.io`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// Inline `auths` entries.
    pub auths: HashMap<String, Credentials>,
    /// `credHelpers`: a helper name per registry, run as `docker-credential-<name>`.
    pub cred_helpers: HashMap<String, String>,
    /// `credsStore`: the helper for every registry not in `cred_helpers`.
    pub creds_store: Option<String>,
}

/// Credentials for `registry` from `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`,
/// both looked up in `env`, as Docker finds them: the registry's `credHelpers` entry, else the
/// `credsStore`, else the inline `auths` entry. A helper is run with `env` as its environment
/// and found on `env`'s PATH; one that is missing or fails gives no credentials and a warning.
/// Only the helper for `registry` is run; `auths` entries of other registries come along.
pub fn docker_credentials(env: &BTreeMap<String, String>, registry: &str) -> DockerCredentials {
    match docker_config_path(env) {
        Some(path) => credentials_in(&path, "Docker config", env, registry),
        None => DockerCredentials::default(),
    }
}

/// What `docker_credentials` finds, then, for a registry the Docker config has nothing for,
/// what `podman login`, `skopeo login` and `buildah login` wrote: the files of
/// containers-auth.json(5), in its order (`$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `$HOME/.config/containers/auth.json`), the first
/// with an entry winning. They share Docker's format (`auths`, `credHelpers`).
pub fn registry_credentials(env: &BTreeMap<String, String>, registry: &str) -> DockerCredentials {
    let mut found = docker_credentials(env, registry);
    let host = config_host(registry);
    let files = [
        env.get("REGISTRY_AUTH_FILE").map(PathBuf::from),
        env.get("XDG_RUNTIME_DIR")
            .map(|d| Path::new(d).join("containers/auth.json")),
        env.get("HOME")
            .map(|h| Path::new(h).join(".config/containers/auth.json")),
    ];
    for path in files.into_iter().flatten() {
        if found.credentials.contains_key(&host) {
            break;
        }
        let more = credentials_in(&path, "containers auth file", env, registry);
        found.warnings.extend(more.warnings);
        for (k, v) in more.credentials {
            found.credentials.entry(k).or_insert(v);
        }
    }
    found
}

/// The credentials one Docker-format file gives for `registry` (see
/// [`DockerConfig::credentials_for`]); a missing file gives none, a bad one a warning.
fn credentials_in(
    path: &Path,
    what: &str,
    env: &BTreeMap<String, String>,
    registry: &str,
) -> DockerCredentials {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DockerCredentials::default(),
        Err(e) => {
            return DockerCredentials {
                credentials: HashMap::new(),
                warnings: vec![format!(
                    "cannot read the {what} {}: {e}; going without its registry credentials",
                    path.display()
                )],
            }
        }
    };
    match parse_docker_config(&text) {
        Ok(config) => config.credentials_for(registry, env),
        Err(e) => DockerCredentials {
            credentials: HashMap::new(),
            warnings: vec![format!(
                "the {what} {} is not valid JSON ({e}); going without its registry credentials",
                path.display()
            )],
        },
    }
}

/// The Docker config file `docker login` writes: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub fn docker_config_path(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    env.get("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| {
            env.get("HOME")
                .map(|h| std::path::Path::new(h).join(".docker"))
        })
        .map(|d| d.join("config.json"))
}

/// Stores (or with `None` removes) a registry's `auths` entry in a Docker config file, keeping
/// everything else in it; written to a temporary file, mode 0600, and renamed into place.
pub fn store_credentials(
    path: &std::path::Path,
    registry: &str,
    creds: Option<&Credentials>,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut v: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            std::io::Error::other(format!(
                "{}: not valid JSON ({e}); fix or move it",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e),
    };
    if !v["auths"].is_object() {
        v["auths"] = serde_json::json!({});
    }
    // Docker files Docker Hub under its historic index address.
    let key = if registry == DOCKER_HUB {
        DOCKER_HUB_INDEX.to_string()
    } else {
        registry.to_string()
    };
    let auths = v["auths"].as_object_mut().expect("made an object above");
    match creds {
        Some(c) => {
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.user, c.password));
            auths.insert(key, serde_json::json!({ "auth": auth }));
        }
        None => {
            auths.remove(&key);
        }
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
    };
    f.write_all(
        serde_json::to_string_pretty(&v)
            .expect("serializes")
            .as_bytes(),
    )?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Reads the credential parts of a Docker `config.json`; entries it cannot use are skipped.
pub fn parse_docker_config(text: &str) -> Result<DockerConfig, String> {
    let v = serde_json::from_str::<serde_json::Value>(text).map_err(|e| e.to_string())?;
    let mut config = DockerConfig::default();
    for (key, entry) in v["auths"].as_object().into_iter().flatten() {
        let decoded = entry["auth"]
            .as_str()
            .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let pair = decoded
            .as_deref()
            .and_then(|d| d.split_once(':'))
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .or_else(|| {
                Some((
                    entry["username"].as_str()?.to_string(),
                    entry["password"].as_str()?.to_string(),
                ))
            });
        let Some((user, password)) = pair else {
            continue;
        };
        let host = config_host(key);
        // Of several keys naming Docker Hub, Docker uses the one `docker login` writes.
        if key == DOCKER_HUB_INDEX || !config.auths.contains_key(&host) {
            config.auths.insert(host, Credentials { user, password });
        }
    }
    for (key, helper) in v["credHelpers"].as_object().into_iter().flatten() {
        if let Some(helper) = helper.as_str().filter(|h| !h.is_empty()) {
            config
                .cred_helpers
                .insert(config_host(key), helper.to_string());
        }
    }
    config.creds_store = v["credsStore"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from);
    Ok(config)
}

/// The registry host a Docker config key names: no scheme, no path, Docker Hub as `docker.io`.
fn config_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    match k.split('/').next().unwrap_or(k) {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        host => host.to_string(),
    }
}

impl DockerConfig {
    /// The credentials Docker would use for `registry` (see [`docker_credentials`]).
    pub fn credentials_for(
        &self,
        registry: &str,
        env: &BTreeMap<String, String>,
    ) -> DockerCredentials {
        let host = config_host(registry);
        let mut out = DockerCredentials {
            credentials: self.auths.clone(),
            warnings: Vec::new(),
        };
        let Some(helper) = self.cred_helpers.get(&host).or(self.creds_store.as_ref()) else {
            return out;
        };
        // With a helper configured Docker asks only the helper, whatever `auths` holds.
        out.credentials.remove(&host);
        let server = if host == DOCKER_HUB {
            DOCKER_HUB_INDEX
        } else {
            &host
        };
        match run_credential_helper(helper, server, env) {
            Ok(Some(c)) => {
                out.credentials.insert(host, c);
            }
            Ok(None) => {}
            Err(why) => out.warnings.push(format!(
                "{why}; going without credentials for {host} (the Docker config names this helper)"
            )),
        }
        out
    }
}

/// Runs `docker-credential-<helper> get` with `server` on stdin, as Docker does. `Ok(None)` is
/// the helper saying it has nothing for `server`; `Err` says what went wrong.
fn run_credential_helper(
    helper: &str,
    server: &str,
    env: &BTreeMap<String, String>,
) -> Result<Option<Credentials>, String> {
    let program = format!("docker-credential-{helper}");
    if helper.contains('/') || helper.contains('\0') {
        return Err(format!("credential helper name {helper:?} is not valid"));
    }
    let path = env
        .get("PATH")
        .into_iter()
        .flat_map(|p| p.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(&program))
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("credential helper {program} is not on PATH"))?;
    let mut cmd = std::process::Command::new(&path);
    cmd.arg("get")
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = spawn_retrying_busy(&mut cmd)
        .map_err(|e| format!("cannot run credential helper {}: {e}", path.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Docker writes the address with no newline; a helper that does not read is fine too.
        let _ = stdin.write_all(server.as_bytes());
    }
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "credential helper {program} did not answer within {} s",
                    HELPER_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for credential helper {program}: {e}")),
        }
    };
    // A helper's own children may hold the pipes open: wait for its output only briefly.
    let take = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default())
            .trim()
            .to_string()
    };
    let (stdout, stderr) = (take(stdout), take(stderr));
    if !status.success() {
        // The helpers' protocol: this message on stdout means there is nothing stored.
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(None);
        }
        let said = if stderr.is_empty() { &stdout } else { &stderr };
        let said: String = said.chars().take(300).collect();
        return Err(format!(
            "credential helper {program} failed ({status}) for {server}: {said}"
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&stdout).map_err(|e| {
        format!("credential helper {program} answered for {server} with no JSON: {e}")
    })?;
    let (Some(user), Some(secret)) = (v["Username"].as_str(), v["Secret"].as_str()) else {
        return Err(format!(
            "credential helper {program} answered for {server} without Username and Secret"
        ));
    };
    if user == "<token>" {
        return Err(format!(
            "credential helper {program} holds an identity token for {server}, which lpmx-job cannot use"
        ));
    }
    if user.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        user: user.to_string(),
        password: secret.to_string(),
    }))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Spawns `cmd`, retrying briefly on ETXTBSY: a helper script just written (by a test, by an
/// installer) can be held open for writing by another thread's fork for a moment.
fn spawn_retrying_busy(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn read_in_background(
    pipe: Option<impl Read + Send + 'static>,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.take(1 << 20).read_to_end(&mut out);
            let _ = tx.send(out);
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/alpine:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("Basic", "Registry Realm")
        );
        let (_, p) = parse_challenge("Bearer realm=https://a/t, service=x");
        assert_eq!(
            (p["realm"].as_str(), p["service"].as_str()),
            ("https://a/t", "x")
        );
    }

    #[test]
    fn docker_config_auths() {
        let c = parse_docker_config(
            r#"{"auths":{"127.0.0.1:5001":{"auth":"bHBteDpscG14LXNlY3JldA=="},
                "docker.io":{"auth":"b2xkOm9sZA=="},
                "https://index.docker.io/v1/":{"auth":"dTpw"},
                "https://ghcr.io/":{"username":"a","password":"b"},
                "https://quay.io/v2/":{"auth":"cTpx"},
                "empty.example":{}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.auths["127.0.0.1:5001"],
            Credentials {
                user: "lpmx".into(),
                password: "lpmx-secret".into()
            }
        );
        // Docker Hub under its host; the key `docker login` writes wins over `docker.io`.
        assert_eq!(c.auths["docker.io"].user, "u");
        assert_eq!(c.auths["ghcr.io"].password, "b");
        // A key with a path names its host, as Docker's ConvertToHostname makes it.
        assert_eq!(c.auths["quay.io"].user, "q");
        assert!(!c.auths.contains_key("empty.example"));
        assert_eq!(c.auths.len(), 4);
        assert!(parse_docker_config("not json").is_err());
        // Without helpers, the inline entries are the answer, with nothing to warn about.
        let got = c.credentials_for("docker.io", &BTreeMap::new());
        assert_eq!(got.credentials, c.auths);
        assert!(got.warnings.is_empty());
    }

    // ---------------------------------------------------------------------------------------
    // Credential helpers: tiny shell scripts in a temporary directory that is on the PATH of
    // the `env` map given to `docker_credentials` (not on this process's PATH).

    /// Answers with credentials naming the server address it was given on stdin, and a secret
    /// built from `$SECRET_PREFIX`, which only the `env` map has.
    const HELPER_ECHO: &str = r#"#!/bin/sh
[ "$1" = get ] || exit 2
read -r server || :
case "$server" in
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"hubuser","Secret":"hubsecret"}' ;;
  nothing.example) echo 'credentials not found in native keychain'; exit 1 ;;
  token.example) echo '{"Username":"<token>","Secret":"refresh"}' ;;
  *) printf '{"Username":"user-%s","Secret":"%s-%s"}\n' "$server" "$SECRET_PREFIX" "$server" ;;
esac
"#;

    const HELPER_BROKEN: &str = "#!/bin/sh\necho 'helper exploded' >&2\nexit 3\n";

    struct HelperEnv {
        _dir: tempfile::TempDir,
        env: BTreeMap<String, String>,
        config: PathBuf,
    }

    fn helper_env(config: &str) -> HelperEnv {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let cfg = dir.path().join("docker");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&cfg).unwrap();
        for (name, text) in [("echo", HELPER_ECHO), ("broken", HELPER_BROKEN)] {
            let p = bin.join(format!("docker-credential-{name}"));
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Not executable: not a helper.
        std::fs::write(bin.join("docker-credential-plainfile"), HELPER_ECHO).unwrap();
        std::fs::write(cfg.join("config.json"), config).unwrap();
        let env = BTreeMap::from([
            ("PATH".to_string(), bin.display().to_string()),
            ("DOCKER_CONFIG".to_string(), cfg.display().to_string()),
            // Only the helper's environment has it: its answer shows where that came from.
            ("SECRET_PREFIX".to_string(), "secret".to_string()),
        ]);
        HelperEnv {
            config: cfg.join("config.json"),
            _dir: dir,
            env,
        }
    }

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn cred_helpers_per_registry() {
        let h = helper_env(
            r#"{"auths":{"inline.example":{"auth":"aXU6aXA="},"helped.example":{"auth":"c3RhbGU6c3RhbGU="}},
                "credHelpers":{"helped.example":"echo","https://broken.example/":"broken",
                               "gone.example":"absent","plain.example":"plainfile",
                               "bad.example":"../echo"}}"#,
        );
        let got = docker_credentials(&h.env, "helped.example");
        assert_eq!(got.warnings, Vec::<String>::new());
        // The helper's answer, for the address it was given; the stale inline entry is ignored.
        assert_eq!(
            got.credentials["helped.example"],
            creds("user-helped.example", "secret-helped.example")
        );
        assert_eq!(got.credentials["inline.example"], creds("iu", "ip"));

        // No helper for it: the inline entry.
        let got = docker_credentials(&h.env, "inline.example");
        assert_eq!(got.credentials["inline.example"], creds("iu", "ip"));
        assert!(got.warnings.is_empty());

        let got = docker_credentials(&h.env, "broken.example");
        assert!(!got.credentials.contains_key("broken.example"));
        let [w] = &got.warnings[..] else {
            panic!("{:?}", got.warnings)
        };
        assert!(
            w.contains("docker-credential-broken")
                && w.contains("helper exploded")
                && w.contains("broken.example"),
            "{w}"
        );

        for (registry, program) in [
            ("gone.example", "docker-credential-absent"),
            ("plain.example", "docker-credential-plainfile"),
        ] {
            let got = docker_credentials(&h.env, registry);
            assert!(!got.credentials.contains_key(registry));
            let [w] = &got.warnings[..] else {
                panic!("{:?}", got.warnings)
            };
            assert!(w.contains(program) && w.contains("not on PATH"), "{w}");
        }
        let got = docker_credentials(&h.env, "bad.example");
        assert!(!got.credentials.contains_key("bad.example"));
        assert_eq!(got.warnings.len(), 1, "{:?}", got.warnings);
    }

    #[test]
    fn creds_store_for_every_other_registry() {
        let h = helper_env(
            r#"{"auths":{"inline.example":{"auth":"aXU6aXA="},"https://index.docker.io/v1/":{}},
                "credsStore":"echo","credHelpers":{"broken.example":"broken"}}"#,
        );
        // Docker Hub is asked for under the key `docker login` uses, and stored as docker.io.
        let got = docker_credentials(&h.env, "docker.io");
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        assert_eq!(got.credentials["docker.io"], creds("hubuser", "hubsecret"));
        // With a store configured, Docker asks the store even when `auths` has an entry.
        let got = docker_credentials(&h.env, "inline.example");
        assert_eq!(
            got.credentials["inline.example"],
            creds("user-inline.example", "secret-inline.example")
        );
        // credHelpers wins over credsStore.
        let got = docker_credentials(&h.env, "broken.example");
        assert!(!got.credentials.contains_key("broken.example"));
        assert_eq!(got.warnings.len(), 1);
        // "Not found" is the helper's normal answer, not a failure.
        let got = docker_credentials(&h.env, "nothing.example");
        assert!(!got.credentials.contains_key("nothing.example"));
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        // An identity token is not a password.
        let got = docker_credentials(&h.env, "token.example");
        assert!(!got.credentials.contains_key("token.example"));
        assert!(
            got.warnings[0].contains("identity token"),
            "{:?}",
            got.warnings
        );
    }

    #[test]
    fn podman_and_skopeo_logins_are_read_after_dockers_in_order() {
        use base64::Engine;
        let d = tempfile::tempdir().unwrap();
        let auth = |u: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:pw"));
        let write = |rel: &str, entries: &[(&str, &str)]| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let auths: serde_json::Map<String, serde_json::Value> = entries
                .iter()
                .map(|(host, user)| (host.to_string(), serde_json::json!({ "auth": auth(user) })))
                .collect();
            std::fs::write(&p, serde_json::json!({ "auths": auths }).to_string()).unwrap();
        };
        write("home/.docker/config.json", &[("d.example", "docker")]);
        write(
            "file.json",
            &[("f.example", "regfile"), ("x.example", "regfile")],
        );
        write(
            "run/containers/auth.json",
            &[
                ("r.example", "runtime"),
                ("x.example", "runtime"),
                ("d.example", "runtime"),
            ],
        );
        write(
            "home/.config/containers/auth.json",
            &[("c.example", "config"), ("r.example", "config")],
        );
        let env = BTreeMap::from([
            (
                "HOME".to_string(),
                d.path().join("home").display().to_string(),
            ),
            (
                "XDG_RUNTIME_DIR".to_string(),
                d.path().join("run").display().to_string(),
            ),
            (
                "REGISTRY_AUTH_FILE".to_string(),
                d.path().join("file.json").display().to_string(),
            ),
        ]);
        let user = |host: &str| {
            registry_credentials(&env, host)
                .credentials
                .get(host)
                .map(|c| c.user.clone())
        };
        assert_eq!(
            user("d.example").as_deref(),
            Some("docker"),
            "Docker's first"
        );
        assert_eq!(user("f.example").as_deref(), Some("regfile"));
        assert_eq!(
            user("x.example").as_deref(),
            Some("regfile"),
            "REGISTRY_AUTH_FILE before the runtime dir"
        );
        assert_eq!(
            user("r.example").as_deref(),
            Some("runtime"),
            "the runtime dir before ~/.config"
        );
        assert_eq!(user("c.example").as_deref(), Some("config"));
        assert_eq!(user("none.example"), None);
        // docker_credentials alone still reads Docker's file only.
        assert!(!docker_credentials(&env, "c.example")
            .credentials
            .contains_key("c.example"));
    }

    #[test]
    fn unusable_docker_configs() {
        let h = helper_env("{not json");
        let got = docker_credentials(&h.env, "docker.io");
        assert!(got.credentials.is_empty());
        assert!(
            got.warnings[0].contains("not valid JSON"),
            "{:?}",
            got.warnings
        );
        std::fs::remove_file(&h.config).unwrap();
        assert_eq!(
            docker_credentials(&h.env, "docker.io"),
            DockerCredentials::default(),
            "no config is no news"
        );
        assert_eq!(
            docker_credentials(&BTreeMap::new(), "docker.io"),
            DockerCredentials::default()
        );
    }
}
