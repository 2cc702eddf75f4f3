//! An image's root filesystem, flattened once per image into the cache: its layers applied
//! bottom to top, with whiteouts and opaque directories, as hard links to the layer files
//! (no copies). The tree is published like every cache entry (work area, one rename) and
//! never written afterwards; containers mount it read-only under a per-task scratch layer.
//!
//! ```text
//! CACHE/trees-v1/HEX/root/       the flattened tree (HEX: the image's manifest digest)
//! CACHE/trees-v1/HEX/mnt/        an empty directory: where a task mounts its scratch tmpfs
//! CACHE/trees-v1/HEX/tree.json   what it was built from
//! ```

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{self, Cache, ImageRecord};
use crate::image::reference::Digest;

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::cache::TREES;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error("{image}: layer {layer} is not in the cache; pull the image again")]
    MissingLayer { image: String, layer: String },
    #[error("{image}: building its root filesystem at {path}: {source}")]
    Io {
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TreeRecord {
    pub manifest: Digest,
    pub layers: Vec<Digest>,
    pub links: u64,
    pub copies: u64,
    pub created: u64,
}

/// The tree directory of an image, building it first if no cache (read-only ones included)
/// holds it.
pub fn image_tree(cache: &Cache, rec: &ImageRecord, log: &dyn Fn(&str)) -> Result<PathBuf> {
    if let Some(p) = cache.find_entry(TREES, &rec.manifest, "tree.json") {
        return Ok(p);
    }
    let image = rec
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| rec.manifest.to_string());
    let what = format!("root filesystem of {image}");
    let _lock = cache.lock(&tree_lock_digest(&rec.manifest), &what, log)?;
    if let Some(p) = cache.find_entry(TREES, &rec.manifest, "tree.json") {
        return Ok(p);
    }
    let mut layers = Vec::new();
    for l in &rec.layers {
        let dir = cache
            .find_layer(&l.digest)
            .ok_or_else(|| Error::MissingLayer {
                image: image.clone(),
                layer: l.digest.to_string(),
            })?;
        let meta: cache::LayerRecord =
            serde_json::from_slice(&std::fs::read(dir.join("layer.json")).map_err(|source| {
                Error::Io {
                    image: image.clone(),
                    path: dir.clone(),
                    source,
                }
            })?)
            .map_err(|e| Error::Io {
                image: image.clone(),
                path: dir.join("layer.json"),
                source: std::io::Error::other(e),
            })?;
        layers.push((
            dir.join("root"),
            meta.stats.whiteouts,
            meta.stats.opaque_dirs,
        ));
    }
    let dest = cache.root().join(TREES).join(rec.manifest.hex());
    let started = std::time::Instant::now();
    let work = cache.work_dir()?;
    let root = work.path().join("root");
    let io = |path: &Path| {
        let (image, path) = (image.clone(), path.to_path_buf());
        move |source| Error::Io {
            image,
            path,
            source,
        }
    };
    std::fs::create_dir(&root).map_err(io(&root))?;
    let mut stats = (0u64, 0u64);
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    for (layer_root, whiteouts, opaque) in &layers {
        for d in opaque {
            // An opaque directory hides what lower layers put in it; its own entries follow.
            if let Some(p) = inside(&root, d.as_path()) {
                if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    clear_dir(&p).map_err(io(&p))?;
                }
            }
        }
        for w in whiteouts {
            if let Some(p) = inside(&root, w.as_path()) {
                remove_any(&p).map_err(io(&p))?;
            }
        }
        apply_layer(layer_root, &root, &mut stats, &mut dir_modes).map_err(|(p, e)| Error::Io {
            image: image.clone(),
            path: p,
            source: e,
        })?;
    }
    // Directory modes last and deepest first, so a read-only directory does not block its
    // own children while the tree is built.
    dir_modes.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, mode) in dir_modes {
        if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | 0o700));
        }
    }
    cache.share_tree(&root)?;
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).map_err(io(&mnt))?;
    let record = TreeRecord {
        manifest: rec.manifest.clone(),
        layers: rec.layers.iter().map(|l| l.digest.clone()).collect(),
        links: stats.0,
        copies: stats.1,
        created: cache::now(),
    };
    let meta = work.path().join("tree.json");
    std::fs::write(
        &meta,
        serde_json::to_vec_pretty(&record).expect("serializes"),
    )
    .map_err(io(&meta))?;
    cache.publish(work, &dest)?;
    log(&format!(
        "{what}: built {} in {:.2} s ({} links, {} copies)",
        dest.display(),
        started.elapsed().as_secs_f64(),
        record.links,
        record.copies
    ));
    Ok(dest)
}

/// Marks a tree as in use for as long as the calling process and whatever it execs live: a
/// shared flock on `TREE.inuse`, on a descriptor deliberately left open across exec. `cache
/// prune` skips a tree whose marker it cannot lock exclusively. Trees in read-only site caches
/// are never pruned by us and need no marker.
pub fn hold(tree: &Path) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    let marker = tree.with_extension("inuse");
    // Read-only is enough for a shared flock; the marker may be another member's, and is
    // opened as every cache file is (no symlink, no FIFO: issue 11 D5).
    let f = match cache::safe::open_or_create(&marker, cache::safe::Access::Read, cache::FILE_MODE)
    {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    f.lock_shared()?;
    let fd = std::os::fd::OwnedFd::from(f);
    // SAFETY: clearing FD_CLOEXEC on a descriptor we own, so the lock outlives exec.
    unsafe {
        use std::os::fd::AsRawFd;
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags & !libc::FD_CLOEXEC);
    }
    Ok(Some(fd))
}

/// The image's tree, built if needed and held (see [`hold`]) for this process and what it
/// execs. Rechecked after taking the hold, since a prune may have removed it in between.
pub fn held_tree(
    cache: &Cache,
    rec: &ImageRecord,
    log: &dyn Fn(&str),
) -> Result<(PathBuf, Option<std::os::fd::OwnedFd>)> {
    for _ in 0..3 {
        let tree = image_tree(cache, rec, log)?;
        let held = hold(&tree).map_err(|source| Error::Io {
            image: rec.names.first().cloned().unwrap_or_default(),
            path: tree.with_extension("inuse"),
            source,
        })?;
        if tree.join("tree.json").is_file() {
            return Ok((tree, held));
        }
    }
    Err(Error::Io {
        image: rec.names.first().cloned().unwrap_or_default(),
        path: cache.root().join(TREES),
        source: std::io::Error::other(
            "the tree keeps being removed while being entered (a prune loop?)",
        ),
    })
}

/// Whether some process holds the tree (see [`hold`]).
pub fn in_use(tree: &Path) -> bool {
    let marker = tree.with_extension("inuse");
    match cache::safe::open(
        &marker,
        cache::safe::Expect::File,
        cache::safe::Access::Read,
    ) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Trees lock on a digest of their own, so building one never waits on the manifest's lock.
fn tree_lock_digest(manifest: &Digest) -> Digest {
    cache::sha256(format!("tree:{manifest}").as_bytes())
}

/// `root/rel`, or None when `rel` would leave the root or pass through a symlink: a whiteout
/// must never reach outside the tree it edits.
fn inside(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        match c {
            Component::Normal(n) => p.push(n),
            Component::CurDir => continue,
            _ => return None,
        }
        if i + 1 < comps.len() && !p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            return None;
        }
    }
    (p != root).then_some(p)
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            cache::remove_tree(p);
            Ok(())
        }
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn clear_dir(p: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(p)? {
        remove_any(&e?.path())?;
    }
    Ok(())
}

/// Adds one layer's entries over the tree: directories merge, everything else replaces.
fn apply_layer(
    layer: &Path,
    root: &Path,
    stats: &mut (u64, u64),
    dir_modes: &mut Vec<(PathBuf, u32)>,
) -> std::result::Result<(), (PathBuf, std::io::Error)> {
    for entry in walkdir::WalkDir::new(layer).min_depth(1) {
        let entry = entry.map_err(|e| (e.path().unwrap_or(layer).to_path_buf(), e.into()))?;
        let rel = entry
            .path()
            .strip_prefix(layer)
            .expect("walkdir stays under its root");
        let dest = root.join(rel);
        let meta = entry
            .metadata()
            .map_err(|e| (entry.path().to_path_buf(), e.into()))?;
        let existing = dest.symlink_metadata().ok();
        let fail = |e: std::io::Error| (dest.clone(), e);
        if meta.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    std::fs::remove_file(&dest).map_err(fail)?;
                    std::fs::create_dir(&dest).map_err(fail)?;
                }
                None => std::fs::create_dir(&dest).map_err(fail)?,
            }
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o700))
                .map_err(fail)?;
            dir_modes.push((dest.clone(), meta.mode() & 0o7777));
            continue;
        }
        if let Some(m) = existing {
            if m.is_dir() {
                cache::remove_tree(&dest);
            } else {
                std::fs::remove_file(&dest).map_err(fail)?;
            }
        }
        // A hard link to the layer's own inode (symlinks included: linkat does not follow).
        match std::fs::hard_link(entry.path(), &dest) {
            Ok(()) => stats.0 += 1,
            // Another filesystem (a read-only site cache) or too many links: copy instead.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV) | Some(libc::EMLINK) | Some(libc::EPERM)
                ) =>
            {
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(entry.path()).map_err(fail)?;
                    std::os::unix::fs::symlink(target, &dest).map_err(fail)?;
                } else {
                    std::fs::copy(entry.path(), &dest).map_err(fail)?;
                }
                stats.1 += 1;
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{LayerRecord, LayerRef};

    /// A layer as `unpack` leaves it: `root/` plus `layer.json` with its whiteouts.
    fn layer(
        cache: &Cache,
        n: u8,
        build: impl Fn(&Path),
        whiteouts: &[&str],
        opaque: &[&str],
    ) -> LayerRef {
        let digest = cache::sha256(&[n]);
        let dir = cache.layer_dir(&digest);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        build(&dir.join("root"));
        let stats = crate::image::unpack::LayerStats {
            whiteouts: whiteouts.iter().map(|&s| s.into()).collect(),
            opaque_dirs: opaque.iter().map(|&s| s.into()).collect(),
            ..Default::default()
        };
        let rec = LayerRecord {
            digest: digest.clone(),
            diff_id: digest.clone(),
            media_type: "test".into(),
            compressed_size: 0,
            stats,
            tree: cache::tree_summary(&dir.join("root")).unwrap(),
            source: "test".into(),
            created: 0,
        };
        std::fs::write(dir.join("layer.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
        LayerRef {
            digest,
            diff_id: None,
            size: 0,
            media_type: "test".into(),
        }
    }

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn layers_flatten_with_whiteouts_opaque_dirs_and_links() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path(), std::time::Duration::from_secs(5), vec![], None).unwrap();
        let l1 = layer(
            &cache,
            1,
            |r| {
                write(&r.join("etc/gone"), "x");
                write(&r.join("data/old/a"), "a");
                write(&r.join("data/keep"), "v1");
                std::fs::hard_link(r.join("data/keep"), r.join("data/hard")).unwrap();
                std::os::unix::fs::symlink("keep", r.join("data/rel")).unwrap();
                std::os::unix::fs::symlink("/data/keep", r.join("data/abs")).unwrap();
                std::os::unix::fs::symlink("/etc", r.join("escape")).unwrap();
                std::fs::create_dir_all(r.join("ro")).unwrap();
                std::fs::set_permissions(r.join("ro"), std::fs::Permissions::from_mode(0o555))
                    .unwrap();
            },
            &[],
            &[],
        );
        let l2 = layer(
            &cache,
            2,
            |r| write(&r.join("data/keep"), "v2"),
            &["etc/gone", "escape/passwd"],
            &[],
        );
        let l3 = layer(
            &cache,
            3,
            |r| write(&r.join("data/old/new"), "n"),
            &[],
            &["data/old"],
        );
        let rec = ImageRecord {
            names: vec!["test".into()],
            manifest: cache::sha256(b"m"),
            config: cache::sha256(b"c"),
            platform: "linux/amd64".into(),
            layers: vec![l1, l2, l3],
            size: 0,
            pulled: 0,
            last_used: 0,
        };
        let tree = image_tree(&cache, &rec, &|_| {}).unwrap();
        let root = tree.join("root");
        assert!(!root.join("etc/gone").exists(), "whiteout applied");
        assert!(root.join("etc").is_dir());
        assert!(
            !root.join("data/old/a").exists(),
            "opaque directory hides the lower layer"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("data/old/new")).unwrap(),
            "n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("data/keep")).unwrap(),
            "v2",
            "upper file wins"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("data/hard")).unwrap(),
            "v1",
            "a hard link keeps its own inode"
        );
        assert_eq!(
            std::fs::read_link(root.join("data/rel")).unwrap(),
            Path::new("keep")
        );
        assert_eq!(
            std::fs::read_link(root.join("data/abs")).unwrap(),
            Path::new("/data/keep")
        );
        assert!(
            std::path::Path::new("/etc/passwd").exists(),
            "a whiteout through a symlink touches nothing outside"
        );
        // The image's r-x, plus the owner's rwx so the cache can manage (prune) the tree.
        assert_eq!(
            std::fs::metadata(root.join("ro")).unwrap().mode() & 0o777,
            0o755
        );
        // Files are the layer's own inodes, not copies.
        let layer3 = cache
            .find_layer(&rec.layers[2].digest)
            .unwrap()
            .join("root/data/old/new");
        assert_eq!(
            std::fs::metadata(&layer3).unwrap().ino(),
            std::fs::metadata(root.join("data/old/new")).unwrap().ino()
        );
        assert!(
            tree.join("mnt").is_dir() && std::fs::read_dir(tree.join("mnt")).unwrap().count() == 0
        );
        // In use while held, by this or an exec'd process; free again when released.
        let held = hold(&tree).unwrap().unwrap();
        let out = crate::host::probe::in_child(std::time::Duration::from_secs(5), |_| {
            i32::from(in_use(&tree))
        })
        .unwrap();
        assert_eq!(out, crate::host::probe::Outcome::Exited(1, String::new()));
        drop(held);
        assert!(!in_use(&tree));
        // Built once: the second call finds it.
        let again = image_tree(&cache, &rec, &|_| panic!("must not rebuild")).unwrap();
        assert_eq!(again, tree);
        let layer_missing = ImageRecord {
            manifest: cache::sha256(b"m2"),
            layers: vec![LayerRef {
                digest: cache::sha256(b"none"),
                diff_id: None,
                size: 0,
                media_type: String::new(),
            }],
            ..rec
        };
        assert!(matches!(
            image_tree(&cache, &layer_missing, &|_| {}),
            Err(Error::MissingLayer { .. })
        ));
    }

    #[test]
    fn inside_refuses_escapes_and_symlinked_parents() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        assert_eq!(inside(&root, Path::new("a/b/c")), Some(root.join("a/b/c")));
        assert_eq!(inside(&root, Path::new("../x")), None);
        assert_eq!(inside(&root, Path::new("/etc/passwd")), None);
        assert_eq!(
            inside(&root, Path::new("link/passwd")),
            None,
            "never through a symlink"
        );
        assert_eq!(
            inside(&root, Path::new("link")),
            Some(root.join("link")),
            "the symlink itself may go"
        );
        assert_eq!(inside(&root, Path::new("missing/x")), None);
        assert_eq!(inside(&root, Path::new("")), None);
    }
}
