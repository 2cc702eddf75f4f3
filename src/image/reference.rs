//! Image references, by Docker's rules: `alpine` is `docker.io/library/alpine:latest`,
//! `host:port/repo:tag`, `repo@sha256:...`. Local files are references too: `oci:DIR[:TAG]`
//! (an OCI image layout) and `docker-archive:FILE` (`docker save` output).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("image reference {input:?}: {why}")]
    Invalid { input: String, why: String },
}

pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A content digest, `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> std::result::Result<Digest, String> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {s:?} has no algorithm"))?;
        match algo {
            "sha256"
                if hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Digest(s.to_string()))
            }
            "sha256" => Err(format!("digest {s:?} is not 64 lowercase hex digits")),
            "sha512" | "sha384" => Err(format!("digest {s:?}: only sha256 digests are supported")),
            _ => Err(format!("digest {s:?} has an unknown algorithm {algo:?}")),
        }
    }

    pub fn from_sha256(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(bytes)))
    }

    /// The hex part: a safe file name, since `parse` admits only hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as `docker images` shows them.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Remote {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/alpine`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Remote {
    /// The host to speak the registry API to.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_ref()
            .map(Digest::as_str)
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reference {
    Remote(Remote),
    /// An OCI image layout directory and the tag (`org.opencontainers.image.ref.name`) in it.
    OciLayout {
        dir: PathBuf,
        tag: Option<String>,
    },
    /// A `docker save` tar file.
    DockerArchive {
        file: PathBuf,
    },
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Remote(r) => r.fmt(f),
            Reference::OciLayout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            Reference::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            Reference::DockerArchive { file } => write!(f, "docker-archive:{}", file.display()),
        }
    }
}

fn invalid(input: &str, why: impl Into<String>) -> Error {
    Error::Invalid {
        input: input.to_string(),
        why: why.into(),
    }
}

/// One path component of a repository: lowercase alphanumerics joined by `.`, `_`, `__` or
/// runs of `-` (the distribution spec's grammar).
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'a'..=b'z' | b'0'..=b'9' => i += 1,
            b'.' | b'_' => {
                let run = b[i..].iter().take_while(|&&x| x == b[i]).count();
                if !(run == 1 || (b[i] == b'_' && run == 2)) {
                    return false;
                }
                i += run;
            }
            b'-' => i += 1,
            _ => return false,
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// A first path component is a registry when it looks like a host: has a dot or a port, or
/// is `localhost` (Docker's rule; `library/x` and `user/x` stay on Docker Hub).
fn looks_like_host(c: &str) -> bool {
    c.contains('.')
        || c.contains(':')
        || c == "localhost"
        || c.chars().any(|ch| ch.is_ascii_uppercase())
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference> {
        if let Some(rest) = input.strip_prefix("oci:") {
            let (dir, tag) = match rest.split_once(':') {
                Some((d, t)) => (d, Some(t)),
                None => (rest, None),
            };
            if dir.is_empty() {
                return Err(invalid(
                    input,
                    "oci: needs a directory, as in oci:DIR[:TAG]",
                ));
            }
            if let Some(t) = tag {
                if !valid_tag(t) {
                    return Err(invalid(input, format!("{t:?} is not a valid tag")));
                }
            }
            return Ok(Reference::OciLayout {
                dir: dir.into(),
                tag: tag.map(String::from),
            });
        }
        if let Some(file) = input.strip_prefix("docker-archive:") {
            if file.is_empty() {
                return Err(invalid(
                    input,
                    "docker-archive: needs a file, as in docker-archive:FILE",
                ));
            }
            return Ok(Reference::DockerArchive { file: file.into() });
        }
        Remote::parse(input).map(Reference::Remote)
    }
}

impl Remote {
    pub fn parse(input: &str) -> Result<Remote> {
        if input.is_empty() {
            return Err(invalid(input, "empty"));
        }
        if input.contains("://") {
            return Err(invalid(
                input,
                "write the reference without a scheme, as in host:port/repo:tag",
            ));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).map_err(|e| invalid(input, e))?)),
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/', so host:port stays whole.
        let slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[slash..].rfind(':') {
            Some(i) => (&name_tag[..slash + i], Some(&name_tag[slash + i + 1..])),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid(input, format!("{t:?} is not a valid tag")));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first.to_string(), rest.to_string()),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if let Some(bad) = repository.split('/').find(|c| !valid_component(c)) {
            let why = if bad.chars().any(|c| c.is_ascii_uppercase()) {
                format!("repository names are lowercase ({bad:?})")
            } else {
                format!("{bad:?} is not a valid repository name component")
            };
            return Err(invalid(input, why));
        }
        if repository.len() > 255 {
            return Err(invalid(input, "repository name longer than 255 characters"));
        }
        let tag = match (&digest, tag) {
            (None, None) => Some("latest".to_string()),
            (_, t) => t.map(String::from),
        };
        Ok(Remote {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &str) -> Remote {
        match Reference::parse(s).unwrap() {
            Reference::Remote(r) => r,
            other => panic!("{other:?}"),
        }
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_shorthands() {
        assert_eq!(
            remote("alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            remote("alpine:3.19").to_string(),
            "docker.io/library/alpine:3.19"
        );
        assert_eq!(
            remote("user/tool").to_string(),
            "docker.io/user/tool:latest"
        );
        assert_eq!(
            remote("index.docker.io/library/ubuntu:22.04").to_string(),
            "docker.io/library/ubuntu:22.04"
        );
        assert_eq!(remote("alpine").api_host(), "registry-1.docker.io");
    }

    #[test]
    fn registries_with_ports_and_paths() {
        let r = remote("127.0.0.1:5000/lpmx/one:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "lpmx/one", Some("v1"))
        );
        let r = remote("localhost:5000/one");
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", Some("latest"))
        );
        let r = remote("ghcr.io/org/sub/img");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("ghcr.io", "org/sub/img")
        );
        assert_eq!(remote("localhost/img").registry, "localhost");
    }

    #[test]
    fn digests_pin() {
        let r = remote(&format!("alpine@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), D);
        let r = remote(&format!("host:1/a:t@{D}"));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.manifest_ref(), D, "the digest wins over the tag");
        assert_eq!(r.digest.unwrap().short(), "0123456789ab");
    }

    #[test]
    fn bad_references_say_why() {
        for (s, why) in [
            ("", "empty"),
            ("Alpine", "lowercase"),
            ("host:5000/Repo", "lowercase"),
            ("a/b:bad tag", "valid tag"),
            ("a//b", "not a valid"),
            ("alpine@sha256:abc", "64"),
            ("alpine@md5:abc", "unknown algorithm"),
            ("https://ghcr.io/a/b", "scheme"),
            ("a/b:", "valid tag"),
            ("oci:", "directory"),
            ("docker-archive:", "file"),
            ("a..b", "not a valid"),
        ] {
            let e = Reference::parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }

    #[test]
    fn local_sources() {
        assert_eq!(
            Reference::parse("oci:/data/layout:v2").unwrap(),
            Reference::OciLayout {
                dir: "/data/layout".into(),
                tag: Some("v2".into())
            }
        );
        assert_eq!(
            Reference::parse("oci:rel/dir").unwrap(),
            Reference::OciLayout {
                dir: "rel/dir".into(),
                tag: None
            }
        );
        assert_eq!(
            Reference::parse("docker-archive:/x/img.tar").unwrap(),
            Reference::DockerArchive {
                file: "/x/img.tar".into()
            }
        );
    }

    #[test]
    fn component_grammar() {
        for ok in ["a", "a.b", "a_b", "a__b", "a-b", "a--b", "0x"] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a___b", "a..b", "A", "a b"] {
            assert!(!valid_component(bad), "{bad}");
        }
    }
}
