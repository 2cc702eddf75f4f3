//! `lpmx-job run [OPTIONS] IMAGE [--] [CMD [ARG...]]`: find the image (pulling it when the
//! cache lacks it), work out the command, environment and binds, then enter the container
//! and exec the command in place (see `lpmx_job::container::runtime`). With `--host-cmd NAME`, a child
//! enters and execs instead, and this process stays on the host as its supervisor, serving
//! the host command bridge (see `lpmx_job::container::bridge`).
//!
//! A warm run reads a few small files of the cache and touches no network. A cold run pulls
//! first; the pull starts threads, and a user namespace can only be entered by a
//! single-threaded process, so the pulled image is then run by a fresh copy of this program
//! (`/proc/self/exe`, same arguments) told by [`PULLED`] which image record to use.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use oci_spec::image::ImageConfiguration;

use crate::cli::args::{Global, MpiMode, RunArgs};
use crate::cli::common::load_config;
use lpmx_job::cache::rootfs;
use lpmx_job::cache::{Cache, ImageRecord};
use lpmx_job::config::Config;
use lpmx_job::container::runtime::{self, syscall::Real, syscall::Syscall, IdMap, Spec, Write};
use lpmx_job::container::{bridge, environ};
use lpmx_job::image::pull;
use lpmx_job::image::reference::{Digest, Reference};
use lpmx_job::{configured, host};

/// Set on the re-executed copy after a cold pull: the manifest digest of the image to run.
/// Never passed into the container (the `LPMX_INTERNAL_` prefix is dropped by `environ`).
const PULLED: &str = "LPMX_INTERNAL_PULLED";

/// Set (to anything) to skip overlayfs and use the bind fallback, as on hosts that refuse it:
/// lets the tests exercise the fallback for real.
const NO_OVERLAY: &str = "LPMX_INTERNAL_NO_OVERLAY";

/// `run`: resolve the image, plan the container, then enter it, in one of two ways: exec the
/// command in place, or (with bridged host commands) enter from a child while this process
/// stays on the host as its supervisor.
pub fn run(g: &Global, a: RunArgs) -> anyhow::Result<u8> {
    let image = a.image().to_string();
    let verbose = g.verbose > 0;
    let note = |m: &str| {
        if verbose {
            eprintln!("lpmx-job[{}]: {image}: {m}", host::hostname());
        }
    };
    let config = load_config(g)?;
    let cache = configured::open_cache(&config)?;
    let marker = std::env::var(PULLED).ok();
    let rec = resolve(g, &a, &config, &cache, &image, marker.as_deref())?;
    stamp_last_used(&cache, &rec);
    let plan = plan(g, &a, &config, &cache, &rec, &image, &note)?;

    // Anything that started a thread (a lock heartbeat, a progress bar) leaves it behind in
    // this process: start afresh once rather than fail.
    if marker.is_none() && Real.thread_count().unwrap_or(1) > 1 {
        return Err(reexec(&rec.manifest));
    }
    if plan.bridged.is_empty() {
        exec_in_place(&plan, &note)
    } else {
        supervise(plan, &image, &note)
    }
}

/// What [`plan`] works out: the container to enter and the command to exec in it.
struct Plan {
    spec: Spec,
    argv: Vec<String>,
    /// The command's environment.
    env: Vec<(OsString, OsString)>,
    /// This process's own environment (a bridged host command runs in it).
    host_env: Vec<(OsString, OsString)>,
    /// Host commands to bridge; none means no supervisor.
    bridged: Vec<String>,
    /// Held until exec and beyond: `cache prune` leaves a tree in use alone.
    _held: Option<std::os::fd::OwnedFd>,
}

/// The image record to run: the one the first copy of a cold run pulled (named by
/// [`PULLED`]), else the cached one, else one pulled now.
fn resolve(
    g: &Global,
    a: &RunArgs,
    config: &Config,
    cache: &Cache,
    image: &str,
    marker: Option<&str>,
) -> anyhow::Result<ImageRecord> {
    let reference = Reference::parse(image)?;
    let platform = match &a.platform {
        Some(p) => pull::Platform::parse(p).map_err(anyhow::Error::msg)?,
        None => pull::Platform::host(),
    };
    if let Some(d) = marker {
        let d = Digest::parse(d).map_err(anyhow::Error::msg)?;
        return cache.read_image(&d)?.with_context(|| {
            format!(
                "{image}: the image record {d} vanished from {} right after the pull",
                cache.root().display()
            )
        });
    }
    if let Some(rec) = pull::cached(cache, &reference, &platform)? {
        return Ok(rec);
    }
    let progress = lpmx_job::image::progress::for_setting(config.settings.progress, g.quiet);
    let opts = pull::Options {
        platform: platform.clone(),
        jobs: 3,
        progress: progress.as_ref(),
        offline: false,
        resolve_window: config.settings.registry.resolve_window,
    };
    let rec = configured::pull(config, cache, &reference, opts)?;
    drop(progress);
    // Entered from this process unless the pull left a thread behind (checked by `run`,
    // which re-executes then): an `oci:` reference is read again on every run, and a
    // re-exec would cost it a second start-up.
    Ok(rec)
}

/// The container for an image record: its command, environment, binds, identity and tree
/// (assembled when missing, staged when the settings ask), and the host commands to bridge.
fn plan(
    g: &Global,
    a: &RunArgs,
    config: &Config,
    cache: &Cache,
    rec: &ImageRecord,
    image: &str,
    note: &dyn Fn(&str),
) -> anyhow::Result<Plan> {
    let cfg_bytes = cache.read_blob(&rec.config)?.with_context(|| {
        format!(
            "{image}: its config {} is missing from {}; pull it again",
            rec.config,
            cache.root().display()
        )
    })?;
    let cfg = ImageConfiguration::from_reader(&cfg_bytes[..])
        .map_err(|e| anyhow::anyhow!("{image}: its config {} is not valid: {e}", rec.config))?;
    let c = cfg.config().clone().unwrap_or_default();
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    let argv = runtime::command_line(
        &list(c.entrypoint()),
        &list(c.cmd()),
        a.cmd(),
        a.use_entrypoint,
    );
    if argv.is_empty() {
        return Err(runtime::Error::NoCommand {
            image: image.to_string(),
        }
        .into());
    }

    let host_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let env = environ::container_env(&environ::Inputs {
        host: &host_env,
        image: &list(c.env()),
        settings: &a.env,
        cleanenv: a.cleanenv,
    })?;
    for n in &env.notes {
        note(n);
    }

    let view = runtime::HostView::from_process();
    let cwd = view.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
    let user_binds = a
        .bind
        .iter()
        .map(|b| runtime::parse_bind(b, &cwd))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{image}: {e}"))?;
    let user_binds = runtime::with_job_binds(user_binds, note);
    let write = match &a.write {
        None => Write::ReadOnly,
        Some(None) => Write::Scratch,
        Some(Some(dir)) => Write::Persistent(absolute(&cwd, dir)),
    };
    let identity = runtime::identity::host_identity(a.fakeroot);
    explain_user(c.user().as_deref(), &identity, note);
    let ids = IdMap {
        inside_uid: identity.uid,
        outside_uid: host::uid(),
        inside_gid: identity.gid,
        outside_gid: host::gid(),
    };

    let (tree, held) = rootfs::held_tree(cache, rec, &|m: &str| {
        if !g.quiet {
            eprintln!("lpmx-job[{}]: {m}", host::hostname())
        }
    })?;
    let tree = configured::staged(config, tree, note)?;
    let names: Vec<String> = config
        .settings
        .bridge
        .commands
        .iter()
        .chain(&a.host_cmd)
        .cloned()
        .collect();
    let names = bridge::expand_names(image, &names)?;
    let mut env = env;
    let mut user_binds = user_binds;
    let mpi_libs = match a.mpi {
        MpiMode::Image => None,
        MpiMode::Host => {
            let inj = host_mpi(config, image, &tree, &c.env().clone().unwrap_or_default())?;
            note(&format!(
                "--mpi host: {} from {}: {} libraries at {}",
                inj.abi,
                inj.main.display(),
                inj.libs.len(),
                lpmx_job::container::mpi::LIB_DIR
            ));
            let path =
                lpmx_job::container::mpi::library_path(get_var(&env.vars, "LD_LIBRARY_PATH"));
            set_var(&mut env.vars, "LD_LIBRARY_PATH", path);
            user_binds.extend(inj.binds.iter().map(|p| runtime::Bind {
                src: p.clone(),
                dst: p.clone(),
                ro: true,
                spec: Some(format!("mpi.host.binds: {}", p.display())),
            }));
            Some(inj.libs)
        }
    };
    let default_binds = runtime::default_binds(&view);
    let spec = Spec {
        image: image.to_string(),
        tree,
        ids,
        identity,
        write,
        default_binds,
        user_binds,
        workdir: a.workdir.clone(),
        image_workdir: c
            .working_dir()
            .as_deref()
            .filter(|w| !w.is_empty())
            .map(PathBuf::from),
        host_cwd: view.cwd.clone(),
        command_given: !a.cmd().is_empty(),
        tmpfs_size: config.settings.scratch.size.clone(),
        try_overlay: std::env::var_os(NO_OVERLAY).is_none(),
        bridge: None,
        mpi_libs,
    };
    Ok(Plan {
        spec,
        argv,
        env: env.vars,
        host_env,
        bridged: names,
        _held: held,
    })
}

/// No bridge: enter and exec in place, no supervisor.
fn exec_in_place(plan: &Plan, note: &dyn Fn(&str)) -> anyhow::Result<u8> {
    enter_and_exec(&plan.spec, &plan.argv, &plan.env, note).map_err(Into::into)
}

/// The bridge: a child enters and execs, and this process stays on the host side as its
/// supervisor, serving the bridged host commands (see `lpmx_job::container::bridge`).
fn supervise(plan: Plan, image: &str, note: &dyn Fn(&str)) -> anyhow::Result<u8> {
    let Plan {
        mut spec,
        argv,
        env,
        host_env,
        bridged: names,
        _held,
    } = plan;
    let listener = bridge::supervise::Listener::create(image)?;
    // The path, not /proc/self/exe: a bind from a magic link would name a mount of the host's
    // namespace, which the kernel refuses once the child has its own.
    let exe = std::env::current_exe()
        .with_context(|| format!("{image}: finding lpmx-job's own executable to bind inside"))?;
    let (loader, libs) = bridge::loaded_libraries();
    spec.bridge = Some(runtime::BridgeMounts {
        exe,
        loader,
        libs,
        socket_dir: listener.dir().to_path_buf(),
        names: names.clone(),
    });
    let inside_env = bridge::container_env(&env);
    let server = bridge::server::Server::new(
        image.to_string(),
        names.clone(),
        host_env,
        inside_env.clone(),
        spec.default_binds
            .iter()
            .chain(&spec.user_binds)
            .map(|b| (b.dst.clone(), b.src.clone()))
            .collect(),
        host::uid(),
        spec.host_cwd.clone(),
    );
    note(&format!(
        "bridging host commands {} through {}",
        names.join(", "),
        listener.dir().display()
    ));
    let code = bridge::supervise::run(listener, server, || {
        match enter_and_exec(&spec, &argv, &inside_env, note) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("lpmx-job[{}]: error: {e}", host::hostname());
                e.exit_code()
            }
        }
    })?;
    Ok(code)
}

/// `--mpi host`: what to inject, checked against the MPI the image was built with.
fn host_mpi(
    config: &Config,
    image: &str,
    tree: &Path,
    image_env: &[String],
) -> anyhow::Result<lpmx_job::container::mpi::Injection> {
    use lpmx_job::container::mpi;
    let ld = image_env
        .iter()
        .find_map(|e| e.strip_prefix("LD_LIBRARY_PATH="));
    let img = mpi::image_mpi(image, &tree.join("root"), ld)?;
    let host = &config.settings.mpi.host;
    let inj = mpi::host_injection(image, &host.libs, &host.binds, Some(img.abi.family))?;
    mpi::check(image, &inj, &img)?;
    mpi::check_glibc(image, &inj, &tree.join("root"), ld)?;
    Ok(inj)
}

fn get_var<'a>(vars: &'a [(OsString, OsString)], name: &str) -> Option<&'a std::ffi::OsStr> {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_os_str())
}

fn set_var(vars: &mut Vec<(OsString, OsString)>, name: &str, value: OsString) {
    match vars.iter_mut().find(|(k, _)| k == name) {
        Some(kv) => kv.1 = value,
        None => vars.push((name.into(), value)),
    }
}

/// Enters the container and execs the command; returns only on failure: Ok(126 or 127)
/// after saying why, or the error for lpmx-job's own failure (125).
fn enter_and_exec(
    spec: &Spec,
    argv: &[String],
    env: &[(OsString, OsString)],
    note: &dyn Fn(&str),
) -> Result<u8, runtime::Error> {
    let entered = runtime::enter(&Real, spec, note)?;
    note(&format!(
        "entered ({} root, workdir {}): exec {:?}",
        if entered.direct {
            "direct read-only"
        } else if entered.overlay {
            "overlay"
        } else {
            "bind-fallback"
        },
        entered.workdir.display(),
        argv
    ));
    let err = runtime::exec(&Real, &spec.image, argv, env);
    let code = err.exit_code();
    if code == lpmx_job::exit::OWN_FAILURE {
        return Err(err);
    }
    eprintln!("lpmx-job[{}]: error: {err}", host::hostname());
    Ok(code)
}

/// Records the image's last use (for `images` and `cache prune --older-than`): the only
/// write a warm run makes to the cache, and at most one a minute per image.
/// A stamp that cannot be written (a FIFO or symlink another member planted, a read-only
/// cache) is said, and the run goes on: the stamp only ages the image for `prune`.
fn stamp_last_used(cache: &Cache, rec: &ImageRecord) {
    if let Err(e) = cache.stamp_used(&rec.manifest) {
        eprintln!(
            "lpmx-job[{}]: warning: not recording the last use of {}: {e}",
            lpmx_job::host::hostname(),
            rec.names
                .first()
                .map_or(rec.manifest.as_str(), |n| n.as_str())
        );
    }
}

/// Runs this program again with the same arguments, telling it which image to run; returns
/// only if that fails.
fn reexec(manifest: &Digest) -> anyhow::Error {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "lpmx-job".into());
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(PULLED, manifest.to_string())
        .exec();
    anyhow::Error::new(err).context("re-executing /proc/self/exe to enter the container")
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Only one id is mapped into the user namespace, so an image's `User` cannot be honoured
/// as such: the command runs as the user's own uid (or as 0 with `--fakeroot`), as with
/// `ch-run`. Said at `-v` when the image asked for someone else.
fn explain_user(user: Option<&str>, id: &runtime::identity::Identity, note: &dyn Fn(&str)) {
    let Some(u) = user.filter(|u| !u.is_empty()) else {
        return;
    };
    let name = u.split(':').next().unwrap_or(u);
    if name != id.uid.to_string() && name != id.user {
        note(&format!(
            "the image's User {u:?} is not honoured: only one id is mapped, so the command runs \
             as {} (uid {}){}",
            id.user,
            id.uid,
            if id.uid == 0 {
                ""
            } else {
                "; --fakeroot runs it as root"
            }
        ));
    }
}
