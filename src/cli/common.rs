//! What every verb does first with the global flags.

use crate::cli::args::Global;
use lpmx_job::config::{self, Config};
use lpmx_job::host;

pub(crate) fn load_config(g: &Global) -> anyhow::Result<Config> {
    let mut inputs = config::Inputs::from_process();
    inputs.config_flag = g.config.clone();
    inputs.cache_flag = g.cache.clone();
    Ok(Config::load(&inputs)?)
}

/// Progress and notes go to stderr, one line each, naming the node.
pub(crate) fn logger(quiet: bool) -> impl Fn(&str) + Sync {
    move |m: &str| {
        if !quiet {
            eprintln!("lpmx-job[{}]: {m}", host::hostname());
        }
    }
}
