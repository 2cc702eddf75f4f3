//! `cache verify`: proving blobs, layers and trees against their digests, trusting nothing
//! recorded beside an entry; and what `--repair` may do about each fault.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::cache::{Cache, Error, LayerRecord, Result, BLOBS, LAYERS, TREES};
use crate::fswalk;
use crate::image::reference::Digest;
use crate::image::unpack::{self, entry::Kind};

/// What `cache verify --repair` does about a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Repair {
    /// Remove the entry and pull the images that need it again (a layer is re-unpacked from
    /// its kept blob when that blob is sound, else fetched).
    Repull,
    /// Remove the image tree and build it again from the (sound) layers.
    Rebuild,
    /// Nothing `--repair` can do; `what` says what to do instead.
    None,
}

#[derive(Debug, Serialize)]
pub struct Fault {
    /// The cache entry at fault (what `--repair` removes).
    pub path: PathBuf,
    pub what: String,
    /// Image names that need this entry, to pull again on repair.
    pub images: Vec<String>,
    pub repair: Repair,
}

fn layer_record(dir: &Path) -> std::result::Result<LayerRecord, String> {
    let meta = dir.join("layer.json");
    let bytes = read_regular(&meta).map_err(|e| format!("{}: {e}", meta.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", meta.display()))
}

/// Opens a cache file for reading without following a symlink and without blocking on a
/// FIFO planted in its place, and only if it is a regular file.
fn open_regular(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

fn read_regular(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    open_regular(p)?.read_to_end(&mut out)?;
    Ok(out)
}

fn sha256_of(mut r: impl Read) -> std::io::Result<([u8; 32], u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((h.finalize().into(), n))
}

/// What one path of a layer (or of a tree) must be, as unpacking the blob makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Dir { mode: u32 },
    File { mode: u32, size: u64, sha: [u8; 32] },
    Symlink { target: Vec<u8> },
    Fifo { mode: u32 },
}

impl Want {
    fn kind(&self) -> &'static str {
        match self {
            Want::Dir { .. } => "directory",
            Want::File { .. } => "file",
            Want::Symlink { .. } => "symlink",
            Want::Fifo { .. } => "fifo",
        }
    }
}

fn kind_of(st: &rustix::fs::Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => "directory",
        FileType::RegularFile => "file",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        _ => "device or socket",
    }
}

/// Bits the cache's own policy may set or clear on a published entry, so they are not
/// compared: the group bits (`cache.group` gives the group read, and rwx and setgid on
/// directories) and the write bits (published entries may be made read-only). What a swap
/// would need to change to matter (owner and other read and execute, setuid, sticky) is
/// compared.
fn mode_differs(actual: u32, want: u32, dir: bool) -> bool {
    let policy = 0o222 | 0o070 | if dir { 0o2000 } else { 0 };
    (actual ^ want) & 0o7777 & !policy != 0
}

/// A layer as its blob says it unpacks: every path (after later entries replaced earlier
/// ones, hard links resolved, parents created), with what it must be.
#[derive(Debug, Default)]
struct Expected {
    paths: BTreeMap<Vec<u8>, Want>,
    /// The layer root's own mode, when the archive has a `./` entry.
    root_mode: Option<u32>,
    whiteouts: Vec<unpack::LayerPath>,
    opaque: Vec<unpack::LayerPath>,
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn key_of(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

impl Expected {
    /// Reads a decompressed layer tar once and models what `unpack` made of it. Member
    /// names and types are classified by `unpack::entry::classify` and modes mapped by
    /// `unpack::entry::{dir,file}_mode`, the unpacker's own functions; only the placement (a
    /// later member replacing an earlier one, parents resolved through the layer's own
    /// symlinks as `RESOLVE_IN_ROOT` does, missing parents made `0755`) is modelled here, on
    /// a map.
    fn from_tar(tar: impl Read) -> std::result::Result<Expected, String> {
        let mut exp = Expected::default();
        let mut archive = tar::Archive::new(tar);
        let entries = archive.entries().map_err(|e| e.to_string())?;
        for entry in entries {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let raw = entry.path_bytes().into_owned();
            let ty = entry.header().entry_type();
            let kind = unpack::entry::classify(&raw, ty)
                .map_err(|why| format!("{}: {why}", show(&raw)))?;
            let raw_mode = entry.header().mode().unwrap_or(0);
            let comps: Vec<Vec<u8>> = unpack::entry::normalize(&raw)
                .0
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            let want = match kind {
                Kind::Header | Kind::Device | Kind::Other => continue,
                Kind::Opaque(d) => {
                    exp.opaque.push(d);
                    continue;
                }
                Kind::Whiteout(w) => {
                    exp.whiteouts.push(w);
                    continue;
                }
                Kind::Dir if comps.is_empty() => {
                    exp.root_mode = Some(unpack::entry::dir_mode(raw_mode));
                    continue;
                }
                _ if comps.is_empty() => {
                    return Err(format!("{}: names the layer root", show(&raw)))
                }
                Kind::Dir => Want::Dir {
                    mode: unpack::entry::dir_mode(raw_mode),
                },
                Kind::File => {
                    let (sha, size) = sha256_of(&mut entry).map_err(|e| e.to_string())?;
                    Want::File {
                        mode: unpack::entry::file_mode(raw_mode),
                        size,
                        sha,
                    }
                }
                Kind::Symlink => Want::Symlink {
                    target: entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default(),
                },
                Kind::Fifo => Want::Fifo {
                    mode: unpack::entry::file_mode(raw_mode),
                },
                Kind::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let tcomps: Vec<Vec<u8>> = unpack::entry::normalize(&target)
                        .0
                        .into_iter()
                        .map(<[u8]>::to_vec)
                        .collect();
                    let Some((tname, tparents)) = tcomps.split_last() else {
                        return Err(format!("{}: hard link to the layer root", show(&raw)));
                    };
                    let mut tkey = exp.resolve(tparents, false)?;
                    push(&mut tkey, tname);
                    match exp.paths.get(&tkey) {
                        Some(Want::Dir { .. }) | None => {
                            return Err(format!(
                                "{}: hard link to {}, which is no file of the layer",
                                show(&raw),
                                show(&target)
                            ))
                        }
                        Some(w) => w.clone(),
                    }
                }
            };
            let (name, parents) = comps.split_last().expect("checked non-empty");
            let mut key = exp.resolve(parents, true)?;
            push(&mut key, name);
            exp.place(key, want);
        }
        Ok(exp)
    }

    /// Puts `want` at `key` as the unpacker's `clear_slot` does: a directory over a
    /// directory only changes its mode; anything else replaces what was there, subtree
    /// and all.
    fn place(&mut self, key: Vec<u8>, want: Want) {
        let both_dirs = matches!(
            (self.paths.get(&key), &want),
            (Some(Want::Dir { .. }), Want::Dir { .. })
        );
        if !both_dirs {
            remove_below(&mut self.paths, &key);
        }
        self.paths.insert(key, want);
    }

    /// The directory `parents` names, resolved inside the layer as the unpacker resolves
    /// an entry's parent: symlinks followed with the layer root as `/` (at most 40), `..`
    /// stopping at the root; a missing directory is made (`create`) unless it was reached
    /// through a symlink, which the unpacker refuses (a dangling symlink).
    fn resolve(
        &mut self,
        parents: &[Vec<u8>],
        create: bool,
    ) -> std::result::Result<Vec<u8>, String> {
        // Every key's parents are directories of the map (a key is only ever placed below
        // a resolved directory, and replacing a directory drops what was below it), so a
        // parent that is a directory already is its own resolution: the common case, and
        // linear rather than quadratic in a deep archive's depth.
        let direct = key_of(parents);
        if parents.is_empty() || matches!(self.paths.get(&direct), Some(Want::Dir { .. })) {
            return Ok(direct);
        }
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut pending: Vec<(Vec<u8>, bool)> =
            parents.iter().rev().map(|c| (c.clone(), false)).collect();
        let mut links = 0;
        while let Some((c, via_link)) = pending.pop() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            let key = key_of(&cur);
            match self.paths.get(&key) {
                Some(Want::Dir { .. }) => {}
                Some(Want::Symlink { target }) => {
                    links += 1;
                    if links > 40 {
                        return Err(format!("{}: too many levels of symlinks", show(&key)));
                    }
                    let target = target.clone();
                    cur.pop();
                    if target.first() == Some(&b'/') {
                        cur.clear();
                    }
                    pending.extend(
                        target
                            .split(|&b| b == b'/')
                            .rev()
                            .map(|t| (t.to_vec(), true)),
                    );
                }
                Some(_) => return Err(format!("{}: not a directory", show(&key))),
                None if create && !via_link => {
                    self.paths.insert(
                        key,
                        Want::Dir {
                            mode: unpack::entry::IMPLICIT_DIR_MODE,
                        },
                    );
                }
                None => return Err(format!("{}: no such directory", show(&key))),
            }
        }
        Ok(key_of(&cur))
    }
}

fn push(key: &mut Vec<u8>, name: &[u8]) {
    if !key.is_empty() {
        key.push(b'/');
    }
    key.extend_from_slice(name);
}

/// Removes `key` and everything below it from a path map.
fn remove_below<V>(paths: &mut BTreeMap<Vec<u8>, V>, key: &[u8]) {
    paths.remove(key);
    let mut prefix = key.to_vec();
    prefix.push(b'/');
    let below: Vec<Vec<u8>> = paths
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in below {
        paths.remove(&k);
    }
}

/// Differences found in one directory tree, at most [`MAX_LISTED`] of them spelled out.
#[derive(Default)]
struct Diffs {
    listed: Vec<String>,
    more: usize,
}

const MAX_LISTED: usize = 20;

impl Diffs {
    fn add(&mut self, rel: &[u8], what: String) {
        if self.listed.len() < MAX_LISTED {
            self.listed.push(format!("/{}: {what}", show(rel)));
        } else {
            self.more += 1;
        }
    }
    fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}

/// Checks one non-directory on disk against what it must be. `entry` is where the walk
/// met it; its content is read through a descriptor opened without following symlinks
/// and without blocking, and checked to be the inode that was met.
fn check_leaf(e: &fswalk::Entry<'_>, want: &Want) -> Option<String> {
    let st = e.stat;
    let actual = st.st_mode & 0o7777;
    match want {
        Want::Dir { .. } => unreachable!("directories are compared by the caller"),
        Want::Symlink { target } => {
            let now = match rustix::fs::readlinkat(e.dir, e.name, Vec::new()) {
                Ok(t) => t.into_bytes(),
                Err(err) => return Some(format!("cannot read the symlink: {err}")),
            };
            (&now != target).then(|| {
                format!(
                    "symlink to {:?}, the blob says {:?}",
                    show(&now),
                    show(target)
                )
            })
        }
        Want::Fifo { mode } => mode_differs(actual, *mode, false)
            .then(|| format!("mode {actual:04o}, the blob says {mode:04o}")),
        Want::File { mode, size, sha } => {
            if st.st_size as u64 != *size {
                return Some(format!("{} bytes, the blob says {size}", st.st_size));
            }
            let opened = rustix::fs::openat(
                e.dir,
                e.name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            );
            let f = match opened {
                Ok(fd) => std::fs::File::from(fd),
                Err(err) => return Some(format!("cannot open: {err}")),
            };
            match rustix::fs::fstat(&f) {
                Ok(now) if now.st_ino == st.st_ino && now.st_dev == st.st_dev => {}
                _ => return Some("replaced while being checked".into()),
            }
            match sha256_of(std::io::BufReader::with_capacity(256 << 10, f)) {
                Ok((got, _)) if &got != sha => {
                    return Some(format!(
                        "content differs: sha256:{}, the blob says sha256:{}",
                        hex::encode(got),
                        hex::encode(sha)
                    ))
                }
                Ok(_) => {}
                Err(err) => return Some(format!("cannot read: {err}")),
            }
            mode_differs(actual, *mode, false)
                .then(|| format!("mode {actual:04o}, the blob says {mode:04o}"))
        }
    }
}

fn type_matches(st: &rustix::fs::Stat, want: &Want) -> bool {
    matches!(
        (FileType::from_raw_mode(st.st_mode), want),
        (FileType::Directory, Want::Dir { .. })
            | (FileType::RegularFile, Want::File { .. })
            | (FileType::Symlink, Want::Symlink { .. })
            | (FileType::Fifo, Want::Fifo { .. })
    )
}

fn open_root(root: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// A layer's inodes that matched the blob: a tree file that is one of them is proven.
type Inodes = HashMap<Vec<u8>, (u64, u64)>;

/// Compares a layer directory's `root/` with what its blob says, path by path.
fn compare_layer(root: &Path, exp: &Expected, diffs: &mut Diffs) -> std::io::Result<Inodes> {
    let fd = open_root(root)?;
    if let Some(mode) = exp.root_mode {
        let actual = rustix::fs::fstat(&fd)?.st_mode & 0o7777;
        if mode_differs(actual, mode, true) {
            diffs.add(b"", format!("mode {actual:04o}, the blob says {mode:04o}"));
        }
    }
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut inodes = Inodes::new();
    fswalk::walk(
        fd.as_fd(),
        &mut |e| {
            seen.insert(e.rel.to_vec());
            let Some(want) = exp.paths.get(e.rel) else {
                diffs.add(
                    e.rel,
                    format!("a {} the blob does not have", kind_of(e.stat)),
                );
                return Ok(fswalk::Step::Skip);
            };
            if !type_matches(e.stat, want) {
                diffs.add(
                    e.rel,
                    format!("a {}, the blob says a {}", kind_of(e.stat), want.kind()),
                );
                return Ok(fswalk::Step::Skip);
            }
            if let Want::Dir { mode } = want {
                let actual = e.stat.st_mode & 0o7777;
                if mode_differs(actual, *mode, true) {
                    diffs.add(
                        e.rel,
                        format!("mode {actual:04o}, the blob says {mode:04o}"),
                    );
                }
                return Ok(fswalk::Step::Descend);
            }
            match check_leaf(e, want) {
                Some(what) => diffs.add(e.rel, what),
                None => {
                    inodes.insert(e.rel.to_vec(), (e.stat.st_dev, e.stat.st_ino));
                }
            }
            Ok(fswalk::Step::Skip)
        },
        &mut |_| Ok(()),
    )?;
    missing(&exp.paths, &seen, diffs);
    Ok(inodes)
}

/// Paths the blob (or the union of an image's layers) has and the tree lacks. A FIFO may
/// be missing: the unpacker skips those the filesystem refuses.
fn missing(paths: &BTreeMap<Vec<u8>, Want>, seen: &BTreeSet<Vec<u8>>, diffs: &mut Diffs) {
    for (k, w) in paths {
        if !seen.contains(k) && !matches!(w, Want::Fifo { .. }) {
            // Below a directory already reported missing, say nothing more.
            let under_missing = k
                .iter()
                .rposition(|&b| b == b'/')
                .is_some_and(|i| !seen.contains(&k[..i]));
            if !under_missing {
                diffs.add(k, format!("missing (the blob has a {})", w.kind()));
            }
        }
    }
}

/// One layer as proven: what its blob says and which of its inodes matched.
struct Proven {
    exp: Expected,
    inodes: Inodes,
}

/// Streams a kept layer blob once: checks its digest and models its tar.
fn read_layer_blob(
    blob: &Path,
    digest: &Digest,
    media_type: &str,
) -> std::result::Result<Expected, (bool, String)> {
    let f = open_regular(blob).map_err(|e| (true, format!("cannot read the blob: {e}")))?;
    let mut hashing = crate::cache::Hashing::new(std::io::BufReader::with_capacity(1 << 20, f));
    let parsed = unpack::compress::decompress_layer(&mut hashing, media_type, "blob")
        .map_err(|e| e.to_string())
        .and_then(Expected::from_tar);
    let (actual, _) = hashing
        .finish()
        .map_err(|e| (true, format!("cannot read the blob: {e}")))?;
    if &actual != digest {
        return Err((true, format!("blob content hashes to {actual}")));
    }
    parsed.map_err(|why| (false, format!("the blob does not unpack: {why}")))
}

/// `cache verify`: proves the cache's content against the digests that name it.
///
/// The only things trusted are digests: an image record names its layers by the sha256 of
/// their blobs, and every blob is kept in `blobs-v1/` (layer blobs too, since pulls keep
/// them for exactly this). Nothing recorded alongside an entry (`layer.json` counts, file
/// modes, who owns what) is trusted, since whoever could change a file could change that.
///
/// - Blobs: each is re-hashed against its name, streaming (a layer blob in the same pass
///   that reads its tar). A FIFO or symlink in place of one is a fault, never waited on or
///   followed.
/// - Layers (`layers-v1/HEX/root`): the blob's tar is read once and modelled as the
///   unpacker makes it (see [`Expected::from_tar`]); then the directory is walked by
///   descriptor (any depth) and each path compared: type, mode (outside the bits the
///   cache's sharing policy owns, see [`mode_differs`]), size, sha256 of a file's content,
///   a symlink's target; paths the blob lacks and paths it has that are missing are faults.
/// - Trees (`trees-v1/HEX/root`): the union of the image's layers is computed as `rootfs`
///   builds it (opaque directories, then whiteouts, then entries, layer by layer) from the
///   proven layer models, so each tree path knows the layer file it must be. Trees are hard
///   links to layer files: a tree file with the inode of that proven layer file is proven
///   without reading it; any other inode (a copy from a read-only site cache, or a swap) is
///   compared like a layer file. Extra and missing paths are faults.
///
/// Cost: each blob is read and decompressed once, each layer file read once; tree files
/// cost one `lstat` each.
pub fn verify(cache: &Cache) -> Result<Vec<Fault>> {
    let images = cache.images()?;
    let users = |d: &Digest| -> Vec<String> {
        images
            .iter()
            .filter(|i| {
                &i.manifest == d || &i.config == d || i.layers.iter().any(|l| &l.digest == d)
            })
            .filter_map(|i| i.names.first().cloned())
            .collect()
    };
    let mut faults = Vec::new();
    let own = |p: &Path| p.starts_with(cache.root());

    // Layers: this cache's, and those of read-only caches that images here use.
    let mut layer_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let layers = cache.root().join(LAYERS);
    for e in std::fs::read_dir(&layers)
        .map_err(|e| Error::Io {
            path: layers.clone(),
            source: e,
        })?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        match Digest::parse(&format!("sha256:{name}")) {
            Ok(_) => {
                layer_dirs.insert(name, e.path());
            }
            Err(_) => faults.push(Fault {
                path: e.path(),
                what: "not a layer: its name is no digest".into(),
                images: vec![],
                repair: Repair::Repull,
            }),
        }
    }
    for img in &images {
        for l in &img.layers {
            if let Some(dir) = cache.find_layer(&l.digest) {
                layer_dirs.entry(l.digest.hex().to_string()).or_insert(dir);
            }
        }
    }
    let media_type = |hex: &str| -> String {
        images
            .iter()
            .flat_map(|i| &i.layers)
            .find(|l| l.digest.hex() == hex)
            .map(|l| l.media_type.clone())
            .unwrap_or_default()
    };
    let mut proven: HashMap<String, Proven> = HashMap::new();
    let mut layer_blobs: BTreeSet<String> = BTreeSet::new();
    for (hex, dir) in &layer_dirs {
        let d = Digest::parse(&format!("sha256:{hex}")).expect("checked above");
        let names = users(&d);
        let fault = |what: String, repair: Repair| Fault {
            path: dir.clone(),
            what: format!("layer {d} of {}: {what}", list(&names)),
            images: names.clone(),
            repair: if own(dir) { repair } else { Repair::None },
        };
        if let Err(why) = layer_record(dir) {
            faults.push(fault(why, Repair::Repull));
            continue;
        }
        let Some(blob) = find_blob(cache, &d) else {
            faults.push(fault(
                "its blob is not kept, so its content cannot be proven (pulled by an older \
                 lpmx-job); --repair unpacks it again from a fresh download"
                    .into(),
                Repair::Repull,
            ));
            continue;
        };
        layer_blobs.insert(hex.clone());
        let mt = match media_type(hex) {
            m if !m.is_empty() => m,
            _ => layer_record(dir).map(|r| r.media_type).unwrap_or_default(),
        };
        let exp = match read_layer_blob(&blob, &d, &mt) {
            Ok(exp) => exp,
            Err((blob_bad, why)) => {
                if blob_bad {
                    faults.push(Fault {
                        path: blob.clone(),
                        what: format!("layer blob {d} of {}: {why}", list(&names)),
                        images: names.clone(),
                        repair: if own(&blob) {
                            Repair::Repull
                        } else {
                            Repair::None
                        },
                    });
                    faults.push(fault(
                        "cannot be proven: its blob is damaged".into(),
                        Repair::Repull,
                    ));
                } else {
                    faults.push(fault(why, Repair::None));
                }
                continue;
            }
        };
        let mut diffs = Diffs::default();
        match compare_layer(&dir.join("root"), &exp, &mut diffs) {
            Ok(inodes) => {
                for what in diffs_text(&diffs) {
                    faults.push(fault(what, Repair::Repull));
                }
                if diffs.is_empty() {
                    proven.insert(hex.clone(), Proven { exp, inodes });
                } else {
                    // Damaged, but its model still tells what trees built on it must be.
                    proven.insert(
                        hex.clone(),
                        Proven {
                            exp,
                            inodes: Inodes::new(),
                        },
                    );
                }
            }
            Err(e) => faults.push(fault(format!("cannot walk it: {e}"), Repair::Repull)),
        }
    }

    // The other blobs: manifests and configs, re-hashed streaming.
    let blobs = cache.root().join(BLOBS);
    for e in std::fs::read_dir(&blobs)
        .map_err(|e| Error::Io {
            path: blobs.clone(),
            source: e,
        })?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(d) = Digest::parse(&format!("sha256:{name}")) else {
            faults.push(Fault {
                path: e.path(),
                what: "not a blob: its name is no digest".into(),
                images: vec![],
                repair: Repair::Repull,
            });
            continue;
        };
        if layer_blobs.contains(&name) {
            continue;
        }
        let hashed = open_regular(&e.path())
            .and_then(|f| sha256_of(std::io::BufReader::new(f)))
            .map(|(sha, _)| Digest::from_sha256(&sha));
        let what = match hashed {
            Ok(actual) if actual == d => continue,
            Ok(actual) => format!("blob {d}: its content hashes to {actual}"),
            Err(err) => format!("blob {d}: cannot read it: {err}"),
        };
        faults.push(Fault {
            path: e.path(),
            what,
            images: users(&d),
            repair: Repair::Repull,
        });
    }

    // Images: their parts present, their trees proven.
    for img in &images {
        let names: Vec<String> = img.names.first().cloned().into_iter().collect();
        for l in &img.layers {
            if cache.find_layer(&l.digest).is_none() {
                faults.push(Fault {
                    path: cache.layer_dir(&l.digest),
                    what: format!("layer {} of {} is missing", l.digest, list(&img.names)),
                    images: names.clone(),
                    repair: Repair::Repull,
                });
            }
        }
        if find_blob(cache, &img.config).is_none() {
            faults.push(Fault {
                path: cache.blob_path(&img.config),
                what: format!("config {} of {} is missing", img.config, list(&img.names)),
                images: names.clone(),
                repair: Repair::Repull,
            });
        }
        let tree = cache.root().join(TREES).join(img.manifest.hex());
        if tree.symlink_metadata().is_err() {
            continue;
        }
        let fault = |what: String, repair: Repair| Fault {
            path: tree.clone(),
            what: format!("tree of {}: {what}", list(&img.names)),
            images: names.clone(),
            repair,
        };
        let models: Option<Vec<&Proven>> = img
            .layers
            .iter()
            .map(|l| proven.get(l.digest.hex()))
            .collect();
        let Some(models) = models else {
            faults.push(fault(
                "cannot be proven until its layers are (see their faults)".into(),
                Repair::Rebuild,
            ));
            continue;
        };
        match read_regular(&tree.join("tree.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::cache::rootfs::TreeRecord>(&b).ok())
        {
            Some(t)
                if t.layers
                    == img
                        .layers
                        .iter()
                        .map(|l| l.digest.clone())
                        .collect::<Vec<_>>() => {}
            _ => {
                faults.push(fault(
                    "tree.json is missing, damaged or names other layers".into(),
                    Repair::Rebuild,
                ));
                continue;
            }
        }
        let union = union_of(&models);
        let mut diffs = Diffs::default();
        match compare_tree(&tree.join("root"), &union, &models, &mut diffs) {
            Ok(()) => {
                for what in diffs_text(&diffs) {
                    faults.push(fault(what, Repair::Rebuild));
                }
            }
            Err(e) => faults.push(fault(format!("cannot walk it: {e}"), Repair::Rebuild)),
        }
    }
    Ok(faults)
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "no image".into()
    } else {
        names.join(", ")
    }
}

fn diffs_text(d: &Diffs) -> Vec<String> {
    let mut out = d.listed.clone();
    if d.more > 0 {
        out.push(format!("and {} more differences", d.more));
    }
    out
}

/// A blob in this cache or a read-only one.
fn find_blob(cache: &Cache, d: &Digest) -> Option<PathBuf> {
    cache
        .readonly_roots()
        .iter()
        .chain(std::iter::once(&cache.root().to_path_buf()))
        .map(|r| r.join(BLOBS).join(d.hex()))
        .find(|p| p.symlink_metadata().is_ok())
}

/// An image's root filesystem as `rootfs` flattens it: for each path, what it must be and
/// which layer (index) provides it.
fn union_of(layers: &[&Proven]) -> BTreeMap<Vec<u8>, (Want, usize)> {
    let mut u: BTreeMap<Vec<u8>, (Want, usize)> = BTreeMap::new();
    // `rootfs::inside`: every parent an existing directory (never through a symlink).
    let reachable = |u: &BTreeMap<Vec<u8>, (Want, usize)>, p: &unpack::LayerPath| -> bool {
        let comps: Vec<&[u8]> = p
            .as_bytes()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        !comps.is_empty()
            && (1..comps.len())
                .all(|i| matches!(u.get(&comps[..i].join(&b'/')), Some((Want::Dir { .. }, _))))
    };
    for (i, l) in layers.iter().enumerate() {
        for d in &l.exp.opaque {
            if reachable(&u, d) && matches!(u.get(d.as_bytes()), Some((Want::Dir { .. }, _))) {
                let keep = u.get(d.as_bytes()).cloned();
                remove_below(&mut u, d.as_bytes());
                u.insert(d.as_bytes().to_vec(), keep.expect("checked"));
            }
        }
        for w in &l.exp.whiteouts {
            if reachable(&u, w) {
                remove_below(&mut u, w.as_bytes());
            }
        }
        for (k, want) in &l.exp.paths {
            match (u.get(k), want) {
                (Some((Want::Dir { .. }, _)), Want::Dir { mode }) => {
                    // Merged; the upper layer's mode is the one set last.
                    u.insert(k.clone(), (Want::Dir { mode: *mode }, i));
                }
                _ => {
                    remove_below(&mut u, k);
                    u.insert(k.clone(), (want.clone(), i));
                }
            }
        }
    }
    u
}

/// Compares an image tree with the union of its proven layers.
fn compare_tree(
    root: &Path,
    union: &BTreeMap<Vec<u8>, (Want, usize)>,
    layers: &[&Proven],
    diffs: &mut Diffs,
) -> std::io::Result<()> {
    let fd = open_root(root)?;
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    fswalk::walk(
        fd.as_fd(),
        &mut |e| {
            seen.insert(e.rel.to_vec());
            let Some((want, from)) = union.get(e.rel) else {
                diffs.add(
                    e.rel,
                    format!("a {} that none of its layers has", kind_of(e.stat)),
                );
                return Ok(fswalk::Step::Skip);
            };
            if !type_matches(e.stat, want) {
                diffs.add(
                    e.rel,
                    format!(
                        "a {}, its layer {} says a {}",
                        kind_of(e.stat),
                        from + 1,
                        want.kind()
                    ),
                );
                return Ok(fswalk::Step::Skip);
            }
            if let Want::Dir { mode } = want {
                let actual = e.stat.st_mode & 0o7777;
                if mode_differs(actual, *mode, true) {
                    diffs.add(
                        e.rel,
                        format!("mode {actual:04o}, its layers say {mode:04o}"),
                    );
                }
                return Ok(fswalk::Step::Descend);
            }
            // The proven layer file itself (a hard link): nothing more to read.
            if layers[*from].inodes.get(e.rel) == Some(&(e.stat.st_dev, e.stat.st_ino)) {
                return Ok(fswalk::Step::Skip);
            }
            if let Some(what) = check_leaf(e, want) {
                diffs.add(
                    e.rel,
                    format!("{what} (not the file of its layer {})", from + 1),
                );
            }
            Ok(fswalk::Step::Skip)
        },
        &mut |_| Ok(()),
    )?;
    let wants: BTreeMap<Vec<u8>, Want> = union
        .iter()
        .map(|(k, (w, _))| (k.clone(), w.clone()))
        .collect();
    missing(&wants, &seen, diffs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ImageRecord;
    use std::time::Duration;

    fn tar(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn add(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        ty: tar::EntryType,
        mode: u32,
        data: &[u8],
        link: &str,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    }

    /// Unpacks a layer tar as a pull does (blob kept, `layer.json` written) and returns its
    /// reference.
    fn layer(cache: &Cache, bytes: &[u8]) -> crate::cache::LayerRef {
        let d = crate::cache::sha256(bytes);
        std::fs::write(cache.blob_path(&d), bytes).unwrap();
        let dir = cache.layer_dir(&d);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        let stats = unpack::extract::unpack_layer(bytes, &dir.join("root"), "test layer").unwrap();
        let rec = LayerRecord {
            digest: d.clone(),
            diff_id: d.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            compressed_size: bytes.len() as u64,
            stats,
            tree: Default::default(),
            source: "test".into(),
            created: 0,
        };
        std::fs::write(dir.join("layer.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
        crate::cache::LayerRef {
            digest: d,
            diff_id: None,
            size: bytes.len() as u64,
            media_type: rec.media_type,
        }
    }

    /// Two layers with what trips a naive model: later members replacing earlier ones (a
    /// directory by a file), entries written through the layer's own symlinked parent,
    /// implicit parents, a hard link, setuid dropped, a `./` root entry, then a whiteout and
    /// an opaque directory above.
    fn image(cache: &Cache) -> ImageRecord {
        use tar::EntryType as T;
        let l1 = tar(|b| {
            add(b, "./", T::Directory, 0o750, b"", "");
            add(b, "bin/tool", T::Regular, 0o4755, b"#!tool v1\n", "");
            add(b, "bin/same", T::Regular, 0o644, b"AAAA", "");
            add(b, "data/", T::Directory, 0o500, b"", "");
            add(b, "data/x", T::Regular, 0o644, b"x", "");
            add(b, "lib", T::Symlink, 0o777, b"", "real/lib");
            add(b, "real/lib/", T::Directory, 0o755, b"", "");
            add(b, "lib/libc.so", T::Regular, 0o755, b"libc", "");
            add(
                b,
                "deep/er/file",
                T::Regular,
                0o600,
                b"implicit parents",
                "",
            );
            add(b, "hard", T::Link, 0, b"", "bin/same");
            add(b, "gone/", T::Directory, 0o755, b"", "");
            add(b, "gone/a", T::Regular, 0o644, b"a", "");
            add(b, "gone", T::Regular, 0o644, b"now a file", "");
            add(b, "opq/keep-not", T::Regular, 0o644, b"lower", "");
        });
        let l2 = tar(|b| {
            add(b, "bin/.wh.same", T::Regular, 0o644, b"", "");
            add(b, "opq/.wh..wh..opq", T::Regular, 0o644, b"", "");
            add(b, "opq/new", T::Regular, 0o644, b"upper", "");
            add(b, "bin/tool", T::Regular, 0o755, b"#!tool v2\n", "");
        });
        let rec = ImageRecord {
            names: vec!["example.org/test:1".into()],
            manifest: crate::cache::sha256(b"manifest"),
            config: crate::cache::sha256(b"config"),
            platform: "linux/amd64".into(),
            layers: vec![layer(cache, &l1), layer(cache, &l2)],
            size: 0,
            pulled: 0,
            last_used: 0,
        };
        cache.put_blob(&rec.config, b"config", "config").unwrap();
        cache.write_image(rec.clone()).unwrap();
        crate::cache::rootfs::image_tree(cache, &rec, &|_| {}).unwrap();
        rec
    }

    fn replace(p: &Path, content: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let dir = p.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _ = std::fs::remove_file(p);
        std::fs::write(p, content).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_model_matches_what_unpack_and_rootfs_make_and_catches_each_change() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path(), Duration::from_secs(5), vec![], None).unwrap();
        let rec = image(&cache);
        let faults = verify(&cache).unwrap();
        assert!(faults.is_empty(), "{faults:#?}");

        let tree = cache
            .root()
            .join(TREES)
            .join(rec.manifest.hex())
            .join("root");
        let l1 = cache.layer_dir(&rec.layers[0].digest).join("root");
        let expect = |needle: &str, what: &str| {
            let faults = verify(&cache).unwrap();
            assert!(
                faults
                    .iter()
                    .any(|f| f.what.contains(needle) && f.what.contains(what)),
                "{needle} {what}: {faults:#?}"
            );
        };
        // Same size, other content, in the tree (a new inode, as a swap makes).
        replace(&tree.join("bin/tool"), b"#!tool v3\n", 0o755);
        expect("/bin/tool", "content differs");
        // An executable bit added to a layer file that the tree links.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            l1.join("real/lib/libc.so"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        expect("/real/lib/libc.so", "mode 4755, the blob says 0755");
        // An extra file, a missing one, a symlink retargeted.
        std::fs::write(tree.join("etc-extra"), b"").unwrap();
        expect("/etc-extra", "none of its layers has");
        std::fs::remove_file(l1.join("deep/er/file")).unwrap();
        expect("/deep/er/file", "missing");
        std::fs::remove_file(tree.join("lib")).unwrap();
        std::os::unix::fs::symlink("/tmp", tree.join("lib")).unwrap();
        expect("/lib", "symlink to \"/tmp\"");
        // The whiteout and the opaque directory: their victims back in the tree are extra.
        std::fs::write(tree.join("bin/same"), b"AAAA").unwrap();
        expect("/bin/same", "none of its layers has");
        std::fs::write(tree.join("opq/keep-not"), b"lower").unwrap();
        expect("/opq/keep-not", "none of its layers has");
        for f in verify(&cache).unwrap() {
            assert!(
                f.what.contains("example.org/test:1"),
                "names the image: {f:?}"
            );
            assert_ne!(f.repair, Repair::None, "{f:?}");
        }
    }

    #[test]
    fn a_model_of_a_deep_or_self_referencing_archive_stays_finite() {
        use tar::EntryType as T;
        let bytes = tar(|b| {
            add(b, "a", T::Symlink, 0o777, b"", "b");
            add(b, "b", T::Symlink, 0o777, b"", "a");
            add(b, "a/x", T::Regular, 0o644, b"x", "");
        });
        let err = Expected::from_tar(&bytes[..]).unwrap_err();
        assert!(err.contains("symlinks"), "{err}");
        let deep = "d/".repeat(2000);
        let bytes = tar(|b| add(b, &format!("{deep}f"), T::Regular, 0o644, b"f", ""));
        let started = std::time::Instant::now();
        let exp = Expected::from_tar(&bytes[..]).unwrap();
        assert_eq!(exp.paths.len(), 2001);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
