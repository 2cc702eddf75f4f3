//! The verbs scheduler hooks call: `lpmx-job prefetch IMAGE...` (prologs) and
//! `lpmx-job cleanup --job ID` (epilogs). Both are quiet unless `-v`: a prolog's output lands
//! in slurmd's log on every node.

use std::path::PathBuf;

use crate::cli::args::Global;
use crate::cli::common::load_config;
use lpmx_job::cache::{rootfs, stage};
use lpmx_job::image::pull;
use lpmx_job::image::reference::Reference;
use lpmx_job::{configured, exit, host};

fn say(g: &Global, m: &str) {
    if g.verbose > 0 {
        eprintln!("lpmx-job[{}]: {m}", host::hostname());
    }
}

/// Makes each image ready to run: in the cache (pulled when missing) and its tree assembled.
/// A warm image costs no network at all (the offline path of `pull`), so a prolog on
/// every node of a large job is cheap once one node has pulled.
pub fn prefetch(g: &Global, images: &[String], platform: Option<&str>) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    if host::uid() == 0 {
        root_may_fill(config.settings.cache_dir()?)?;
    }
    let cache = configured::open_cache(&config)?;
    let platform = match platform {
        Some(p) => pull::Platform::parse(p).map_err(anyhow::Error::msg)?,
        None => pull::Platform::host(),
    };
    let progress = lpmx_job::image::progress::for_setting(config.settings.progress, g.verbose == 0);
    for name in images {
        let reference = Reference::parse(name)?;
        let opts = |offline| pull::Options {
            platform: platform.clone(),
            jobs: 3,
            progress: progress.as_ref(),
            offline,
            resolve_window: config.settings.registry.resolve_window,
        };
        let rec = match configured::pull(&config, &cache, &reference, opts(true)) {
            Ok(rec) => {
                say(
                    g,
                    &format!("{reference}: already in {}", cache.root().display()),
                );
                rec
            }
            Err(_) => {
                let rec = configured::pull(&config, &cache, &reference, opts(false))?;
                say(
                    g,
                    &format!(
                        "{reference}: pulled {} into {}",
                        rec.manifest,
                        cache.root().display()
                    ),
                );
                rec
            }
        };
        let tree = rootfs::image_tree(&cache, &rec, &|m: &str| say(g, m))?;
        say(g, &format!("{reference}: tree ready at {}", tree.display()));
    }
    Ok(exit::OK)
}

/// Refuses a `prefetch` run as root into a cache that is not root's alone. Root would create
/// root-owned files in a user's (or a group's) cache, which its users could then no longer
/// replace, and would follow whatever links they planted there. Every directory from `/` to
/// the cache (as far as it exists) must be root's and writable by no one else; a sticky one
/// (`/tmp`) only above the nearest existing one, which root's own mkdir then makes safe.
/// A prolog prefetches for a user by becoming that user first (`runuser`).
fn root_may_fill(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let nearest = dir
        .ancestors()
        .find(|p| p.symlink_metadata().is_ok())
        .unwrap_or(std::path::Path::new("/"));
    let real = nearest
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("prefetch as root: {}: {e}", nearest.display()))?;
    for a in real.ancestors() {
        let m = a
            .symlink_metadata()
            .map_err(|e| anyhow::anyhow!("prefetch as root: {}: {e}", a.display()))?;
        let others_write = m.mode() & 0o022 != 0 && (m.mode() & 0o1000 == 0 || a == real);
        if m.uid() != 0 || others_write {
            let why = match (m.uid(), lpmx_job::host::accounts::user(m.uid())) {
                (0, _) => format!("{} can be written by others", a.display()),
                (_, Some(u)) => format!("{} belongs to {}", a.display(), u.name),
                (uid, None) => format!("{} belongs to uid {uid}", a.display()),
            };
            anyhow::bail!(
                "refusing to prefetch as root into the cache {}: {why}, and root would leave \
                 root-owned files there and follow links planted in it. Run it as the \
                 cache's user (runuser -u USER -- lpmx-job prefetch ...), as the prologs in \
                 integrations/ do",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Removes what job `job` staged on this node: under each of `dirs` (default the configured
/// `stage.dir`, `$TMPDIR`, `/tmp`, `/dev/shm`), the caller's own staging, or every user's
/// when run as root.
pub fn cleanup(g: &Global, job: &str, dirs: &[PathBuf]) -> anyhow::Result<u8> {
    stage::check_job_id(job)?;
    let bases = if dirs.is_empty() {
        let mut bases = stage::default_bases(std::env::var("TMPDIR").ok().as_deref());
        // An epilog must clean up even when the configuration is broken: then only the
        // default places are searched, and it says so.
        match load_config(g) {
            Ok(c) => {
                if let Some(d) = c.settings.stage.dir.filter(|d| d.is_absolute()) {
                    if !bases.contains(&d) {
                        bases.insert(0, d);
                    }
                }
            }
            Err(e) => eprintln!(
                "lpmx-job[{}]: cleanup of job {job}: configuration unreadable ({e:#}); \
                 searching only {}",
                host::hostname(),
                bases
                    .iter()
                    .map(|b| b.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        bases
    } else {
        dirs.to_vec()
    };
    let uid = host::uid();
    let who = if uid == 0 { None } else { Some(uid) };
    let mut failed = 0;
    for base in &bases {
        let done = stage::remove_job(base, job, who)?;
        for d in &done.removed {
            say(g, &format!("job {job}: removed {}", d.display()));
        }
        // One user's staging that cannot go must not keep the others'.
        for e in &done.failed {
            eprintln!("lpmx-job[{}]: cleanup of job {job}: {e}", host::hostname());
        }
        failed += done.failed.len();
    }
    Ok(if failed == 0 {
        exit::OK
    } else {
        exit::OWN_FAILURE
    })
}
