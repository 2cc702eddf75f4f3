//! `lpmx-job expose`: host wrappers for a container's tools.

use anyhow::Context;

use crate::cli::args::Global;
use crate::cli::common::{load_config, logger};
use lpmx_job::image::pull;
use lpmx_job::image::reference::Reference;
use lpmx_job::{configured, exit};

/// `lpmx-job expose IMAGE CMD`, `--list`, `--remove NAME`
#[allow(clippy::too_many_arguments)] // one per flag of the verb
pub fn expose(
    g: &Global,
    image: Option<String>,
    command: Option<String>,
    name: Option<String>,
    dir: Option<std::path::PathBuf>,
    list: bool,
    remove: Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::var_os("XDG_BIN_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/bin"))
            })
            .context("no HOME: say where wrappers go with --dir")?,
    };
    let log = logger(g.quiet);
    if list {
        let found = lpmx_job::container::expose::list(&dir)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            for e in found {
                println!("{}\t{} {}", e.name, e.image, e.command);
            }
        }
        return Ok(exit::OK);
    }
    if let Some(name) = remove {
        let gone = lpmx_job::container::expose::remove(&dir, &name)?;
        log(&format!(
            "{}: removed ({} in {})",
            gone.path.display(),
            gone.command,
            gone.image
        ));
        return Ok(exit::OK);
    }
    let (image, command) = (
        image.expect("clap requires it"),
        command.expect("clap requires it"),
    );
    // Local sources by absolute path, so the wrapper works from any directory.
    let image = match Reference::parse(&image)? {
        Reference::OciLayout { dir: d, tag } => {
            let d = std::fs::canonicalize(&d).with_context(|| format!("{}", d.display()))?;
            Reference::OciLayout { dir: d, tag }.to_string()
        }
        Reference::DockerArchive { file } => {
            let file =
                std::fs::canonicalize(&file).with_context(|| format!("{}", file.display()))?;
            Reference::DockerArchive { file }.to_string()
        }
        r => r.to_string(),
    };
    let name = name.unwrap_or_else(|| command.rsplit('/').next().unwrap_or(&command).to_string());
    let lpmx = std::env::current_exe().context("finding the lpmx-job executable")?;
    let text = lpmx_job::container::expose::wrapper(&lpmx, &image, &command, g.cache.as_deref())?;
    // The image now, not at the first call: a wrapper naming an image that does not
    // exist (a typo, a missing tag) would only fail later, far from here.
    let config = load_config(g)?;
    let cache = configured::open_cache(&config)?;
    let reference = Reference::parse(&image)?;
    let platform = pull::Platform::host();
    if pull::cached(&cache, &reference, &platform)?.is_none() {
        let progress = lpmx_job::image::progress::for_setting(config.settings.progress, g.quiet);
        let opts = pull::Options {
            platform,
            jobs: 3,
            progress: progress.as_ref(),
            offline: false,
            resolve_window: config.settings.registry.resolve_window,
        };
        configured::pull(&config, &cache, &reference, opts).with_context(|| {
            format!("{image}: not exposed: the image must exist before a wrapper names it")
        })?;
    }
    if let Some(w) = lpmx_job::container::expose::shared_dir_warning(&dir) {
        log(&format!("warning: {w}"));
    }
    let path = lpmx_job::container::expose::expose(&dir, &name, &text)?;
    log(&format!("{}: runs {command} in {image}", path.display()));
    Ok(exit::OK)
}
