//! The verbs on the cache's images: `pull`, `images`, `rmi`.

use crate::cli::args::Global;
use crate::cli::common::{load_config, logger};
use lpmx_job::cache::maintain;
use lpmx_job::image::pull;
use lpmx_job::image::reference::Reference;
use lpmx_job::{configured, exit, host};

/// `lpmx-job pull IMAGE...`
pub fn pull(
    g: &Global,
    images: Vec<String>,
    platform: Option<String>,
    jobs: usize,
    json: bool,
    offline: bool,
) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let cache = configured::open_cache(&config)?;
    let platform = match platform {
        Some(p) => pull::Platform::parse(&p).map_err(anyhow::Error::msg)?,
        None => pull::Platform::host(),
    };
    let log = logger(g.quiet);
    let progress = lpmx_job::image::progress::for_setting(config.settings.progress, g.quiet);
    let mut records = Vec::new();
    for name in &images {
        let reference = Reference::parse(name)?;
        let opts = pull::Options {
            platform: platform.clone(),
            jobs,
            progress: progress.as_ref(),
            offline,
            // Asked for by name: the registry's answer now, not one from the last
            // minute (a tag just pushed must be seen).
            resolve_window: 0,
        };
        let rec = configured::pull(&config, &cache, &reference, opts)?;
        log(&format!(
            "{reference}: pulled {} ({}, {} layers, {}) into {}",
            rec.manifest,
            rec.platform,
            rec.layers.len(),
            host::human_bytes(rec.size),
            cache.root().display()
        ));
        records.push(rec);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    Ok(exit::OK)
}

/// `lpmx-job images`
pub fn images(g: &Global, json: bool) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let cache = configured::open_cache(&config)?;
    let images = cache.images()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&images)?);
    } else {
        println!(
            "{:<50} {:<14} {:<14} {:>10}  LAST USED",
            "IMAGE", "DIGEST", "PLATFORM", "SIZE"
        );
        for i in &images {
            let age = lpmx_job::cache::now().saturating_sub(cache.last_used(i));
            println!(
                "{:<50} {:<14} {:<14} {:>10}  {}",
                i.names.first().map(String::as_str).unwrap_or("-"),
                i.manifest.short(),
                i.platform,
                host::human_bytes(i.size),
                human_age(age)
            );
        }
    }
    Ok(exit::OK)
}

/// `lpmx-job rmi IMAGE...`
pub fn rmi(g: &Global, images: Vec<String>) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let cache = configured::open_cache(&config)?;
    let log = logger(g.quiet);
    let all = cache.images()?;
    for want in &images {
        let canonical = Reference::parse(want)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| want.clone());
        let hits: Vec<_> = all
            .iter()
            .filter(|i| {
                i.names.contains(&canonical)
                    || (want.len() >= 6
                        && i.manifest
                            .hex()
                            .starts_with(want.trim_start_matches("sha256:")))
            })
            .collect();
        if hits.is_empty() {
            anyhow::bail!("no image {want} in the cache {}", cache.root().display());
        }
        for i in hits {
            // Another member's image is theirs to remove: said, and the others go on.
            match maintain::remove_entry(&cache, &cache.image_path(&i.manifest), &log) {
                Err(e @ lpmx_job::cache::Error::NotYours { .. }) => {
                    log(&format!("{}: not removed: {e}", i.names.join(", ")));
                    continue;
                }
                r => r?,
            }
            for n in &i.names {
                let _ = std::fs::remove_file(cache.ref_path(n));
            }
            log(&format!(
                "{}: removed from {} (layers go with `lpmx-job cache prune`)",
                i.names.join(", "),
                cache.root().display()
            ));
        }
    }
    Ok(exit::OK)
}

fn human_age(secs: u64) -> String {
    match secs {
        0..=119 => "just now".into(),
        120..=7199 => format!("{} minutes ago", secs / 60),
        7200..=172_799 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}
