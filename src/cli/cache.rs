//! `lpmx-job cache info|verify|prune`.

use anyhow::Context;

use crate::cli::args::{CacheCommand, Global};
use crate::cli::common::{load_config, logger};
use lpmx_job::cache::maintain;
use lpmx_job::image::pull;
use lpmx_job::image::reference::Reference;
use lpmx_job::{configured, exit, host};

/// `lpmx-job cache info|verify|prune`
pub fn cache(g: &Global, command: CacheCommand) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let cache = configured::open_cache(&config)?;
    let log = logger(g.quiet);
    match command {
        CacheCommand::Info { json } => {
            let usage = maintain::usage(&cache);
            let fs = host::filesystem_of(cache.root())?;
            let lock =
                lpmx_job::cache::lock::probe(cache.root(), std::time::Duration::from_secs(10))?;
            if json {
                let v = serde_json::json!({
                    "path": cache.root(), "filesystem": fs.name, "class": fs.class,
                    "lock_mode": cache.lock_mode().as_str(), "lock_probe": lock.mode.as_str(), "usage": usage,
                    "free_bytes": fs.free_bytes,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("path         {}", cache.root().display());
                println!("filesystem   {} ({:?})", fs.name, fs.class);
                println!(
                    "lock mode    {} (this host's probe: flock {}; fcntl OFD {})",
                    cache.lock_mode().as_str(),
                    lpmx_job::cache::lock::describe(lock.flock),
                    lpmx_job::cache::lock::describe(lock.fcntl_ofd)
                );
                println!(
                    "images       {} ({})",
                    usage.image_count,
                    host::human_bytes(usage.images)
                );
                println!(
                    "layers       {} ({})",
                    usage.layer_count,
                    host::human_bytes(usage.layers)
                );
                println!("blobs        {}", host::human_bytes(usage.blobs));
                println!("work areas   {}", host::human_bytes(usage.tmp));
                println!("free         {}", host::human_bytes(fs.free_bytes));
            }
            Ok(exit::OK)
        }
        CacheCommand::Verify { repair } => {
            let faults = maintain::verify::verify(&cache)?;
            for f in &faults {
                println!("FAULT {}: {}", f.path.display(), f.what);
            }
            if faults.is_empty() {
                log(&format!(
                    "cache {} verified: no faults",
                    cache.root().display()
                ));
                return Ok(exit::OK);
            }
            let fixable = faults
                .iter()
                .filter(|f| f.repair != maintain::verify::Repair::None)
                .count();
            if !repair {
                // Only what --repair really fixes is promised.
                log(&format!(
                    "{} faults in {}; `lpmx-job cache verify --repair` fixes {}{}",
                    faults.len(),
                    cache.root().display(),
                    if fixable == faults.len() {
                        "them".to_string()
                    } else {
                        format!("{fixable} of them")
                    },
                    if fixable == faults.len() {
                        ""
                    } else {
                        "; the others say what to do"
                    }
                ));
                return Ok(exit::CHECK_FAILED);
            }
            let mut again = std::collections::BTreeSet::new();
            let mut rebuild = std::collections::BTreeSet::new();
            let mut removed = std::collections::BTreeSet::new();
            for f in &faults {
                if f.repair == maintain::verify::Repair::None || !removed.insert(f.path.clone()) {
                    continue;
                }
                if f.repair == maintain::verify::Repair::Rebuild {
                    if !maintain::remove_tree_entry(&cache, &f.path, &log)? {
                        continue;
                    }
                    rebuild.extend(f.images.iter().cloned());
                } else {
                    maintain::remove_entry(&cache, &f.path, &log)?;
                    again.extend(f.images.iter().cloned());
                }
            }
            let progress =
                lpmx_job::image::progress::for_setting(config.settings.progress, g.quiet);
            for name in again.iter().chain(&rebuild) {
                let reference = Reference::parse(name)?;
                let opts = pull::Options {
                    platform: pull::Platform::host(),
                    jobs: 3,
                    progress: progress.as_ref(),
                    offline: false,
                    resolve_window: config.settings.registry.resolve_window,
                };
                // A layer comes back from its kept blob when that is sound.
                let rec = configured::pull(&config, &cache, &reference, opts)
                    .with_context(|| format!("repairing {name}"))?;
                if rebuild.contains(name) {
                    lpmx_job::cache::rootfs::image_tree(&cache, &rec, &log)
                        .with_context(|| format!("rebuilding the tree of {name}"))?;
                }
            }
            let left = maintain::verify::verify(&cache)?;
            for f in &left {
                println!("FAULT {}: {}", f.path.display(), f.what);
            }
            Ok(if left.is_empty() {
                log(&format!(
                    "cache {} repaired: no faults left",
                    cache.root().display()
                ));
                exit::OK
            } else {
                exit::CHECK_FAILED
            })
        }
        CacheCommand::Prune { older_than } => {
            let p = maintain::prune(&cache, older_than.map(|d| d * 86400), &log)?;
            log(&format!(
                "pruned {} images, {} trees, {} layers, {} blobs ({}) from {}{}",
                p.images.len(),
                p.trees,
                p.layers,
                p.blobs,
                host::human_bytes(p.bytes),
                cache.root().display(),
                if p.kept.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; kept {} entries other members published (only they can remove them)",
                        p.kept.len()
                    )
                }
            ));
            Ok(exit::OK)
        }
    }
}
