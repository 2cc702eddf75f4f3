//! The command line. Verbs arrive with the issue that builds them; the contract is in
//! shared/DESIGN.md and the README.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lpmx-job",
    version,
    about = "Run Docker/OCI images rootless inside batch jobs on clusters and grids",
    long_about = "Run Docker/OCI images rootless inside batch jobs on clusters and grids.\n\n\
        Images are pulled once into a cache that every node can share; each task enters its own \
        container in a user namespace, keeping the job's scheduler and MPI environment.",
    after_help = "Environment: LPMX_CACHE, LPMX_CONFIG, LPMX_INSECURE_REGISTRIES and the other LPMX_* \
        variables listed by `lpmx-job config show`.\nExit status: 0 success, 1 a check failed, \
        125 lpmx-job failed (bad flags, config, cache or registry)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Cache directory (overrides LPMX_CACHE and config files).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Config file, in place of LPMX_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Say more: repeat for more detail; errors show their whole chain.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Say only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull images into the cache (one download per blob, however many processes ask).
    Pull {
        /// Images: NAME[:TAG], HOST:PORT/REPO:TAG, REPO@sha256:..., oci:DIR[:TAG].
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// Platform to pick from a multi-platform image, as os/arch[/variant].
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
        /// Layers fetched at once.
        #[arg(long, default_value_t = 3, value_name = "N")]
        jobs: usize,
        /// Print the image records as JSON.
        #[arg(long)]
        json: bool,
        /// Touch no network: succeed only if the cache already holds the image.
        #[arg(long)]
        offline: bool,
    },
    /// List the images in the cache.
    Images {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget images; their layers go with the next `cache prune`.
    Rmi {
        /// Names as pulled, or a manifest digest (prefix).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// List the tags of a repository in its registry.
    Tags {
        /// Repository, as in `alpine` or `host:port/repo`.
        repository: String,
    },
    /// Inspect and maintain the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Check what this host allows: namespaces, mounts, the cache's filesystem and locks.
    ///
    /// Exits 0 when containers can run here, 1 when they cannot; every failing line says
    /// what to do about it.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per verb into a directory.
    Man {
        /// Write lpmx-job.1 and lpmx-job-VERB.1 into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Where the cache is, its filesystem, lock mode and size by kind.
    Info {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash blobs and check extracted layers are complete; exit 1 and list any fault.
    Verify {
        /// Remove damaged entries and pull the affected images again.
        #[arg(long)]
        repair: bool,
    },
    /// Remove layers and blobs no image uses, and images unused for a while.
    Prune {
        /// Also forget images not used for this many days.
        #[arg(long, value_name = "DAYS")]
        older_than: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every key's effective value and where it came from.
    Show {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}
