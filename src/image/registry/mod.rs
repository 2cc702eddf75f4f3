//! A client of the distribution API v2: manifests and blobs, anonymous, Bearer-token and Basic
//! auth, retries with backoff, and blob bodies that resume with a Range request when a
//! connection breaks mid-download. Credentials come from the Docker config, including
//! credential helpers (`credHelpers`, `credsStore`).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use crate::image::reference::{Remote, DOCKER_HUB};
use auth::{Credentials, Token};

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
    /// By registry host (`docker.io` for Docker Hub), as [`auth::docker_credentials`] returns them.
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

pub mod auth;
pub mod blob;
#[cfg(test)]
mod tests;
