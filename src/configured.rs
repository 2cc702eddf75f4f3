//! The library as the settings configure it: the cache to open, the registries to ask (with
//! their mirrors, certificates and credentials), a pull through them, and the node-local
//! staging of an image's tree. Every entry point starts here after loading its [`Config`]:
//! the executable's verbs, and later a SPANK plugin or the shim, none of which should need
//! the command line to get an image into the cache and a tree to enter.

use std::path::PathBuf;

use crate::cache::{self, stage, Cache, ImageRecord};
use crate::config::{self, Config};
use crate::host;
use crate::image::pull;
use crate::image::reference::{Reference, Remote};
use crate::image::registry::{self, Client, ClientOptions};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Stage(#[from] stage::Error),
    /// The filesystem of the tree to stage could not be read.
    #[error(transparent)]
    Filesystem(std::io::Error),
    #[error("opening the cache {}", dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: cache::Error,
    },
    #[error("sharing the cache {}", dir.display())]
    Share {
        dir: PathBuf,
        #[source]
        source: cache::Error,
    },
    #[error("pulling {reference} into {}", cache.display())]
    Pull {
        reference: String,
        cache: PathBuf,
        #[source]
        source: Box<pull::Error>,
    },
}

/// The cache the settings name, shared with their group when they name one.
pub fn open_cache(config: &Config) -> Result<Cache> {
    let s = &config.settings;
    let dir = s.cache_dir()?;
    let mut cache = Cache::open(
        dir,
        std::time::Duration::from_secs(s.cache.lock_timeout),
        s.cache.readonly.clone(),
        s.cache.lock_mode.forced(),
    )
    .map_err(|source| Error::Open {
        dir: dir.to_path_buf(),
        source,
    })?;
    if let Some(g) = &s.cache.group {
        cache
            .share_with_group(
                g,
                match s.cache.trust {
                    config::TrustSetting::Group => cache::Trust::Group,
                    config::TrustSetting::Own => cache::Trust::Own,
                },
            )
            .map_err(|source| Error::Share {
                dir: dir.to_path_buf(),
                source,
            })?;
    }
    Ok(cache)
}

/// A registry client set up for one registry host: plain HTTP if listed as insecure, its own
/// CA file if the config names one, credentials from the Docker config.
pub fn client_for(config: &Config, host: &str) -> Result<Client> {
    Ok(Client::new(client_options(config, host))?)
}

/// What [`client_for`] makes its client from; warnings about the credentials found go to
/// stderr, naming the node.
pub fn client_options(config: &Config, host: &str) -> ClientOptions {
    let s = &config.settings;
    let entry = s.registries.get(host);
    let mut insecure = s.registry.insecure.clone();
    if entry.and_then(|e| e.insecure) == Some(true) {
        insecure.push(host.to_string());
    }
    let mut ca_files: Vec<std::path::PathBuf> = entry
        .and_then(|e| e.ca.clone())
        .map(Into::into)
        .into_iter()
        .collect();
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        ca_files.push(f.into());
    }
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let found = registry::auth::registry_credentials(&env, host);
    for w in &found.warnings {
        eprintln!(
            "lpmx-job[{}]: warning: {host}: {w}",
            crate::host::hostname()
        );
    }
    ClientOptions {
        insecure,
        ca_files,
        retry: registry::RetryPolicy::default(),
        credentials: found.credentials,
    }
}

/// The registries to ask for an image: its configured mirrors, then its own registry.
fn endpoints_for(config: &Config, remote: &Remote) -> Result<Vec<pull::Endpoint>> {
    let mirrors = config
        .settings
        .registries
        .get(&remote.registry)
        .and_then(|e| e.mirrors.clone())
        .unwrap_or_default();
    mirrors
        .iter()
        .chain(std::iter::once(&remote.registry))
        .map(|host| {
            Ok(pull::Endpoint {
                client: client_for(config, host)?,
                host: host.clone(),
            })
        })
        .collect()
}

/// Pulls one image into `cache` through the configured registries (a local source through
/// none).
pub fn pull(
    config: &Config,
    cache: &Cache,
    reference: &Reference,
    opts: pull::Options,
) -> Result<ImageRecord> {
    let endpoints = match reference {
        Reference::Remote(r) => endpoints_for(config, r)?,
        _ => Vec::new(),
    };
    let puller = pull::Puller {
        cache,
        endpoints: &endpoints,
        opts,
    };
    puller.pull(reference).map_err(|source| Error::Pull {
        reference: reference.to_string(),
        cache: cache.root().to_path_buf(),
        source: Box::new(source),
    })
}

/// The tree `run` enters: the cache's own, or, inside a job when `stage.mode` asks for it (by
/// default when the cache is on a network or parallel filesystem), its node-local copy for
/// this job, made once per node per job (see [`stage::stage_tree`]).
pub fn staged(config: &Config, tree: PathBuf, note: &dyn Fn(&str)) -> Result<PathBuf> {
    let s = &config.settings.stage;
    if s.mode == stage::Mode::Never {
        return Ok(tree);
    }
    let Some(job) = stage::job_id(&|n| std::env::var(n).ok()) else {
        if s.mode == stage::Mode::Always {
            note("not staged: not inside a batch job (no job id for an epilog to clean up by)");
        }
        return Ok(tree);
    };
    let fs = host::filesystem_of(&tree).map_err(Error::Filesystem)?;
    if !stage::wanted(s.mode, fs.class) {
        return Ok(tree);
    }
    let tmpdir = std::env::var("TMPDIR").ok();
    let base = stage::base(s.dir.as_deref(), tmpdir.as_deref());
    let t0 = std::time::Instant::now();
    // A squatted staging directory is said even under -q: someone on this node is at it.
    let warn = |m: &str| eprintln!("lpmx-job[{}]: warning: {m}", host::hostname());
    let (dest, made) = stage::stage_tree(&tree, &base, host::uid(), &job, &warn)?;
    if made {
        note(&format!(
            "staged for job {job} into {} ({} filesystem cache) in {:.1}s",
            dest.display(),
            fs.name,
            t0.elapsed().as_secs_f64()
        ));
    } else {
        note(&format!(
            "using the staged copy {} of job {job}",
            dest.display()
        ));
    }
    Ok(dest)
}
