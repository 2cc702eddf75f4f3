//! A site whose nodes reach registries only through an HTTP proxy: a real tinyproxy, and a
//! registry the test user cannot reach directly (a netfilter rule resets the user's own
//! connections to it; tests/setup/webproxy.sh). `HTTP_PROXY`, `HTTPS_PROXY` (CONNECT) and
//! `NO_PROXY` as users set them, and a blob download cut mid-way and resumed through the
//! proxy.

use std::path::PathBuf;

use crate::proxy::{self, Faults};
use crate::support::{blob_get_statuses, blob_gets, private_copy, run, service, stderr, Env};

struct Site {
    env: Env,
    fenced: String,
    proxy: String,
}

fn site() -> Option<Site> {
    let fenced = service("LPMX_TEST_REGISTRY_FENCED")?;
    let proxy = service("LPMX_TEST_PROXY")?;
    Some(Site {
        env: Env::new(),
        fenced,
        proxy,
    })
}

fn proxy_log() -> String {
    let log = PathBuf::from(service("LPMX_TEST_LOGS").unwrap()).join("tinyproxy.log");
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn a_registry_reached_only_through_the_proxy() {
    let Some(s) = site() else { return };
    let http = service("LPMX_TEST_REGISTRY").unwrap();
    // The shared storage: a private repository pushed to one registry is served by all.
    let repo = private_copy(&http, "one", &s.env);
    let image = format!("{}/{repo}", s.fenced);
    let pull = |vars: &[(&str, &str)]| {
        run(s
            .env
            .cmd()
            .env("LPMX_INSECURE_REGISTRIES", &s.fenced)
            .envs(vars.iter().copied())
            .args(["pull", &image]))
    };
    let out = pull(&[]);
    assert_eq!(out.status.code(), Some(125), "fenced off without the proxy");
    assert!(stderr(&out).contains(&s.fenced), "{}", stderr(&out));

    let proxy_url = format!("http://{}", s.proxy);
    let out = pull(&[
        ("HTTP_PROXY", proxy_url.as_str()),
        ("NO_PROXY", "example.org"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = proxy_log();
    assert!(
        log.contains(&format!("GET http://{}/v2/{repo}/manifests/", s.fenced)),
        "the manifest went through the proxy: {log}"
    );
    assert!(
        log.contains(&format!("GET http://{}/v2/{repo}/blobs/", s.fenced)),
        "the blobs went through the proxy: {log}"
    );
    // NO_PROXY naming the registry's host sends it direct, where the fence stops it.
    let out = run(s
        .env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &s.fenced)
        .env("http_proxy", &proxy_url)
        .env("no_proxy", "127.0.0.1")
        .args(["pull", &image]));
    assert_eq!(out.status.code(), Some(125), "no_proxy honoured");
}

/// HTTPS through the proxy: a CONNECT tunnel to the TLS registry, whose certificate is
/// still checked end to end.
#[test]
fn https_goes_through_a_connect_tunnel() {
    let Some(s) = site() else { return };
    let tls = service("LPMX_TEST_REGISTRY_TLS").unwrap();
    let ca = service("LPMX_TEST_CA").unwrap();
    s.env.write(
        "config/lpmx/config.yaml",
        &format!("registries:\n  \"{tls}\":\n    ca: {ca}\n"),
    );
    let out = run(s
        .env
        .cmd()
        .env("HTTPS_PROXY", format!("http://{}", s.proxy))
        .args(["pull", &format!("{tls}/lpmx/one")]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = proxy_log();
    assert!(log.contains(&format!("CONNECT {tls}")), "tunnelled: {log}");
}

/// A blob cut mid-way behind the proxy (the proxy relays to a faulty link in front of the
/// registry) resumes with a range request, through the proxy again.
#[test]
fn a_cut_download_resumes_through_the_proxy() {
    let Some(s) = site() else { return };
    let http = service("LPMX_TEST_REGISTRY").unwrap();
    let repo = private_copy(&http, "one", &s.env);
    let flaky = proxy::start(
        &http,
        Faults {
            cut_after: Some(300_000),
            cut_connections: 1,
            ..Faults::default()
        },
    );
    let out = run(s
        .env
        .cmd()
        .env("LPMX_INSECURE_REGISTRIES", &flaky.addr)
        .env("HTTP_PROXY", format!("http://{}", s.proxy))
        .args(["pull", &format!("{}/{repo}", flaky.addr)]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let statuses = blob_get_statuses(&repo);
    assert!(
        statuses.values().any(|s| s.iter().any(|s| s == "206")),
        "the second request was a ranged one (206): {statuses:?}"
    );
    assert!(
        blob_gets(&repo).values().any(|&n| n == 2),
        "the cut blob was asked twice"
    );
    let plog = proxy_log();
    let through = plog
        .lines()
        .filter(|l| l.contains(&format!("GET http://{}/v2/{repo}/blobs/", flaky.addr)))
        .count();
    assert!(
        through >= 3,
        "config, the cut layer and its resumption through the proxy: {plog}"
    );
}
