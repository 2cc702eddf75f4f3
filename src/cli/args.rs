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
    /// Find images: Docker Hub's search, or a registry's catalog with --registry.
    Search {
        /// A word in the image's name (and, on Docker Hub, its description).
        term: String,
        /// Search this registry's catalog (`host:port`) instead of Docker Hub.
        #[arg(long, value_name = "HOST")]
        registry: Option<String>,
        /// At most this many results.
        #[arg(long, default_value_t = 25, value_name = "N")]
        limit: usize,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store credentials for a registry (in the Docker config, where `docker login` puts them).
    Login {
        /// The registry, as in `ghcr.io` or `host:port`; Docker Hub when omitted.
        registry: Option<String>,
        /// User name.
        #[arg(short, long)]
        username: String,
        /// Read the password from standard input (else it is asked for on the terminal).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove stored credentials for a registry.
    Logout {
        /// The registry; Docker Hub when omitted.
        registry: Option<String>,
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
    /// Run a command in a container of an image (pulled first when the cache lacks it).
    ///
    /// Enters a user and a mount namespace and execs the command in place: it keeps the job's
    /// pid, stdin/stdout/stderr, signals and environment (scheduler and MPI variables win over
    /// the image's). The root is read-only unless --write. Exit status: the command's; 125
    /// lpmx-job failed, 126 not executable, 127 not found.
    Run(RunArgs),
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
    /// Make images ready on this node for a job (for prologs): pull into the cache when
    /// missing and assemble the tree. Quiet unless -v; a warm image touches no network.
    ///
    /// It runs as the user whose cache it fills: run as root, it refuses a cache that is not
    /// root's alone (a prolog becomes the job's user first, with runuser).
    Prefetch {
        /// Images, as for `pull`.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// Platform to pick from a multi-platform image, as os/arch[/variant].
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
    },
    /// Remove what a job staged on this node (for epilogs): the caller's staging, or every
    /// user's when run as root.
    ///
    /// Staging lives in BASE/lpmx-stage-UID/job-JOBID, or in BASE/lpmx-stage-UID.XXXXXXXXXX
    /// (random, mode 0700) when lpmx-stage-UID was taken by someone else. Run as root, it acts
    /// as each directory's owner, never as root, and follows no symbolic link; an
    /// lpmx-stage-UID* owned by anyone but UID is a squat and is removed whole, as its owner.
    /// Exits 125 if anything could not be removed (the rest is still removed).
    Cleanup {
        /// The job's id (SLURM_JOB_ID, PBS_JOBID, JOB_ID).
        #[arg(long, value_name = "ID")]
        job: String,
        /// Staging directory to clean (repeatable; default $TMPDIR, /tmp and /dev/shm).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// Make a command of an image callable on the host: writes a wrapper that runs it in the
    /// image with the caller's arguments, working directory and stdio.
    #[command(group = clap::ArgGroup::new("what").required(true).args(["image", "list", "remove"]))]
    Expose {
        /// The image, as for `run`.
        #[arg(requires = "command")]
        image: Option<String>,
        /// The command in the image, e.g. `samtools` or `/usr/bin/python3`.
        command: Option<String>,
        /// The wrapper's name (default: the command's file name).
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
        /// Where wrappers go (default: $XDG_BIN_HOME, else ~/.local/bin).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// List the wrappers in DIR.
        #[arg(long, conflicts_with_all = ["image", "remove", "name"])]
        list: bool,
        /// Remove the wrapper NAME from DIR.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["image", "name"])]
        remove: Option<String>,
        /// Print `--list` as JSON.
        #[arg(long)]
        json: bool,
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
    /// Prove blobs, layers and image trees against their digests; exit 1 and list any fault.
    Verify {
        /// Rebuild damaged layers and trees, refetch damaged blobs.
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

/// `lpmx-job run ...` alone: the per-task path parses this small command rather than the
/// whole tree of verbs (a third of the instructions a task start spends in lpmx-job).
/// Anything it does not accept (help, a bad flag) is parsed again by [`Cli`], which says it
/// properly.
#[derive(Debug, Parser)]
#[command(name = "lpmx-job run")]
pub struct RunOnly {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub run: RunArgs,
}

impl RunOnly {
    /// Parses `lpmx-job [GLOBAL OPTIONS] run ARGS...`, or None. Only the global options
    /// (`--cache DIR`, `--config FILE`, `-v`, `-q`) may come before `run`.
    pub fn try_fast(args: &[std::ffi::OsString]) -> Option<RunOnly> {
        let mut i = 1;
        loop {
            let a = args.get(i)?.to_str()?;
            match a {
                "run" => break,
                "--cache" | "--config" => i += 2,
                _ if a.starts_with("--cache=") || a.starts_with("--config=") => i += 1,
                "-v" | "-vv" | "-vvv" | "--verbose" | "-q" | "--quiet" => i += 1,
                _ => return None,
            }
        }
        let rest = args[..i].iter().chain(&args[i + 1..]).cloned();
        RunOnly::try_parse_from(rest)
            .ok()
            .filter(|r| r.run.flag_for_image().is_none())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MpiMode {
    /// The image's own MPI (nothing injected).
    Image,
    /// The host's MPI library and what it needs, first on LD_LIBRARY_PATH.
    Host,
}

/// Options of `run`; the command-line contract is in shared/DESIGN.md.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Set KEY=VALUE inside (repeatable); wins over the host's, the image's and LPMXENV_*.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Bind a host path inside (repeatable): SRC[:DST[:ro]], DST defaulting to SRC.
    #[arg(short = 'b', long = "bind", value_name = "SRC[:DST[:ro]]")]
    pub bind: Vec<String>,
    /// Working directory inside [default: the image's WorkingDir, else the current directory
    /// when bound, else /].
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Appear as root (uid 0) inside; files you create are still yours outside.
    #[arg(long)]
    pub fakeroot: bool,
    /// Writable root: changes vanish with the task, or with --write=DIR persist in DIR.
    #[arg(long, value_name = "DIR", num_args = 0..=1, require_equals = true)]
    pub write: Option<Option<PathBuf>>,
    /// Start from the image's environment: only HOME, USER and TERM come from the host (plus
    /// LPMXENV_* and -e).
    #[arg(long)]
    pub cleanenv: bool,
    /// Put the image's Entrypoint in front of CMD.
    #[arg(long)]
    pub use_entrypoint: bool,
    /// Platform to pick from a multi-platform image, as os/arch[/variant].
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Inside, NAME runs the host's NAME (found on the host's PATH) with the caller's
    /// arguments, stdio, signals and directory (repeatable).
    /// A set: @slurm, @sge, @pbs, @lsf, @condor, @mpi. Added to config bridge.commands.
    #[arg(long = "host-cmd", value_name = "NAME")]
    pub host_cmd: Vec<String>,
    /// Which MPI library the command uses: the image's own, or the host's (config mpi.host),
    /// for images built against the same MPI ABI.
    #[arg(long, value_enum, value_name = "MPI", default_value = "image")]
    pub mpi: MpiMode,
    /// The image, then the command and its arguments [default: the image's Entrypoint and
    /// Cmd]. The image: NAME[:TAG], HOST:PORT/REPO:TAG, REPO@sha256:..., oci:DIR[:TAG].
    /// Everything after IMAGE is the command's, as with `docker run`, flags included.
    #[arg(
        value_name = "IMAGE [--] [CMD [ARG...]]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

impl RunArgs {
    /// A flag where IMAGE should be: `-h`/`--help` or an option `run` does not have (the
    /// words after IMAGE may start with `-`, so clap takes any such word as IMAGE).
    pub fn flag_for_image(&self) -> Option<&str> {
        Some(self.args[0].as_str()).filter(|a| a.starts_with('-') && a.len() > 1)
    }

    /// The image named.
    pub fn image(&self) -> &str {
        &self.args[0]
    }

    /// The command after the image (a `--` right after it is only a separator).
    pub fn cmd(&self) -> &[String] {
        let rest = &self.args[1..];
        match rest.first() {
            Some(s) if s == "--" => &rest[1..],
            _ => rest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run_args(argv: &[&str]) -> (Global, RunArgs) {
        let cli = Cli::try_parse_from(argv).unwrap();
        match cli.command {
            Command::Run(a) => (cli.global, a),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn the_fast_run_parser_agrees_with_the_full_one() {
        let os = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(|s| s.into()).collect() };
        for argv in [
            &["lpmx-job", "run", "img", "-v", "ls"][..],
            &[
                "lpmx-job", "run", "-v", "--cache", "/c", "-e", "A=1", "-b", "/x:/y:ro", "img",
            ],
            &[
                "lpmx-job",
                "run",
                "--write=/d",
                "--mpi",
                "host",
                "--host-cmd",
                "@slurm",
                "i",
                "--",
                "a",
            ],
        ] {
            let fast = RunOnly::try_fast(&os(argv)).expect("parsed fast");
            let (g, a) = run_args(argv);
            assert_eq!(format!("{:?}", fast.global), format!("{g:?}"));
            assert_eq!(format!("{:?}", fast.run), format!("{a:?}"));
        }
        for argv in [
            &["lpmx-job", "-x", "run", "img"][..],
            &["lpmx-job", "--cache", "/c", "pull", "run"],
            &["lpmx-job", "--cache"],
            &["lpmx-job", "run", "--help"],
            &["lpmx-job", "run", "--nope", "img"],
            &["lpmx-job", "run"],
            &["lpmx-job", "pull", "img"],
        ] {
            assert!(RunOnly::try_fast(&os(argv)).is_none(), "{argv:?}");
        }
    }

    #[test]
    fn everything_after_the_image_belongs_to_the_command() {
        let (g, a) = run_args(&["lpmx-job", "run", "img", "-v", "ls", "--help"]);
        assert_eq!(g.verbose, 0);
        assert_eq!(
            (a.image(), a.cmd()),
            ("img", &["-v".into(), "ls".into(), "--help".into()][..])
        );
        let (g, a) = run_args(&["lpmx-job", "run", "-v", "-e", "A=1", "img", "--", "-e", "x"]);
        assert_eq!(g.verbose, 1);
        assert_eq!(a.env, ["A=1"]);
        assert_eq!(a.cmd(), ["-e", "x"]);
        let (_, a) = run_args(&["lpmx-job", "run", "img", "--", "--"]);
        assert_eq!(a.cmd(), ["--"]);
        let (_, a) = run_args(&["lpmx-job", "run", "img"]);
        assert!(a.cmd().is_empty());
        assert!(Cli::try_parse_from(["lpmx-job", "run"]).is_err());
    }
}
