use super::blob::range_start;
use super::*;
use crate::image::reference::Digest;
use base64::Engine;
use std::io::BufRead;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
        Reply::ok(vec![b' '; (MAX_MANIFEST + 1) as usize]).header("Content-Type", MANIFEST_TYPES[0])
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
