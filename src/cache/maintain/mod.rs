//! `cache info`, `cache verify` ([`verify`]) and `cache prune`: reading the cache as a whole.
//! Deleting goes through the same per-digest locks as pulling, and unpublishes with one
//! rename into a work area before removing, so a reader never sees half a layer.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::{Cache, Error, ImageRecord, Result, BLOBS, IMAGES, LAYERS, REFS, TMP, TREES};
use crate::image::reference::Digest;

#[derive(Debug, Default, Serialize)]
pub struct Usage {
    pub blobs: u64,
    pub layers: u64,
    pub images: u64,
    pub tmp: u64,
    pub layer_count: u64,
    pub image_count: u64,
}

fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

fn count(p: &Path) -> u64 {
    std::fs::read_dir(p).map(|r| r.count() as u64).unwrap_or(0)
}

pub fn usage(cache: &Cache) -> Usage {
    let r = cache.root();
    Usage {
        blobs: du(&r.join(BLOBS)),
        layers: du(&r.join(LAYERS)),
        images: du(&r.join(IMAGES)) + du(&r.join(REFS)),
        tmp: du(&r.join(TMP)),
        layer_count: count(&r.join(LAYERS)),
        // What `images` lists: records, not the `.used` stamps beside them.
        image_count: cache.images().map_or(0, |v| v.len() as u64),
    }
}

/// Takes a damaged or unwanted entry out of the cache: lock it, move it into a work area,
/// delete it there.
pub fn remove_entry(cache: &Cache, path: &Path, log: &dyn Fn(&str)) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let digest = Digest::parse(&format!("sha256:{}", name.trim_end_matches(".json"))).ok();
    let _lock = match &digest {
        Some(d) => Some(cache.lock(d, &format!("removing {}", path.display()), log)?),
        None => None,
    };
    // Says whose entry goes; another member's is refused (Error::NotYours), see unpublish.
    if let Some((_work, owner)) = cache.unpublish(path)? {
        log(&format!(
            "removed {} (published by {owner})",
            path.display()
        ));
    }
    Ok(())
    // `_work` is dropped here, removing what was parked in it.
}

/// Takes a damaged image tree out, unless a running container holds it (see
/// `rootfs::hold`): its in-use marker is locked exclusively meanwhile, as `prune` does.
/// Returns whether it was removed.
pub fn remove_tree_entry(cache: &Cache, tree: &Path, log: &dyn Fn(&str)) -> Result<bool> {
    let marker = tree.with_extension("inuse");
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&marker)
        .ok();
    if let Some(f) = &held {
        if f.try_lock().is_err() {
            log(&format!(
                "not repairing {} now: a running container uses it; repair again once it ends",
                tree.display()
            ));
            return Ok(false);
        }
    }
    remove_entry(cache, tree, log)?;
    Ok(true)
}

#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    pub images: Vec<String>,
    pub trees: u64,
    pub layers: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Entries other members published, which only they can remove: said, not failed on.
    pub kept: Vec<String>,
}

/// Forgets images unused for `older_than` seconds, then removes layers and blobs that no
/// remaining image uses.
pub fn prune(cache: &Cache, older_than: Option<u64>, log: &dyn Fn(&str)) -> Result<Pruned> {
    let mut out = Pruned::default();
    let now = super::now();
    let mut keep: Vec<ImageRecord> = Vec::new();
    for img in cache.images()? {
        if older_than.is_some_and(|age| now.saturating_sub(cache.last_used(&img)) > age) {
            match remove_entry(cache, &cache.image_path(&img.manifest), log) {
                Err(e @ Error::NotYours { .. }) => {
                    log(&format!("keeping {}: {e}", img.names.join(", ")));
                    out.kept.push(e.to_string());
                    keep.push(img);
                    continue;
                }
                r => r?,
            }
            let _ = std::fs::remove_file(
                cache
                    .root()
                    .join(IMAGES)
                    .join(format!("{}.used", img.manifest.hex())),
            );
            out.images.extend(img.names.iter().cloned());
        } else {
            keep.push(img);
        }
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    for img in &keep {
        used.insert(img.manifest.hex().to_string());
        used.insert(img.config.hex().to_string());
        used.extend(img.layers.iter().map(|l| l.digest.hex().to_string()));
    }
    for (kind, dir) in [
        (TREES, cache.root().join(TREES)),
        (LAYERS, cache.root().join(LAYERS)),
        (BLOBS, cache.root().join(BLOBS)),
    ] {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if used.contains(&name) || name.ends_with(".inuse") {
                continue;
            }
            // A tree is removed only while its in-use marker is locked exclusively here, so a
            // container cannot start on it meanwhile (`rootfs::held_tree` rechecks after locking).
            let mut _marker = None;
            if kind == TREES {
                let marker = e.path().with_extension("inuse");
                if let Ok(f) = super::safe::open_or_create(
                    &marker,
                    super::safe::Access::Read,
                    super::FILE_MODE,
                ) {
                    if f.try_lock().is_err() {
                        log(&format!(
                            "keeping {}: a running container uses it",
                            e.path().display()
                        ));
                        continue;
                    }
                    _marker = Some((f, marker));
                }
            }
            let bytes = du(&e.path());
            match remove_entry(cache, &e.path(), log) {
                Err(e @ Error::NotYours { .. }) => {
                    log(&format!("keeping {e}"));
                    out.kept.push(e.to_string());
                    continue;
                }
                r => r?,
            }
            out.bytes += bytes;
            if let Some((_f, marker)) = _marker.take() {
                let _ = std::fs::remove_file(marker);
            }
            match kind {
                LAYERS => out.layers += 1,
                BLOBS => out.blobs += 1,
                _ => out.trees += 1,
            }
        }
    }
    // Names whose image is gone.
    let refs = cache.root().join(REFS);
    if let Ok(entries) = std::fs::read_dir(&refs) {
        for e in entries.flatten() {
            let keep_ref = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<super::RefRecord>(&b).ok())
                .is_some_and(|r| used.contains(r.manifest.hex()));
            if !keep_ref {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    cache.reclaim();
    Ok(out)
}

pub mod verify;
