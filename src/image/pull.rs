//! Pulling: resolve a reference to one platform's manifest, then make sure its config and
//! every layer are in the cache, each under its own lock, each verified against its digest
//! in the same pass that unpacks it.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::cache::{self, Cache, Hashing, ImageRecord, LayerRecord, LayerRef};
use crate::image::progress::{Counting, Progress};
use crate::image::reference::{Digest, Reference, Remote};
use crate::image::registry::{self, Client};
use crate::image::unpack;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Unpack(#[from] unpack::Error),
    #[error("{image}: {why}")]
    Image { image: String, why: String },
    #[error(
        "{image}: layer {digest} is larger than its manifest declares: {declared} bytes \
         declared, {received} received when lpmx-job stopped reading"
    )]
    LayerTooLarge {
        image: String,
        digest: String,
        declared: u64,
        received: u64,
    },
    #[error("{image}: {what} {digest} is larger than {limit} bytes; refused")]
    TooLarge {
        image: String,
        what: &'static str,
        digest: String,
        limit: u64,
    },
    #[error("{image}: {path}: {source}")]
    Source {
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `os/arch[/variant]`, as `--platform` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: variant.map(String::from),
        }
    }

    pub fn parse(s: &str) -> std::result::Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "platform {s:?} is not os/arch[/variant], e.g. linux/arm64"
            )),
        }
    }

    /// An index entry matches when os and architecture agree and, if both name a variant,
    /// the variants agree (arm64 images often omit `v8`).
    fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.arch == arch
            && (self.variant.is_none() || variant.is_none() || self.variant.as_deref() == variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Files of a local image source: a directory (OCI layout), or the members of a tar file
/// (`docker save` output), read in place by offset without unpacking the archive.
enum Files {
    Dir(PathBuf),
    Tar {
        file: PathBuf,
        /// Member path -> (data offset, size); symlinked members already resolved.
        members: HashMap<String, (u64, u64)>,
    },
}

impl Files {
    fn tar(file: &Path) -> std::io::Result<Files> {
        let f = std::fs::File::open(file)?;
        let mut archive = tar::Archive::new(f);
        let mut members = HashMap::new();
        let mut links = Vec::new();
        for e in archive.entries_with_seek()? {
            let e = e?;
            let path = e
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(path, (e.raw_file_position(), e.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = e.link_name()? {
                        links.push((
                            path,
                            target.to_string_lossy().into_owned(),
                            e.header().entry_type(),
                        ));
                    }
                }
                _ => {}
            }
        }
        // `docker save` links each layer's old-style directory to the layer file.
        for (path, target, kind) in links {
            let resolved = if kind == tar::EntryType::Symlink {
                let base = Path::new(&path).parent().unwrap_or(Path::new(""));
                normalize(&base.join(&target))
            } else {
                target.trim_start_matches("./").to_string()
            };
            if let Some(&m) = members.get(&resolved) {
                members.insert(path, m);
            }
        }
        Ok(Files::Tar {
            file: file.to_path_buf(),
            members,
        })
    }

    fn has(&self, rel: &str) -> bool {
        match self {
            Files::Dir(d) => d.join(rel).is_file(),
            Files::Tar { members, .. } => members.contains_key(rel),
        }
    }

    fn describe(&self, rel: &str) -> PathBuf {
        match self {
            Files::Dir(d) => d.join(rel),
            Files::Tar { file, .. } => PathBuf::from(format!("{}:{rel}", file.display())),
        }
    }

    fn open(&self, rel: &str) -> std::io::Result<Box<dyn Read + '_>> {
        match self {
            Files::Dir(d) => {
                let f = std::fs::File::open(d.join(rel))?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
            }
            Files::Tar { file, members } => {
                use std::io::{Seek, SeekFrom};
                let &(offset, size) = members.get(rel).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such member")
                })?;
                let mut f = std::fs::File::open(file)?;
                f.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(
                    std::io::BufReader::with_capacity(1 << 20, f).take(size),
                ))
            }
        }
    }
}

/// `a/b/../c` -> `a/c`, for links inside an archive.
fn normalize(p: &Path) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    out.join("/")
}

/// A registry to ask for an image: a mirror or the image's own registry.
pub struct Endpoint {
    pub client: Client,
    /// `host:port` to speak to; the repository path stays the image's.
    pub host: String,
}

impl Endpoint {
    fn remote(&self, r: &Remote) -> Remote {
        Remote {
            registry: self.host.clone(),
            ..r.clone()
        }
    }
}

/// Asks each endpoint in turn (mirrors first), returning the first answer. Every answer is
/// checked against its digest by the caller, so a mirror can be stale but never wrong.
fn first_answer<'e, T>(
    endpoints: &'e [Endpoint],
    remote: &Remote,
    what: &str,
    log: &dyn Fn(&str),
    ask: impl Fn(&'e Endpoint, &Remote) -> std::result::Result<T, registry::Error>,
) -> Result<T> {
    let mut last = None;
    for (i, e) in endpoints.iter().enumerate() {
        match ask(e, &e.remote(remote)) {
            Ok(v) => return Ok(v),
            Err(err) => {
                if i + 1 < endpoints.len() {
                    log(&format!("{what}: {err}; trying {}", endpoints[i + 1].host));
                }
                last = Some(err);
            }
        }
    }
    Err(last.map(Error::Registry).unwrap_or_else(|| Error::Image {
        image: remote.to_string(),
        why: "no registry to ask".into(),
    }))
}

/// Manifests and configs are JSON of a few kilobytes; this bounds what a hostile source can
/// make us hold in memory.
const SMALL_BLOB_LIMIT: u64 = 16 << 20;

/// Where blobs come from.
enum Source<'a> {
    Registry {
        endpoints: &'a [Endpoint],
        remote: Remote,
        progress: &'a dyn Progress,
    },
    Local {
        files: Files,
        /// Blobs not stored under `blobs/sha256/HEX` (old `docker save` archives).
        named: HashMap<Digest, String>,
    },
}

impl Source<'_> {
    fn open(&self, image: &str, d: &Digest) -> Result<Box<dyn Read + '_>> {
        match self {
            Source::Registry {
                endpoints,
                remote,
                progress,
            } => {
                let what = format!("blob {} of {remote}", d.short());
                let log = |m: &str| progress.note(m);
                let reader =
                    first_answer(endpoints, remote, &what, &log, |e, r| e.client.blob(r, d))?;
                Ok(Box::new(reader))
            }
            Source::Local { files, named } => {
                let rel = named
                    .get(d)
                    .cloned()
                    .unwrap_or_else(|| format!("blobs/sha256/{}", d.hex()));
                files.open(&rel).map_err(|source| Error::Source {
                    image: image.into(),
                    path: files.describe(&rel),
                    source,
                })
            }
        }
    }

    /// A manifest or config: read whole, but no more than [`SMALL_BLOB_LIMIT`] (one byte
    /// more is read to tell a blob at the limit from a larger one, which is refused as too
    /// large rather than left to fail its digest).
    fn read_small(&self, image: &str, d: &Digest, what: &'static str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open(image, d)?
            .take(SMALL_BLOB_LIMIT + 1)
            .read_to_end(&mut buf)
            .map_err(|source| Error::Source {
                image: image.into(),
                path: PathBuf::from(d.to_string()),
                source,
            })?;
        if buf.len() as u64 > SMALL_BLOB_LIMIT {
            return Err(Error::TooLarge {
                image: image.into(),
                what,
                digest: d.to_string(),
                limit: SMALL_BLOB_LIMIT,
            });
        }
        Ok(buf)
    }
}

pub struct Options<'a> {
    pub platform: Platform,
    /// Layers fetched at once.
    pub jobs: usize,
    /// Where events and transfers are reported (lines or bars); messages name the image.
    pub progress: &'a dyn Progress,
    /// Use only what the cache holds: no network at all.
    pub offline: bool,
    /// Seconds a tag's answer in the cache is reused without asking the registry (config
    /// `registry.resolve_window`; 0 asks every time).
    pub resolve_window: u64,
}

pub struct Puller<'a> {
    pub cache: &'a Cache,
    /// For registry images: mirrors first, then the image's own registry.
    pub endpoints: &'a [Endpoint],
    pub opts: Options<'a>,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn media_type_of(bytes: &[u8], header: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if v["schemaVersion"] == 1 {
        return "schema1".into();
    }
    if let Some(m) = v["mediaType"].as_str() {
        return m.to_string();
    }
    if v["manifests"].is_array() {
        return INDEX_TYPES[0].into();
    }
    if !header.is_empty() {
        return header.split(';').next().unwrap_or("").trim().to_string();
    }
    "application/vnd.oci.image.manifest.v1+json".into()
}

impl Puller<'_> {
    pub fn pull(&self, reference: &Reference) -> Result<ImageRecord> {
        let image = reference.to_string();
        self.cache.reclaim();
        match reference {
            Reference::Remote(remote) => {
                if self.opts.offline {
                    return self.cached(&image, remote);
                }
                if remote.digest.is_some() || self.opts.resolve_window == 0 {
                    return self.pull_remote(&image, remote);
                }
                // A tag is asked once per window per cache, however many tasks on however
                // many nodes start at once: the first asks under the tag's lock, the others
                // wait and take its answer (as blobs are fetched once).
                if let Some(rec) = self.recently_resolved(&image, remote) {
                    return Ok(rec);
                }
                let key = cache::sha256(format!("tag\0{image}").as_bytes());
                let log = |m: &str| self.opts.progress.note(m);
                let _held = self.cache.lock(&key, &format!("the tag {image}"), &log)?;
                if let Some(rec) = self.recently_resolved(&image, remote) {
                    return Ok(rec);
                }
                self.pull_remote(&image, remote)
            }
            Reference::OciLayout { dir, tag } => {
                self.pull_layout(&image, Files::Dir(dir.clone()), tag.as_deref())
            }
            Reference::DockerArchive { file } => {
                let files = Files::tar(file).map_err(|source| Error::Source {
                    image: image.clone(),
                    path: file.clone(),
                    source,
                })?;
                if files.has("index.json") {
                    // Docker 25 and later save an OCI layout inside the archive.
                    return self.pull_layout(&image, files, None);
                }
                self.pull_docker_save(&image, files)
            }
        }
    }

    /// The cached image of a tag some process resolved less than `resolve_window` seconds
    /// ago, complete in the cache; None otherwise (then the registry is asked).
    fn recently_resolved(&self, image: &str, remote: &Remote) -> Option<ImageRecord> {
        let r = self.cache.read_ref(image).ok()??;
        let age = cache::now().saturating_sub(r.fetched);
        if age >= self.opts.resolve_window {
            return None;
        }
        self.cached(image, remote).ok()
    }

    fn pull_remote(&self, image: &str, remote: &Remote) -> Result<ImageRecord> {
        let image = image.to_string();
        {
            {
                let log = |m: &str| self.opts.progress.note(m);
                let log = &log;
                let what = format!("manifest of {image}");
                let (bytes, header) = first_answer(self.endpoints, remote, &what, log, |e, r| {
                    e.client.manifest(r, remote.manifest_ref())
                })?;
                let digest = cache::sha256(&bytes);
                if let Some(pinned) = &remote.digest {
                    if &digest != pinned {
                        return Err(cache::Error::DigestMismatch {
                            what: format!("manifest of {image}"),
                            expected: pinned.to_string(),
                            actual: digest.to_string(),
                        }
                        .into());
                    }
                }
                let source = Source::Registry {
                    endpoints: self.endpoints,
                    remote: remote.clone(),
                    progress: self.opts.progress,
                };
                let (manifest_digest, manifest) =
                    self.select(&image, bytes, digest, &header, |d| {
                        // A manifest named by digest never changes: a cached copy saves a request.
                        if let Some(b) = self.cache.read_blob(d)? {
                            return Ok((b, String::new()));
                        }
                        first_answer(self.endpoints, remote, &what, log, |e, r| {
                            e.client.manifest(r, d.as_str())
                        })
                    })?;
                let rec = self.fetch(&image, &source, &manifest_digest, &manifest)?;
                if remote.tag.is_some() {
                    self.cache.write_ref(&image, &manifest_digest)?;
                }
                Ok(rec)
            }
        }
    }

    /// The cached image a name or digest stands for, touching no network.
    fn cached(&self, image: &str, remote: &Remote) -> Result<ImageRecord> {
        let not_cached = |why: &str| Error::Image {
            image: image.into(),
            why: format!("{why}; pull it without --offline first"),
        };
        let manifest = match &remote.digest {
            Some(d) => d.clone(),
            None => {
                self.cache
                    .read_ref(image)?
                    .ok_or_else(|| not_cached("not in the cache"))?
                    .manifest
            }
        };
        let rec = self
            .cache
            .read_image(&manifest)?
            .ok_or_else(|| not_cached("not in the cache"))?;
        if layer_paths(self.cache, &rec).is_none() {
            return Err(not_cached("some of its layers are missing from the cache"));
        }
        Ok(rec)
    }

    /// An OCI image layout: `index.json` names manifests by tag.
    fn pull_layout(&self, image: &str, files: Files, tag: Option<&str>) -> Result<ImageRecord> {
        let image = image.to_string();
        let read = |rel: &str| -> Result<Vec<u8>> {
            let mut buf = Vec::new();
            files
                .open(rel)
                .and_then(|mut r| r.read_to_end(&mut buf))
                .map_err(|source| Error::Source {
                    image: image.clone(),
                    path: files.describe(rel),
                    source,
                })?;
            Ok(buf)
        };
        let index_path = files.describe("index.json");
        let bytes = read("index.json")?;
        let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| Error::Image {
            image: image.clone(),
            why: format!(
                "{}: not an OCI image layout index: {e}",
                index_path.display()
            ),
        })?;
        let named: Vec<_> = index
            .manifests()
            .iter()
            .filter(|m| match tag {
                Some(t) => {
                    m.annotations()
                        .as_ref()
                        .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                        .map(String::as_str)
                        == Some(t)
                }
                None => true,
            })
            .collect();
        let entry = match (named.as_slice(), tag) {
            ([one], _) => *one,
            ([], Some(t)) => {
                return Err(Error::Image {
                    image,
                    why: format!("no image tagged {t:?} in {}", index_path.display()),
                })
            }
            ([], None) => {
                return Err(Error::Image {
                    image,
                    why: format!("{} lists no images", index_path.display()),
                })
            }
            (_, _) => {
                return Err(Error::Image {
                    image,
                    why: "the layout holds several images: name one as oci:DIR:TAG".into(),
                })
            }
        };
        let source = Source::Local {
            files,
            named: HashMap::new(),
        };
        let d = Digest::parse(entry.digest().as_ref()).map_err(|why| Error::Image {
            image: image.clone(),
            why,
        })?;
        let bytes = source.read_small(&image, &d, "manifest")?;
        let actual = cache::sha256(&bytes);
        if actual != d {
            return Err(cache::Error::DigestMismatch {
                what: format!("manifest of {image}"),
                expected: d.to_string(),
                actual: actual.to_string(),
            }
            .into());
        }
        let header = entry.media_type().to_string();
        let (manifest_digest, manifest) = self.select(&image, bytes, d, &header, |d| {
            Ok((source.read_small(&image, d, "manifest")?, String::new()))
        })?;
        self.fetch(&image, &source, &manifest_digest, &manifest)
    }

    /// The classic `docker save` format: `manifest.json` lists a config file and layer tars.
    /// It has no manifest of its own, so one is made from what it lists: the layers are
    /// uncompressed there, so each layer's digest is its diff_id, checked while unpacking.
    fn pull_docker_save(&self, image: &str, files: Files) -> Result<ImageRecord> {
        let bad = |why: String| Error::Image {
            image: image.into(),
            why,
        };
        let mut buf = Vec::new();
        files
            .open("manifest.json")
            .and_then(|mut r| r.read_to_end(&mut buf))
            .map_err(|source| Error::Source {
                image: image.into(),
                path: files.describe("manifest.json"),
                source,
            })?;
        let list: serde_json::Value =
            serde_json::from_slice(&buf).map_err(|e| bad(format!("manifest.json: {e}")))?;
        let entry = match list.as_array().map(Vec::as_slice) {
            Some([one]) => one,
            Some([]) | None => return Err(bad("manifest.json lists no image".into())),
            Some(_) => {
                return Err(bad(
                    "the archive holds several images; save one per file".into()
                ))
            }
        };
        let config_rel = entry["Config"]
            .as_str()
            .ok_or_else(|| bad("manifest.json has no Config".into()))?
            .to_string();
        let mut config_bytes = Vec::new();
        files
            .open(&config_rel)
            .and_then(|mut r| r.read_to_end(&mut config_bytes))
            .map_err(|source| Error::Source {
                image: image.into(),
                path: files.describe(&config_rel),
                source,
            })?;
        let config = ImageConfiguration::from_reader(&config_bytes[..])
            .map_err(|e| bad(format!("{config_rel}: {e}")))?;
        let layer_rels: Vec<String> = entry["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(String::from))
            .collect();
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != layer_rels.len() {
            return Err(bad(format!(
                "manifest.json lists {} layers, the config {}",
                layer_rels.len(),
                diff_ids.len()
            )));
        }
        let config_digest = cache::sha256(&config_bytes);
        let mut named = HashMap::from([(config_digest.clone(), config_rel)]);
        let mut layers = Vec::new();
        for (rel, diff) in layer_rels.iter().zip(diff_ids) {
            let d = Digest::parse(diff).map_err(bad)?;
            let size = match &files {
                Files::Tar { members, .. } => members.get(rel).map(|m| m.1),
                Files::Dir(dir) => std::fs::metadata(dir.join(rel)).ok().map(|m| m.len()),
            }
            .ok_or_else(|| {
                bad(format!(
                    "layer {rel} listed in manifest.json is not in the archive"
                ))
            })?;
            named.insert(d.clone(), rel.clone());
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                "digest": d.as_str(), "size": size,
            }));
        }
        let manifest_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.as_str(), "size": config_bytes.len(),
            },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest_json).expect("serializes");
        let digest = cache::sha256(&bytes);
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(|e| bad(format!("made-up manifest: {e}")))?;
        self.cache
            .put_blob(&digest, &bytes, &format!("manifest of {image}"))?;
        let source = Source::Local { files, named };
        self.fetch(image, &source, &digest, &manifest)
    }

    /// Follows an index to this platform's manifest, checking each step's digest.
    fn select(
        &self,
        image: &str,
        bytes: Vec<u8>,
        digest: Digest,
        header: &str,
        fetch: impl Fn(&Digest) -> Result<(Vec<u8>, String)>,
    ) -> Result<(Digest, ImageManifest)> {
        let media = media_type_of(&bytes, header);
        if media == "schema1" || media.contains("manifest.v1+prettyjws") {
            return Err(Error::Image {
                image: image.into(),
                why: "uses the Docker schema 1 manifest format, retired in 2019; re-push it with a current Docker or skopeo".into(),
            });
        }
        let (digest, bytes) = if INDEX_TYPES.contains(&media.as_str()) {
            let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| Error::Image {
                image: image.into(),
                why: format!("bad image index: {e}"),
            })?;
            let mut offered = Vec::new();
            let mut chosen = None;
            for m in index.manifests() {
                let Some(p) = m.platform() else { continue };
                let (os, arch, variant) = (
                    p.os().to_string(),
                    p.architecture().to_string(),
                    p.variant().clone(),
                );
                offered.push(match &variant {
                    Some(v) => format!("{os}/{arch}/{v}"),
                    None => format!("{os}/{arch}"),
                });
                if chosen.is_none() && self.opts.platform.matches(&os, &arch, variant.as_deref()) {
                    chosen = Some(m.digest().to_string());
                }
            }
            let Some(d) = chosen else {
                return Err(Error::Image {
                    image: image.into(),
                    why: format!(
                        "no manifest for {} (offered: {}); choose one with --platform",
                        self.opts.platform,
                        offered.join(", ")
                    ),
                });
            };
            let d = Digest::parse(&d).map_err(|why| Error::Image {
                image: image.into(),
                why,
            })?;
            let (b, _) = fetch(&d)?;
            let actual = cache::sha256(&b);
            if actual != d {
                return Err(cache::Error::DigestMismatch {
                    what: format!("{} manifest of {image}", self.opts.platform),
                    expected: d.to_string(),
                    actual: actual.to_string(),
                }
                .into());
            }
            (d, b)
        } else {
            (digest, bytes)
        };
        let manifest = ImageManifest::from_reader(&bytes[..]).map_err(|e| Error::Image {
            image: image.into(),
            why: format!("bad manifest {digest}: {e}"),
        })?;
        self.cache
            .put_blob(&digest, &bytes, &format!("manifest of {image}"))?;
        Ok((digest, manifest))
    }

    fn fetch(
        &self,
        image: &str,
        source: &Source,
        manifest_digest: &Digest,
        manifest: &ImageManifest,
    ) -> Result<ImageRecord> {
        let config_digest =
            Digest::parse(manifest.config().digest().as_ref()).map_err(|why| Error::Image {
                image: image.into(),
                why,
            })?;
        let config_bytes = match self.cache.read_blob(&config_digest)? {
            Some(b) => b,
            None => {
                let what = format!("config {} of {image}", config_digest.short());
                let _lock = self
                    .cache
                    .lock(&config_digest, &what, &|m: &str| self.opts.progress.note(m))?;
                match self.cache.read_blob(&config_digest)? {
                    Some(b) => b,
                    None => {
                        let b = source.read_small(image, &config_digest, "config")?;
                        self.cache.put_blob(&config_digest, &b, &what)?;
                        b
                    }
                }
            }
        };
        let config =
            ImageConfiguration::from_reader(&config_bytes[..]).map_err(|e| Error::Image {
                image: image.into(),
                why: format!("bad image config {config_digest}: {e}"),
            })?;
        let diff_ids: Vec<Option<Digest>> = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| Digest::parse(d).ok())
            .collect();
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::Image {
                image: image.into(),
                why: format!(
                    "manifest lists {} layers but its config {} lists {}",
                    manifest.layers().len(),
                    config_digest,
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (i, l) in manifest.layers().iter().enumerate() {
            let digest = Digest::parse(l.digest().as_ref()).map_err(|why| Error::Image {
                image: image.into(),
                why,
            })?;
            layers.push(LayerRef {
                digest,
                diff_id: diff_ids[i].clone(),
                size: l.size(),
                media_type: l.media_type().to_string(),
            });
        }

        // Only what the cache lacks; a warm image starts no thread at all, which `run` relies
        // on (a namespace can only be entered by a single-threaded process).
        let missing: VecDeque<&LayerRef> = layers
            .iter()
            .filter(|l| self.cache.find_layer(&l.digest).is_none())
            .collect();
        let workers = self.opts.jobs.clamp(1, 8).min(missing.len());
        let queue = Mutex::new(missing);
        let first_error = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if first_error.lock().unwrap().is_some() {
                        return;
                    }
                    let Some(layer) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    if let Err(e) = self.ensure_layer(image, source, layer) {
                        first_error.lock().unwrap().get_or_insert(e);
                        return;
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e);
        }

        let platform = format!("{}/{}", config.os(), config.architecture());
        let rec = ImageRecord {
            names: vec![image.to_string()],
            manifest: manifest_digest.clone(),
            config: config_digest,
            platform,
            size: layers.iter().map(|l| l.size).sum(),
            layers,
            pulled: cache::now(),
            last_used: cache::now(),
        };
        Ok(self.cache.write_image(rec)?)
    }

    fn ensure_layer(&self, image: &str, source: &Source, layer: &LayerRef) -> Result<PathBuf> {
        if let Some(p) = self.cache.find_layer(&layer.digest) {
            return Ok(p);
        }
        let what = format!("layer {} of {image}", layer.digest.short());
        let _lock = self
            .cache
            .lock(&layer.digest, &what, &|m: &str| self.opts.progress.note(m))?;
        if let Some(p) = self.cache.find_layer(&layer.digest) {
            self.opts.progress.note(&format!(
                "{what}: already unpacked by another process ({})",
                p.display()
            ));
            return Ok(p);
        }
        let dest = self.cache.layer_dir(&layer.digest);
        let started = std::time::Instant::now();
        let key = layer.digest.as_str();
        self.opts.progress.begin(
            key,
            &format!(
                "{what}: fetching {} -> {}",
                crate::host::human_bytes(layer.size),
                dest.display()
            ),
            layer.size,
        );
        let work = self.cache.work_dir()?;
        let root = work.path().join("root");
        std::fs::create_dir(&root).map_err(|e| cache::Error::Io {
            path: root.clone(),
            source: e,
        })?;

        // The declared size caps the read for every source alike (registry, OCI layout,
        // `docker save` member): whichever layer below reports the cut, `over` tells.
        let over = std::cell::Cell::new(None);
        let too_large = |received: u64| Error::LayerTooLarge {
            image: image.into(),
            digest: layer.digest.to_string(),
            declared: layer.size,
            received,
        };
        // The blob is kept (`blobs-v1/HEX`) so that `cache verify` can prove the layer and
        // the trees built from it against it; one already kept (a repair re-unpacking a
        // damaged layer) is read instead of the source, and checked against its digest here
        // like any other.
        let kept = self.cache.blob_path(&layer.digest);
        let (input, copy): (Box<dyn Read + '_>, _) = match open_kept(&kept) {
            Some(f) => (Box::new(f), None),
            None => {
                let copy = work.path().join("blob");
                let out = std::fs::File::create(&copy).map_err(|e| cache::Error::Io {
                    path: copy.clone(),
                    source: e,
                })?;
                (
                    Box::new(Tee {
                        inner: source.open(image, &layer.digest)?,
                        out,
                    }),
                    Some(copy),
                )
            }
        };
        let mut compressed = Hashing::new(Counting::new(
            unpack::compress::Capped::new(input, layer.size, &over),
            self.opts.progress,
            key,
        ));
        let unpacked = (|| -> Result<_> {
            let decompressed = unpack::compress::decompress(&mut compressed, &layer.media_type)?;
            let mut tar = Hashing::new(decompressed);
            let stats = unpack::extract::unpack_layer(&mut tar, &root, &what)?;
            let (diff_id, _) = tar.finish().map_err(|e| Error::Source {
                image: image.into(),
                path: dest.clone(),
                source: e,
            })?;
            Ok((stats, diff_id))
        })();
        if let Some(received) = over.get() {
            return Err(too_large(received));
        }
        let (stats, diff_id) = unpacked?;
        let finished = compressed.finish();
        if let Some(received) = over.get() {
            return Err(too_large(received));
        }
        let (digest, size) = finished.map_err(|e| Error::Source {
            image: image.into(),
            path: dest.clone(),
            source: e,
        })?;
        if digest != layer.digest {
            return Err(cache::Error::DigestMismatch {
                what,
                expected: layer.digest.to_string(),
                actual: digest.to_string(),
            }
            .into());
        }
        if size != layer.size {
            return Err(Error::Image {
                image: image.into(),
                why: format!(
                    "{what}: {size} bytes received, the manifest says {}",
                    layer.size
                ),
            });
        }
        if let Some(expected) = &layer.diff_id {
            if &diff_id != expected {
                return Err(cache::Error::DigestMismatch {
                    what: format!("{what} (uncompressed)"),
                    expected: expected.to_string(),
                    actual: diff_id.to_string(),
                }
                .into());
            }
        }
        let record = LayerRecord {
            digest: layer.digest.clone(),
            diff_id,
            media_type: layer.media_type.clone(),
            compressed_size: size,
            stats,
            // By descriptor: a tree deeper than PATH_MAX allows is counted, not an error.
            tree: crate::fswalk::summary(&root)
                .map(|(entries, bytes)| cache::TreeSummary { entries, bytes })
                .map_err(|e| cache::Error::Io {
                    path: root.clone(),
                    source: e,
                })?,
            source: image.to_string(),
            created: cache::now(),
        };
        self.cache.share_tree(&root)?;
        // The blob before the layer: a published layer always has its blob to be proven by.
        if let Some(copy) = copy {
            std::fs::rename(&copy, &kept).map_err(|e| cache::Error::Io {
                path: kept.clone(),
                source: e,
            })?;
        }
        let meta = work.path().join("layer.json");
        std::fs::write(
            &meta,
            serde_json::to_vec_pretty(&record).expect("serializes"),
        )
        .map_err(|e| cache::Error::Io {
            path: meta.clone(),
            source: e,
        })?;
        self.cache.publish(work, &dest)?;
        let secs = started.elapsed().as_secs_f64();
        self.opts.progress.end(
            key,
            &format!(
                "{what}: done, {} in {secs:.1} s ({}/s), {} entries",
                crate::host::human_bytes(size),
                crate::host::human_bytes((size as f64 / secs.max(1e-3)) as u64),
                record.stats.entries
            ),
        );
        Ok(dest)
    }
}

/// A kept layer blob, opened without following a symlink and only if it is a regular file
/// (a FIFO planted there must not block the pull).
fn open_kept(p: &Path) -> Option<std::io::BufReader<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
        .ok()?;
    f.metadata()
        .ok()?
        .is_file()
        .then(|| std::io::BufReader::with_capacity(1 << 20, f))
}

/// Copies what is read into a file: the layer blob, kept while it streams into the unpacker.
struct Tee<R> {
    inner: R,
    out: std::fs::File,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(&mut self.out, &buf[..n])?;
        Ok(n)
    }
}

/// Paths of an image's layer trees, bottom first, or None if any is missing.
pub fn layer_paths(cache: &Cache, rec: &ImageRecord) -> Option<Vec<PathBuf>> {
    rec.layers
        .iter()
        .map(|l| cache.find_layer(&l.digest).map(|p| p.join("root")))
        .collect()
}

/// The cached image a reference stands for, touching no network, or None when it must be
/// pulled: not cached, cached for another platform, or a layer missing. Local sources
/// (`oci:`, `docker-archive:`) are always read again (they may have changed).
pub fn cached(
    cache: &Cache,
    reference: &Reference,
    platform: &Platform,
) -> cache::Result<Option<ImageRecord>> {
    let Reference::Remote(remote) = reference else {
        return Ok(None);
    };
    let manifest = match &remote.digest {
        Some(d) => d.clone(),
        None => match cache.read_ref(&reference.to_string())? {
            Some(r) => r.manifest,
            None => return Ok(None),
        },
    };
    let Some(rec) = cache.read_image(&manifest)? else {
        return Ok(None);
    };
    if !same_platform(&rec.platform, platform) || layer_paths(cache, &rec).is_none() {
        return Ok(None);
    }
    Ok(Some(rec))
}

/// Whether a record's `os/arch[/variant]` is the one asked for (a variant only counts when
/// both name one: arm64 images often omit `v8`).
fn same_platform(recorded: &str, want: &Platform) -> bool {
    match Platform::parse(recorded) {
        Ok(p) => {
            p.os == want.os
                && p.arch == want.arch
                && (p.variant.is_none() || want.variant.is_none() || p.variant == want.variant)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_from_body_then_header() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":1,"name":"x"}"#, ""),
            "schema1"
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#, ""),
            INDEX_TYPES[0]
        );
        assert_eq!(
            media_type_of(
                br#"{"schemaVersion":2,"config":{}}"#,
                "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"
            ),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            media_type_of(b"{}", ""),
            "application/vnd.oci.image.manifest.v1+json"
        );
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(
            p.matches("linux", "arm64", Some("v8")),
            "an unnamed variant matches any"
        );
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(!v7.matches("linux", "arm", Some("v6")));
        assert!(
            Platform::parse("linux").is_err()
                && Platform::parse("a/b/c/d").is_err()
                && Platform::parse("/amd64").is_err()
        );
        assert_eq!(Platform::host().os, "linux");
    }
}
