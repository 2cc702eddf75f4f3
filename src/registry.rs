//! A client of the distribution API v2: manifests and blobs, anonymous, Bearer-token and Basic
//! auth, retries with backoff, and blob bodies that resume with a Range request when a
//! connection breaks mid-download.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use crate::reference::{Digest, Remote};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach registry {registry} ({url}): {source}")]
    Connect {
        registry: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry {registry} answered {status} for {url}{}", hint(*status, body))]
    Status {
        registry: String,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("registry {registry} needs credentials for {repository}: {why}; put them in ~/.docker/config.json (`docker login` writes it)")]
    Auth {
        registry: String,
        repository: String,
        why: String,
    },
    #[error("reading {what} from {registry}: {source}")]
    Body {
        registry: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

fn hint(status: StatusCode, body: &str) -> String {
    let detail = body.trim();
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {}", &detail[..detail.len().min(200)])
    };
    let advice = match status {
        StatusCode::NOT_FOUND => " (no such image, tag or blob)",
        StatusCode::TOO_MANY_REQUESTS => " (rate limited; try again later or use a mirror)",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (credentials refused or missing)",
        _ => "",
    };
    format!("{advice}{detail}")
}

/// Manifest media types we accept, most preferred first.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How hard to try before giving up on a registry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    /// Upper bound on any one wait, including a registry's Retry-After.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// Credentials for one registry, as `docker login` stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

pub struct Client {
    http: Http,
    insecure: Vec<String>,
    retry: RetryPolicy,
    credentials: HashMap<String, Credentials>,
    /// Bearer tokens by (registry, scope), reused until they expire.
    tokens: Mutex<HashMap<(String, String), Token>>,
}

pub struct ClientOptions {
    /// `host:port` entries reached over plain HTTP.
    pub insecure: Vec<String>,
    /// PEM files of extra certificate authorities.
    pub ca_files: Vec<std::path::PathBuf>,
    pub retry: RetryPolicy,
    pub credentials: HashMap<String, Credentials>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let mut b = Http::builder()
            .user_agent(concat!("lpmx-job/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // Per read, not per request: a large layer may take long, a silent peer may not.
            .timeout(Duration::from_secs(120))
            // Redirects to blob storage (S3, CDNs) must not carry the registry's token.
            .redirect(reqwest::redirect::Policy::limited(10));
        for f in &opts.ca_files {
            let pem = std::fs::read(f)
                .map_err(|e| Error::Setup(format!("reading CA file {}: {e}", f.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Setup(format!("CA file {}: {e}", f.display())))?;
            b = b.tls_certs_merge(certs);
        }
        let http = b.build().map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Client {
            http,
            insecure: opts.insecure,
            retry: opts.retry,
            credentials: opts.credentials,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn url(&self, r: &Remote, path: &str) -> String {
        let scheme = if self
            .insecure
            .iter()
            .any(|h| h == &r.registry || h == r.api_host())
        {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}/v2/{}/{path}", r.api_host(), r.repository)
    }

    fn scope(r: &Remote) -> String {
        format!("repository:{}:pull", r.repository)
    }

    /// Sends a request built by `build`, adding auth and retrying on connection errors, 5xx
    /// and 429. Returns the first response that is neither.
    fn send(
        &self,
        r: &Remote,
        url: &str,
        build: &dyn Fn(&Http) -> RequestBuilder,
    ) -> Result<Response> {
        let key = (r.registry.clone(), Self::scope(r));
        let mut delay = self.retry.first_delay;
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = build(&self.http);
            if let Some(tok) = self
                .tokens
                .lock()
                .unwrap()
                .get(&key)
                .filter(|t| t.expires > Instant::now())
            {
                req = req.header(AUTHORIZATION, format!("Bearer {}", tok.value));
            } else if let Some(c) = self.basic_for(r) {
                req = req.basic_auth(&c.user, Some(&c.password));
            }
            let resp = match req.send() {
                Ok(resp) => resp,
                Err(e)
                    if attempt < self.retry.attempts
                        && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.retry.max_delay);
                    continue;
                }
                Err(source) => {
                    return Err(Error::Connect {
                        registry: r.registry.clone(),
                        url: url.to_string(),
                        source,
                    })
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                self.authenticate(r, &challenge, &key)?;
                continue;
            }
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                && attempt < self.retry.attempts
            {
                let wait = retry_after(&resp)
                    .unwrap_or(delay)
                    .min(self.retry.max_delay);
                std::thread::sleep(wait);
                delay = (delay * 2).min(self.retry.max_delay);
                continue;
            }
            if !status.is_success() {
                let body = resp.text().unwrap_or_default();
                return Err(Error::Status {
                    registry: r.registry.clone(),
                    url: url.to_string(),
                    status,
                    body,
                });
            }
            return Ok(resp);
        }
    }

    fn basic_for(&self, r: &Remote) -> Option<&Credentials> {
        self.credentials.get(&r.registry).or_else(|| {
            // `docker login` on Docker Hub stores its credentials under this historic key.
            (r.registry == crate::reference::DOCKER_HUB)
                .then(|| self.credentials.get("https://index.docker.io/v1/"))
                .flatten()
        })
    }

    /// Answers a 401: fetches a Bearer token for the challenge's realm, or checks that Basic
    /// credentials exist for a Basic challenge.
    fn authenticate(&self, r: &Remote, challenge: &str, key: &(String, String)) -> Result<()> {
        let auth_err = |why: String| Error::Auth {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            why,
        };
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| auth_err("Bearer challenge without a realm".into()))?;
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| Self::scope(r));
                let mut query = vec![("scope", scope)];
                if let Some(s) = params.get("service") {
                    query.push(("service", s.clone()));
                }
                let mut req = self.http.get(realm).query(&query);
                if let Some(c) = self.basic_for(r) {
                    req = req.basic_auth(&c.user, Some(&c.password));
                }
                let resp = req.send().map_err(|source| Error::Connect {
                    registry: r.registry.clone(),
                    url: realm.clone(),
                    source,
                })?;
                if !resp.status().is_success() {
                    return Err(auth_err(format!(
                        "token service {realm} answered {}",
                        resp.status()
                    )));
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
            "basic" if self.basic_for(r).is_some() => {
                Err(auth_err("the stored credentials were refused".into()))
            }
            "basic" => Err(auth_err(
                "Basic authentication is required and no credentials are stored".into(),
            )),
            _ => Err(auth_err(format!("unsupported challenge {challenge:?}"))),
        }
    }

    /// Fetches a manifest by tag or digest: (bytes, media type as the registry labelled it).
    pub fn manifest(&self, r: &Remote, reference: &str) -> Result<(Vec<u8>, String)> {
        let url = self.url(r, &format!("manifests/{reference}"));
        let accept = MANIFEST_TYPES.join(", ");
        let resp = self.send(r, &url, &|h| h.get(&url).header(ACCEPT, &accept))?;
        let media = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut bytes = Vec::new();
        // A manifest is small; a registry sending more than 4 MiB is not sending a manifest.
        resp.take(4 << 20)
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Body {
                registry: r.registry.clone(),
                what: format!("manifest {reference} of {r}"),
                source,
            })?;
        Ok((bytes, media))
    }

    /// Opens a blob for streaming. The reader resumes with a Range request if the connection
    /// breaks, so the caller sees one uninterrupted stream.
    pub fn blob(&self, r: &Remote, digest: &Digest) -> Result<BlobReader<'_>> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let resp = self.send(r, &url, &|h| h.get(&url))?;
        Ok(BlobReader {
            client: self,
            remote: r.clone(),
            url,
            resp,
            offset: 0,
            resumes: 0,
        })
    }

    /// Lists tags of a repository (`lpmx-job tags`).
    pub fn tags(&self, r: &Remote) -> Result<Vec<String>> {
        let url = self.url(r, "tags/list");
        let resp = self.send(r, &url, &|h| h.get(&url))?;
        let v: serde_json::Value = resp.json().map_err(|e| Error::Body {
            registry: r.registry.clone(),
            what: format!("tag list of {}", r.repository),
            source: std::io::Error::other(e),
        })?;
        Ok(v["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect())
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
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

/// A blob body that resumes where it broke off.
pub struct BlobReader<'a> {
    client: &'a Client,
    remote: Remote,
    url: String,
    resp: Response,
    offset: u64,
    resumes: u32,
}

impl BlobReader<'_> {
    pub fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    fn resume(&mut self) -> std::io::Result<()> {
        let range = format!("bytes={}-", self.offset);
        let url = self.url.clone();
        let resp = self
            .client
            .send(&self.remote, &url, &|h| h.get(&url).header(RANGE, &range))
            .map_err(std::io::Error::other)?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(std::io::Error::other(format!(
                "registry {} cannot resume {} (answered {} to a Range request)",
                self.remote.registry,
                self.url,
                resp.status()
            )));
        }
        self.resp = resp;
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.resp.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if self.resumes < self.client.retry.attempts => {
                    self.resumes += 1;
                    std::thread::sleep(self.client.retry.first_delay * self.resumes);
                    if let Err(again) = self.resume() {
                        return Err(std::io::Error::other(format!(
                            "{e}; resuming failed: {again}"
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Credentials from `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (`auths` entries;
/// credential helpers are not run).
pub fn docker_credentials(
    env: &std::collections::BTreeMap<String, String>,
) -> HashMap<String, Credentials> {
    let dir = env
        .get("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            env.get("HOME")
                .map(|h| std::path::Path::new(h).join(".docker"))
        });
    let Some(dir) = dir else {
        return HashMap::new();
    };
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return HashMap::new();
    };
    parse_docker_config(&text)
}

pub fn parse_docker_config(text: &str) -> HashMap<String, Credentials> {
    let mut out = HashMap::new();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return out;
    };
    let Some(auths) = v["auths"].as_object() else {
        return out;
    };
    for (host, entry) in auths {
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
        if let Some((user, password)) = pair {
            let key = host
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let key = if key.starts_with("index.docker.io") {
                host.as_str()
            } else {
                key.trim_end_matches('/')
            };
            out.insert(key.to_string(), Credentials { user, password });
        }
    }
    out
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
                "https://index.docker.io/v1/":{"auth":"dTpw"},
                "https://ghcr.io/":{"username":"a","password":"b"}}}"#,
        );
        assert_eq!(
            c["127.0.0.1:5001"],
            Credentials {
                user: "lpmx".into(),
                password: "lpmx-secret".into()
            }
        );
        assert_eq!(c["https://index.docker.io/v1/"].user, "u");
        assert_eq!(c["ghcr.io"].password, "b");
        assert!(parse_docker_config("not json").is_empty());
    }
}
