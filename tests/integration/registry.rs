//! The real registry that tests/run.sh starts holds the fixture images later tests pull.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{service, Env};

/// A plain-HTTP GET without a client library: this only checks the fixtures are in place.
fn get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let mut s =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("registry {addr} unreachable: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let status = body
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body)
}

#[test]
fn fixtures_are_in_the_registry() {
    let _env = Env::new();
    let Some(addr) = service("LPMX_TEST_REGISTRY") else {
        return;
    };
    let (status, _) = get(&addr, "/v2/", "*/*");
    assert_eq!(status, 200);
    let (_, catalog) = get(&addr, "/v2/_catalog?n=1000", "*/*");
    for repo in ["lpmx/one", "lpmx/layers3", "lpmx/multi", "lpmx/one-v2s2"] {
        assert!(
            catalog.contains(&format!("\"{repo}\"")),
            "{repo} not in {catalog}"
        );
    }
    let (status, index) = get(
        &addr,
        "/v2/lpmx/multi/manifests/latest",
        "application/vnd.oci.image.index.v1+json",
    );
    assert_eq!(status, 200);
    for arch in ["amd64", "arm64", "ppc64le"] {
        assert!(
            index.contains(&format!("\"{arch}\"")),
            "{arch} missing in index {index}"
        );
    }
    let (_, v2s2) = get(
        &addr,
        "/v2/lpmx/one-v2s2/manifests/latest",
        "application/vnd.docker.distribution.manifest.v2+json",
    );
    assert!(
        v2s2.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{v2s2}"
    );
}
