//! A client of the distribution API v2: manifests and blobs, anonymous, Bearer-token and Basic
//! auth, retries with backoff, and blob bodies that resume with a Range request when a
//! connection breaks mid-download. Credentials come from the Docker config, including
//! credential helpers (`credHelpers`, `credsStore`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_RANGE, LINK, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::StatusCode;

use crate::image::reference::{Digest, Remote, DOCKER_HUB};

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
    /// Said in words with the setting that fixes it (`crate::image::tls::describe_refusal`); the
    /// TLS library's own name for the fault is kept at the end.
    #[error("registry {registry} ({url}): {why}")]
    Certificate {
        registry: String,
        url: String,
        why: String,
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
        // At most 200 bytes, cut on a character boundary: the body may be any UTF-8.
        let mut end = detail.len().min(200);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        format!(": {}", &detail[..end])
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

/// A registry sending more than this for a manifest is not sending a manifest.
const MAX_MANIFEST: u64 = 4 << 20;

/// Pages of a tag list followed before giving up (a registry looping its `Link` headers).
const MAX_TAG_PAGES: usize = 1000;

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
    /// Registries that asked for Basic auth: only they get the stored password, and only
    /// after asking (Docker's habit; a token registry never sees it outside its token service).
    basic: Mutex<std::collections::HashSet<String>>,
}

pub struct ClientOptions {
    /// `host:port` entries reached over plain HTTP.
    pub insecure: Vec<String>,
    /// PEM files of extra certificate authorities.
    pub ca_files: Vec<std::path::PathBuf>,
    pub retry: RetryPolicy,
    /// By registry host (`docker.io` for Docker Hub), as [`docker_credentials`] returns them.
    pub credentials: HashMap<String, Credentials>,
}

/// The host's roots plus the configured CA files' certificates, each also accepted when a
/// registry presents exactly it (see `crate::image::tls`).
fn tls_config(ca_files: &[PathBuf]) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut certs = Vec::new();
    for f in ca_files {
        let pem = std::fs::read(f)
            .map_err(|e| Error::Setup(format!("reading CA file {}: {e}", f.display())))?;
        let before = certs.len();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            certs.push(c.map_err(|e| Error::Setup(format!("CA file {}: {e}", f.display())))?);
        }
        if certs.len() == before {
            return Err(Error::Setup(format!(
                "CA file {}: no PEM certificate in it (\"-----BEGIN CERTIFICATE-----\")",
                f.display()
            )));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = crate::image::tls::Verifier::new(certs, provider.clone())
        .map_err(|e| Error::Setup(format!("TLS set-up: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Setup(format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client> {
        // Fails only when a provider is already installed (a second client): that one is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = Http::builder()
            .user_agent(concat!("lpmx-job/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // Per read, not per request: a large layer may take long, a silent peer may not.
            .timeout(Duration::from_secs(120))
            // Redirects to blob storage (S3, CDNs) must not carry the registry's token; reqwest
            // drops Authorization on a redirect to another host, port or scheme.
            .redirect(reqwest::redirect::Policy::limited(10));
        if !opts.ca_files.is_empty() {
            b = b.tls_backend_preconfigured(tls_config(&opts.ca_files)?);
        }
        let http = b.build().map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Client {
            http,
            insecure: opts.insecure,
            retry: opts.retry,
            credentials: opts.credentials,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(std::collections::HashSet::new()),
        })
    }

    fn is_insecure(&self, r: &Remote) -> bool {
        self.insecure
            .iter()
            .any(|h| h == &r.registry || h == r.api_host())
    }

    fn url(&self, r: &Remote, path: &str) -> String {
        let scheme = if self.is_insecure(r) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/{path}", r.api_host(), r.repository)
    }

    fn scope(r: &Remote) -> String {
        format!("repository:{}:pull", r.repository)
    }

    /// Runs `attempt` until it gives a response that is neither a 5xx nor a 429, retrying
    /// connection errors and timeouts too, with backoff (or the registry's Retry-After).
    /// When the attempts run out, the last response is returned as it is.
    fn with_retries(
        &self,
        registry: &str,
        url: &str,
        attempt: &dyn Fn() -> reqwest::Result<Response>,
    ) -> Result<Response> {
        let mut delay = self.retry.first_delay;
        let mut tries = 0;
        loop {
            tries += 1;
            let last = tries >= self.retry.attempts;
            match attempt() {
                // A certificate the client rejects will be rejected again: no point retrying.
                Err(e)
                    if !last
                        && !is_certificate_error(&e)
                        && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    std::thread::sleep(delay);
                }
                Err(source) => {
                    if let Some(why) = crate::image::tls::describe_refusal(&source, registry) {
                        return Err(Error::Certificate {
                            registry: registry.to_string(),
                            url: url.to_string(),
                            why: format!("{why} ({})", tls_fault(&source)),
                        });
                    }
                    return Err(Error::Connect {
                        registry: registry.to_string(),
                        url: url.to_string(),
                        source,
                    });
                }
                Ok(resp)
                    if !last
                        && (resp.status().is_server_error()
                            || resp.status() == StatusCode::TOO_MANY_REQUESTS) =>
                {
                    let wait = retry_after(&resp)
                        .unwrap_or(delay)
                        .min(self.retry.max_delay);
                    drop(resp);
                    std::thread::sleep(wait);
                }
                Ok(resp) => return Ok(resp),
            }
            delay = (delay * 2).min(self.retry.max_delay);
        }
    }

    /// Sends a request built by `build`, adding auth (answering one 401 by authenticating)
    /// and retrying on connection errors, 5xx and 429. Any other failure is an error.
    fn send(
        &self,
        r: &Remote,
        url: &str,
        build: &dyn Fn(&Http) -> RequestBuilder,
    ) -> Result<Response> {
        let key = (r.registry.clone(), Self::scope(r));
        let mut renewed = false;
        loop {
            let resp = self.with_retries(&r.registry, url, &|| {
                let mut req = build(&self.http);
                let token = self
                    .tokens
                    .lock()
                    .unwrap()
                    .get(&key)
                    .filter(|t| t.expires > Instant::now())
                    .map(|t| t.value.clone());
                if let Some(token) = token {
                    req = req.header(AUTHORIZATION, format!("Bearer {token}"));
                } else if self.basic.lock().unwrap().contains(&r.registry) {
                    if let Some(c) = self.basic_for(r) {
                        req = req.basic_auth(&c.user, Some(&c.password));
                    }
                }
                req.send()
            })?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED
                && renewed
                && self.basic.lock().unwrap().contains(&r.registry)
            {
                return Err(Error::Auth {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    why: "the stored credentials were refused".into(),
                });
            }
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
            (r.registry == DOCKER_HUB)
                .then(|| self.credentials.get(DOCKER_HUB_INDEX))
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
        let body_err = |source| Error::Body {
            registry: r.registry.clone(),
            what: format!("manifest {reference} of {r}"),
            source,
        };
        let mut bytes = Vec::new();
        resp.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(body_err)?;
        if bytes.len() as u64 > MAX_MANIFEST {
            // Truncating it silently would only surface later as a digest mismatch.
            return Err(body_err(std::io::Error::other(format!(
                "larger than {} MiB, which no manifest is",
                MAX_MANIFEST >> 20
            ))));
        }
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
            length: resp.content_length(),
            resp,
            offset: 0,
            resumes: 0,
        })
    }

    /// Lists tags of a repository (`lpmx-job tags`), following `Link: <...>; rel="next"`
    /// pages as registries that paginate (Quay, ECR, Harbor) send them.
    pub fn tags(&self, r: &Remote) -> Result<Vec<String>> {
        let url = self.url(r, "tags/list");
        self.paged_list(r, url, "tags", &format!("tag list of {}", r.repository))
    }

    /// The repositories a registry lists (`/v2/_catalog`), for `lpmx-job search`.
    pub fn catalog(&self, r: &Remote) -> Result<Vec<String>> {
        let scheme = if self.is_insecure(r) { "http" } else { "https" };
        let url = format!("{scheme}://{}/v2/_catalog?n=1000", r.api_host());
        self.paged_list(
            r,
            url,
            "repositories",
            &format!("catalog of {}", r.registry),
        )
    }

    /// Follows `Link: rel="next"` (same origin only: the requests carry credentials).
    fn paged_list(
        &self,
        r: &Remote,
        mut url: String,
        field: &str,
        what: &str,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let resp = self.send(r, &url, &|h| h.get(&url))?;
            let next = next_link(&resp).and_then(|l| same_origin_link(&url, &l));
            let v: serde_json::Value = resp.json().map_err(|e| Error::Body {
                registry: r.registry.clone(),
                what: what.to_string(),
                source: std::io::Error::other(e),
            })?;
            out.extend(
                v[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(String::from)),
            );
            match next {
                Some(n) if n != url => url = n,
                _ => break,
            }
        }
        Ok(out)
    }

    /// Checks that the stored credentials open the registry (`lpmx-job login`): `GET /v2/`
    /// through the usual challenge, which fails with `Error::Auth` when they are refused.
    pub fn check_login(&self, r: &Remote) -> Result<()> {
        let scheme = if self.is_insecure(r) { "http" } else { "https" };
        let url = format!("{scheme}://{}/v2/", r.api_host());
        self.send(r, &url, &|h| h.get(&url)).map(drop)
    }

    /// Docker Hub's search (`index.docker.io/v1/search`), which other registries do not offer.
    pub fn hub_search(&self, term: &str, limit: usize) -> Result<Vec<SearchHit>> {
        let url = "https://index.docker.io/v1/search";
        let n = limit.to_string();
        let resp = self
            .http
            .get(url)
            .query(&[("q", term), ("n", n.as_str())])
            .send()
            .map_err(|source| Error::Connect {
                registry: DOCKER_HUB.into(),
                url: url.into(),
                source,
            })?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(Error::Status {
                registry: DOCKER_HUB.into(),
                url: url.into(),
                status,
                body: resp.text().unwrap_or_default(),
            });
        }
        let v: serde_json::Value = resp.json().map_err(|e| Error::Body {
            registry: DOCKER_HUB.into(),
            what: "search results".into(),
            source: std::io::Error::other(e),
        })?;
        Ok(v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| SearchHit {
                name: h["name"].as_str().unwrap_or("").to_string(),
                description: h["description"].as_str().unwrap_or("").to_string(),
                stars: h["star_count"].as_u64().unwrap_or(0),
                official: h["is_official"].as_bool().unwrap_or(false),
            })
            .collect())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchHit {
    pub name: String,
    pub description: String,
    pub stars: u64,
    pub official: bool,
}

/// The target of a `Link` header's `rel="next"` entry.
fn next_link(resp: &Response) -> Option<String> {
    resp.headers()
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|entry| {
            let (target, params) = entry.split_once(';')?;
            let next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            next.then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        })
}

/// `link` resolved against `base`, if it stays on the same scheme, host and port: the
/// request for it carries the registry's credentials.
fn same_origin_link(base: &str, link: &str) -> Option<String> {
    let base = reqwest::Url::parse(base).ok()?;
    let next = base.join(link).ok()?;
    (next.origin() == base.origin()).then(|| next.to_string())
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(v, SystemTime::now())
}

/// `Retry-After` is either seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, the one form of HTTP date RFC 9110 lets
/// senders use.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_weekday, rest) = s.split_once(", ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = fields[..] else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else {
        return None;
    };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The innermost cause of a failed request (rustls's own words, `invalid peer certificate:
/// UnknownIssuer`), for a message that says the rest in plain words.
fn tls_fault(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("unknownissuer") {
            return true;
        }
        cause = c.source();
    }
    false
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
    /// The whole blob's length, from the first response (a resumed one is shorter).
    length: Option<u64>,
    offset: u64,
    resumes: u32,
}

impl BlobReader<'_> {
    /// The length of the whole blob, if the registry said.
    pub fn content_length(&self) -> Option<u64> {
        self.length
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
        // A 206 for some other range would splice the wrong bytes into the blob.
        let content_range = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(start) = range_start(content_range) {
            if start != self.offset {
                return Err(std::io::Error::other(format!(
                    "registry {} cannot resume {} at byte {}: it sent Content-Range {content_range}",
                    self.remote.registry, self.url, self.offset
                )));
            }
        }
        self.resp = resp;
        Ok(())
    }
}

/// The first byte of `bytes 500-999/1000`.
fn range_start(content_range: &str) -> Option<u64> {
    let spec = content_range.trim().strip_prefix("bytes")?.trim_start();
    spec.split_once('-')?.0.trim().parse().ok()
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
    use std::io::BufRead;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

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

    #[test]
    fn status_error_cuts_long_bodies_on_a_character_boundary() {
        let e = Error::Status {
            registry: "r".into(),
            url: "u".into(),
            status: StatusCode::BAD_REQUEST,
            // 'é' is two bytes: byte 200 falls on a boundary only if cut with care.
            body: format!("x{}", "é".repeat(200)),
        };
        let msg = e.to_string();
        assert!(msg.starts_with("registry r answered 400 Bad Request for u: xé"));
        assert!(msg.len() < 260, "{msg}");
    }

    #[test]
    fn retry_after_in_seconds_and_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(now),
            "RFC 9110's own example"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sat, 29 Feb 2020 00:00:00 GMT", SystemTime::UNIX_EPOCH),
            Some(Duration::from_secs(1_582_934_400))
        );
        // In the past: no wait. Garbage: no answer (the backoff applies).
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 25:49:37 GMT", now),
            None
        );
    }

    #[test]
    fn link_headers() {
        let base = "http://h:1/v2/a/tags/list";
        assert_eq!(
            same_origin_link(base, "/v2/a/tags/list?n=1&last=x").as_deref(),
            Some("http://h:1/v2/a/tags/list?n=1&last=x")
        );
        assert_eq!(
            same_origin_link(base, "http://h:1/v2/a/tags/list?last=y").as_deref(),
            Some("http://h:1/v2/a/tags/list?last=y")
        );
        assert_eq!(same_origin_link(base, "http://evil:1/v2/a/tags/list"), None);
        assert_eq!(same_origin_link(base, "https://h:1/v2/a/tags/list"), None);
        assert_eq!(range_start("bytes 500-999/1000"), Some(500));
        assert_eq!(range_start("bytes */1000"), None);
    }

    // ---------------------------------------------------------------------------------------
    // A stand-in registry. It is not a registry: it is an in-process HTTP/1.1 server on
    // 127.0.0.1 answering each request from a script, for the error paths a real registry will
    // not produce on demand (429 with Retry-After, repeated 5xx, a body cut mid-way, a Range
    // request answered without range support, a token service refusing). The integration
    // tests run the happy paths against real registries. One request per connection, no
    // request bodies, plain HTTP only (so every client below lists it as insecure).

    /// A request as the stand-in saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        /// The first bytes were a TLS ClientHello, not HTTP.
        tls: bool,
        path: String,
        query: HashMap<String, String>,
        headers: HashMap<String, String>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(String::as_str)
        }
    }

    enum Reply {
        Full {
            status: u16,
            headers: Vec<(String, String)>,
            body: Vec<u8>,
        },
        /// Declares the whole body's Content-Length, sends `sent` bytes of it, hangs up.
        Cut { body: Vec<u8>, sent: usize },
    }

    impl Reply {
        fn status(status: u16) -> Reply {
            Reply::Full {
                status,
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
        fn ok(body: impl Into<Vec<u8>>) -> Reply {
            Reply::status(200).body(body)
        }
        fn header(mut self, name: &str, value: &str) -> Reply {
            if let Reply::Full { headers, .. } = &mut self {
                headers.push((name.to_string(), value.to_string()));
            }
            self
        }
        fn body(mut self, new: impl Into<Vec<u8>>) -> Reply {
            if let Reply::Full { body, .. } = &mut self {
                *body = new.into();
            }
            self
        }
    }

    struct Stub {
        addr: String,
        seen: Arc<Mutex<Vec<Seen>>>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Stub {
        /// Serves until dropped; `script` gets each request and how many came before it.
        fn start(script: impl FnMut(&Seen, usize) -> Reply + Send + 'static) -> Stub {
            Stub::serve(|_| script)
        }

        /// As `start`, for a script that needs the stand-in's own address (a token realm
        /// pointing back at it): `make` gets `127.0.0.1:PORT` and returns the script.
        fn serve<F>(make: impl FnOnce(String) -> F) -> Stub
        where
            F: FnMut(&Seen, usize) -> Reply + Send + 'static,
        {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let mut script = make(addr.clone());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (seen2, stop2) = (seen.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let Some(req) = read_request(&mut stream) else {
                        continue;
                    };
                    let n = {
                        let mut seen = seen2.lock().unwrap();
                        seen.push(req.clone());
                        seen.len() - 1
                    };
                    if !req.tls {
                        let _ = write_reply(&mut stream, script(&req, n));
                    }
                    let _ = stream.flush();
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                }
            });
            Stub {
                addr,
                seen,
                stop,
                thread: Some(thread),
            }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        fn remote(&self) -> Remote {
            Remote {
                registry: self.addr.clone(),
                repository: "lib/x".into(),
                tag: None,
                digest: None,
            }
        }

        fn client(&self, credentials: &[(&str, &str)]) -> Client {
            client(vec![self.addr.clone()], &self.addr, credentials)
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}/v2/lib/x/{path}", self.addr)
        }
    }

    impl Drop for Stub {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept loop so it sees the flag.
            let _ = TcpStream::connect(&self.addr);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn read_request(stream: &mut TcpStream) -> Option<Seen> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut r = std::io::BufReader::new(stream);
        let first = r.fill_buf().ok()?;
        if first.first() == Some(&0x16) {
            return Some(Seen {
                tls: true,
                path: String::new(),
                query: HashMap::new(),
                headers: HashMap::new(),
            });
        }
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let target = line.split(' ').nth(1)?.to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Some(Seen {
            tls: false,
            path: path.to_string(),
            query,
            headers,
        })
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if i + 2 < b.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn write_reply(stream: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
        let (status, headers, body, sent) = match reply {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let n = body.len();
                (status, headers, body, n)
            }
            Reply::Cut { body, sent } => (200, Vec::new(), body, sent),
        };
        let mut head = format!(
            "HTTP/1.1 {status} Stand-in\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body[..sent])
    }

    fn client(insecure: Vec<String>, registry: &str, credentials: &[(&str, &str)]) -> Client {
        Client::new(ClientOptions {
            insecure,
            ca_files: Vec::new(),
            retry: RetryPolicy {
                attempts: 3,
                first_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(5),
            },
            credentials: credentials
                .iter()
                .map(|(u, p)| {
                    (
                        registry.to_string(),
                        Credentials {
                            user: u.to_string(),
                            password: p.to_string(),
                        },
                    )
                })
                .collect(),
        })
        .unwrap()
    }

    fn basic(user: &str, password: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {b64}")
    }

    fn tags_body() -> &'static str {
        r#"{"name":"lib/x","tags":["a"]}"#
    }

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap()
    }

    #[test]
    fn rate_limit_waits_for_retry_after() {
        let stub = Stub::start(|_, n| match n {
            0 => Reply::status(429).header("Retry-After", "1"),
            _ => Reply::ok(tags_body()),
        });
        let started = Instant::now();
        let tags = stub.client(&[]).tags(&stub.remote()).unwrap();
        let waited = started.elapsed();
        assert_eq!(tags, ["a"]);
        assert_eq!(stub.seen().len(), 2);
        // first_delay is 10 ms: only honouring Retry-After makes it wait this long.
        assert!(waited >= Duration::from_millis(900), "waited {waited:?}");
    }

    #[test]
    fn unavailable_twice_then_fine() {
        let stub = Stub::start(|_, n| match n {
            0 | 1 => Reply::status(503),
            _ => Reply::ok(tags_body()),
        });
        assert_eq!(stub.client(&[]).tags(&stub.remote()).unwrap(), ["a"]);
        assert_eq!(stub.seen().len(), 3);
    }

    #[test]
    fn server_error_every_time_gives_up_after_the_attempts() {
        let stub = Stub::start(|_, _| Reply::status(500).body("boom"));
        let err = stub.client(&[]).tags(&stub.remote()).unwrap_err();
        let msg = err.to_string();
        match err {
            Error::Status {
                registry,
                url,
                status,
                body,
            } => {
                assert_eq!(registry, stub.addr);
                assert_eq!(url, stub.url("tags/list"));
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                assert_eq!(body, "boom");
            }
            other => panic!("expected Error::Status, got {other:?}"),
        }
        assert!(msg.contains(&stub.addr) && msg.contains(&stub.url("tags/list")));
        assert_eq!(stub.seen().len(), 3, "attempts is 3");
    }

    /// The stand-in's script for a registry with a token service at /token handing out T1.
    fn bearer_registry(addr: String) -> impl FnMut(&Seen, usize) -> Reply + Send + 'static {
        move |req, _| {
            if req.path == "/token" {
                Reply::ok(r#"{"token":"T1","expires_in":300}"#)
            } else if req.header("authorization") == Some("Bearer T1") {
                Reply::ok(tags_body())
            } else {
                Reply::status(401).header(
                    "WWW-Authenticate",
                    &format!(
                        r#"Bearer realm="http://{addr}/token",service="svc",scope="repository:lib/x:pull""#
                    ),
                )
            }
        }
    }

    #[test]
    fn bearer_token_fetched_once_with_service_scope_and_credentials() {
        let stub = Stub::serve(bearer_registry);
        let client = stub.client(&[("u", "p")]);
        assert_eq!(client.tags(&stub.remote()).unwrap(), ["a"]);
        assert_eq!(client.tags(&stub.remote()).unwrap(), ["a"]);
        let seen = stub.seen();
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        let list = "/v2/lib/x/tags/list";
        // The second listing reuses the token: one token request in all.
        assert_eq!(paths, [list, "/token", list, list]);
        let token = &seen[1];
        assert_eq!(token.query.get("service").map(String::as_str), Some("svc"));
        assert_eq!(
            token.query.get("scope").map(String::as_str),
            Some("repository:lib/x:pull")
        );
        assert_eq!(
            token.header("authorization"),
            Some(basic("u", "p").as_str())
        );
        assert_eq!(seen[2].header("authorization"), Some("Bearer T1"));
        assert_eq!(seen[3].header("authorization"), Some("Bearer T1"));
    }

    #[test]
    fn token_service_refusing_is_an_auth_error() {
        let stub = Stub::serve(|addr| {
            let mut registry = bearer_registry(addr);
            move |req: &Seen, n| {
                if req.path == "/token" {
                    Reply::status(401)
                } else {
                    registry(req, n)
                }
            }
        });
        let err = stub.client(&[]).tags(&stub.remote()).unwrap_err();
        let msg = err.to_string();
        match err {
            Error::Auth {
                registry,
                repository,
                why,
            } => {
                assert_eq!(registry, stub.addr);
                assert_eq!(repository, "lib/x");
                assert!(why.contains("401"), "{why}");
            }
            other => panic!("expected Error::Auth, got {other:?}"),
        }
        assert!(msg.contains(&stub.addr), "{msg}");
        let seen = stub.seen();
        assert_eq!(seen.len(), 2, "no retry of a refusal: {seen:?}");
        // Anonymous: nothing to send the token service.
        assert_eq!(seen[1].header("authorization"), None);
    }

    #[test]
    fn token_service_unavailable_is_retried() {
        let stub = Stub::serve(|addr| {
            let mut registry = bearer_registry(addr);
            let mut token_requests = 0;
            move |req: &Seen, n| {
                if req.path == "/token" {
                    token_requests += 1;
                    if token_requests == 1 {
                        return Reply::status(503);
                    }
                }
                registry(req, n)
            }
        });
        assert_eq!(stub.client(&[]).tags(&stub.remote()).unwrap(), ["a"]);
        let paths: Vec<String> = stub.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths.iter().filter(|p| *p == "/token").count(), 2);
    }

    fn basic_registry(req: &Seen, _: usize) -> Reply {
        if req.header("authorization") == Some(basic("u", "p").as_str()) {
            Reply::ok(tags_body())
        } else {
            Reply::status(401).header("WWW-Authenticate", r#"Basic realm="Registry Realm""#)
        }
    }

    #[test]
    fn basic_challenge_without_credentials_asks_for_them() {
        let stub = Stub::start(basic_registry);
        let err = stub.client(&[]).tags(&stub.remote()).unwrap_err();
        let msg = err.to_string();
        let Error::Auth { registry, why, .. } = err else {
            panic!("expected Error::Auth, got {err:?}");
        };
        assert_eq!(registry, stub.addr);
        assert!(why.contains("no credentials are stored"), "{why}");
        assert!(msg.contains("needs credentials"), "{msg}");
        assert_eq!(stub.seen().len(), 1);
    }

    #[test]
    fn basic_credentials_are_sent_and_a_refusal_says_so() {
        let stub = Stub::start(basic_registry);
        assert_eq!(
            stub.client(&[("u", "p")]).tags(&stub.remote()).unwrap(),
            ["a"]
        );
        // The password goes out only after the registry asked for Basic auth.
        assert_eq!(stub.seen()[0].header("authorization"), None);
        assert_eq!(
            stub.seen()[1].header("authorization"),
            Some(basic("u", "p").as_str())
        );
        let err = stub
            .client(&[("u", "wrong")])
            .tags(&stub.remote())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Auth { why, .. } if why.contains("refused")),
            "{err:?}"
        );
    }

    fn blob_body() -> Vec<u8> {
        (0..1000u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn cut_blob_resumes_with_a_range_request() {
        let body = blob_body();
        let whole = body.clone();
        let stub = Stub::start(move |_, n| match n {
            0 => Reply::Cut {
                body: whole.clone(),
                sent: 500,
            },
            _ => Reply::status(206)
                .header("Content-Range", "bytes 500-999/1000")
                .body(whole[500..].to_vec()),
        });
        let client = stub.client(&[]);
        let mut reader = client.blob(&stub.remote(), &digest()).unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, body);
        assert_eq!(
            reader.content_length(),
            Some(1000),
            "the whole blob's length"
        );
        let seen = stub.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].header("range"), None);
        assert_eq!(seen[1].header("range"), Some("bytes=500-"));
        assert_eq!(seen[1].path, format!("/v2/lib/x/blobs/{}", digest()));
    }

    #[test]
    fn cut_blob_without_range_support_fails_clearly() {
        let whole = blob_body();
        let stub = Stub::start(move |_, n| match n {
            0 => Reply::Cut {
                body: whole.clone(),
                sent: 500,
            },
            _ => Reply::ok(whole.clone()),
        });
        let client = stub.client(&[]);
        let mut reader = client.blob(&stub.remote(), &digest()).unwrap();
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("cannot resume"), "{err}");
        assert_eq!(stub.seen().len(), 2);
    }

    #[test]
    fn cut_blob_resumed_at_the_wrong_offset_fails() {
        let whole = blob_body();
        let stub = Stub::start(move |_, n| match n {
            0 => Reply::Cut {
                body: whole.clone(),
                sent: 500,
            },
            _ => Reply::status(206)
                .header("Content-Range", "bytes 0-999/1000")
                .body(whole.clone()),
        });
        let client = stub.client(&[]);
        let mut reader = client.blob(&stub.remote(), &digest()).unwrap();
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("cannot resume"), "{err}");
    }

    #[test]
    fn oversized_manifest_is_an_error_not_a_truncation() {
        let stub = Stub::start(|_, _| {
            Reply::ok(vec![b' '; (MAX_MANIFEST + 1) as usize])
                .header("Content-Type", MANIFEST_TYPES[0])
        });
        let err = stub.client(&[]).manifest(&stub.remote(), "1").unwrap_err();
        assert!(matches!(err, Error::Body { .. }), "{err:?}");
    }

    #[test]
    fn tag_lists_follow_next_links_on_the_same_registry() {
        let stub = Stub::serve(|addr| {
            move |req: &Seen, _| match req.query.get("last").map(String::as_str) {
                None => Reply::ok(r#"{"tags":["a"]}"#)
                    .header("Link", r#"</v2/lib/x/tags/list?n=1&last=a>; rel="next""#),
                Some("a") => Reply::ok(r#"{"tags":["b"]}"#).header(
                    "Link",
                    &format!(r#"<http://{addr}/v2/lib/x/tags/list?n=1&last=b>; rel="next""#),
                ),
                Some(_) => Reply::ok(r#"{"tags":["c"]}"#).header(
                    "Link",
                    r#"<http://elsewhere/v2/lib/x/tags/list>; rel="next""#,
                ),
            }
        });
        assert_eq!(
            stub.client(&[]).tags(&stub.remote()).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(
            stub.seen().len(),
            3,
            "the link to another host is not followed"
        );
    }

    #[test]
    fn only_insecure_registries_get_plain_http() {
        let stub = Stub::start(|_, _| Reply::ok(tags_body()));
        // Listed: plain HTTP, which the stand-in speaks.
        assert_eq!(stub.client(&[]).tags(&stub.remote()).unwrap(), ["a"]);
        assert!(!stub.seen()[0].tls);
        // Not listed (another host is): the client opens TLS, which the stand-in cannot
        // speak; the error names the https:// URL and the stand-in saw a TLS ClientHello.
        let c = client(vec!["127.0.0.1:1".into()], &stub.addr, &[]);
        let err = c.tags(&stub.remote()).unwrap_err();
        let https = format!("https://{}/v2/lib/x/tags/list", stub.addr);
        assert!(err.to_string().contains(&https), "{err}");
        let seen = stub.seen();
        assert!(
            seen.len() > 1 && seen[1..].iter().all(|s| s.tls),
            "{seen:?}"
        );
        // Docker Hub: `insecure` may name it by either name; by default it is HTTPS.
        let hub = Remote {
            registry: DOCKER_HUB.into(),
            repository: "library/alpine".into(),
            tag: None,
            digest: None,
        };
        assert_eq!(
            c.url(&hub, "tags/list"),
            "https://registry-1.docker.io/v2/library/alpine/tags/list"
        );
        let c = client(vec![DOCKER_HUB.into()], DOCKER_HUB, &[]);
        assert!(c
            .url(&hub, "tags/list")
            .starts_with("http://registry-1.docker.io/"));
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
