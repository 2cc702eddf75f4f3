//! Dispatch: each verb calls the library and maps its result to an exit status. Errors are
//! one line on stderr naming the node (batch logs interleave many nodes); `-v` shows the
//! whole chain and, for config files, the offending lines.

use std::io::Write;

use anyhow::Context;
use clap::{CommandFactory, Parser};

use crate::cli::args::{CacheCommand, Cli, Command, ConfigCommand};
use crate::cli::common::load_config;
use lpmx_job::cache::maintain;
use lpmx_job::config::{self, Config};
use lpmx_job::host::doctor;
use lpmx_job::image::pull;
use lpmx_job::image::reference::{Reference, Remote};
use lpmx_job::image::registry::{self, Client};
use lpmx_job::{configured, exit, host};

pub fn main() -> u8 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(r) = crate::cli::args::RunOnly::try_fast(&args) {
        let verbose = r.global.verbose;
        return match crate::cli::run::run(&r.global, r.run) {
            Ok(code) => code,
            Err(e) => {
                report_error(&e, verbose);
                exit::OWN_FAILURE
            }
        };
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let verbose = cli.global.verbose;
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            report_error(&e, verbose);
            exit::OWN_FAILURE
        }
    }
}

/// clap's own message is several lines; a batch log wants one, with the usage beside it.
fn usage_error(e: clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            exit::OWN_FAILURE
        } else {
            exit::OK
        };
    }
    let text = e.render().to_string();
    // clap's first paragraph can span lines ("...not provided:" then the missing names,
    // indented): keep all of it, on one line.
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim())
        .collect();
    let first = match first.join(" ") {
        s if s.is_empty() => "bad arguments".to_string(),
        s => s.trim_start_matches("error: ").to_string(),
    };
    let usage = text
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .map(|u| format!("; usage: {u}"))
        .unwrap_or_default();
    eprintln!(
        "lpmx-job[{}]: error: {first}{usage} (see --help)",
        host::hostname()
    );
    exit::OWN_FAILURE
}

/// Library errors name their cause in their own message, so a cause already said is skipped.
fn report_error(e: &anyhow::Error, verbose: u8) {
    let node = host::hostname();
    let mut said: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
    }
    if verbose == 0 {
        eprintln!("lpmx-job[{node}]: error: {}", said.join(": "));
        return;
    }
    eprintln!("lpmx-job[{node}]: error: {}", said[0]);
    for cause in &said[1..] {
        eprintln!("  caused by: {cause}");
    }
    for cause in e.chain() {
        if let Some(config::Error::Parse { detail, .. }) = cause.downcast_ref::<config::Error>() {
            eprintln!("{detail}");
        }
    }
}

/// Progress and notes go to stderr, one line each, naming the node.
fn logger(quiet: bool) -> impl Fn(&str) + Sync {
    move |m: &str| {
        if !quiet {
            eprintln!("lpmx-job[{}]: {m}", host::hostname());
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    // A reader that goes away (`lpmx-job images | head`) ends a listing quietly, as it ends
    // `ls` or `cat`: the write gets SIGPIPE. std ignores SIGPIPE (main.rs does too), which
    // turned every closed pipe into a panic or an "error: Broken pipe" and status 125. `run`
    // keeps it ignored: its supervisor writes to sockets a task may close, and it restores
    // the default for the command itself.
    if !matches!(cli.command, Command::Run(_)) {
        // SAFETY: setting a signal's disposition has no memory-safety requirement.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Pull {
            images,
            platform,
            jobs,
            json,
            offline,
        } => {
            let config = load_config(&cli.global)?;
            let cache = configured::open_cache(&config)?;
            let platform = match platform {
                Some(p) => pull::Platform::parse(&p).map_err(anyhow::Error::msg)?,
                None => pull::Platform::host(),
            };
            let log = logger(cli.global.quiet);
            let progress =
                lpmx_job::image::progress::for_setting(config.settings.progress, cli.global.quiet);
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
        Command::Images { json } => {
            let config = load_config(&cli.global)?;
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
        Command::Rmi { images } => {
            let config = load_config(&cli.global)?;
            let cache = configured::open_cache(&config)?;
            let log = logger(cli.global.quiet);
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
        Command::Search {
            term,
            registry,
            limit,
            json,
        } => {
            let config = load_config(&cli.global)?;
            let hits: Vec<registry::SearchHit> = match &registry {
                Some(host) => {
                    let remote = Remote::parse(&format!("{host}/x"))?;
                    let client = configured::client_for(&config, &remote.registry)?;
                    let remote = Remote {
                        repository: String::new(),
                        ..remote
                    };
                    client
                        .catalog(&remote)
                        .with_context(|| format!("listing the catalog of {host}"))?
                        .into_iter()
                        .filter(|n| n.contains(&term))
                        .take(limit)
                        .map(|name| registry::SearchHit {
                            name,
                            description: String::new(),
                            stars: 0,
                            official: false,
                        })
                        .collect()
                }
                None => configured::client_for(&config, lpmx_job::image::reference::DOCKER_HUB)?
                    .hub_search(&term, limit)
                    .with_context(|| format!("searching Docker Hub for {term:?}"))?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else {
                for h in &hits {
                    let prefix = registry
                        .as_deref()
                        .map(|r| format!("{r}/"))
                        .unwrap_or_default();
                    let mark = if h.official { " [official]" } else { "" };
                    if h.description.is_empty() && h.stars == 0 {
                        println!("{prefix}{}{mark}", h.name);
                    } else {
                        println!(
                            "{prefix}{:<40} {:>7}  {}{mark}",
                            h.name, h.stars, h.description
                        );
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Login {
            registry: host,
            username,
            password_stdin,
        } => {
            let config = load_config(&cli.global)?;
            let host = host.unwrap_or_else(|| lpmx_job::image::reference::DOCKER_HUB.to_string());
            let password = read_password(password_stdin)?;
            let creds = registry::auth::Credentials {
                user: username,
                password,
            };
            let mut client_opts = configured::client_options(&config, &host);
            client_opts.credentials =
                std::collections::HashMap::from([(host.clone(), creds.clone())]);
            let client = Client::new(client_opts)?;
            let remote = Remote {
                registry: host.clone(),
                repository: String::new(),
                tag: None,
                digest: None,
            };
            client
                .check_login(&remote)
                .with_context(|| format!("logging in to {host}"))?;
            let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let path = registry::auth::docker_config_path(&env)
                .context("no HOME or DOCKER_CONFIG to store credentials in")?;
            registry::auth::store_credentials(&path, &host, Some(&creds))
                .with_context(|| format!("writing {}", path.display()))?;
            logger(cli.global.quiet)(&format!(
                "{host}: logged in as {}; credentials stored in {}",
                creds.user,
                path.display()
            ));
            Ok(exit::OK)
        }
        Command::Logout { registry: host } => {
            let host = host.unwrap_or_else(|| lpmx_job::image::reference::DOCKER_HUB.to_string());
            let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let path =
                registry::auth::docker_config_path(&env).context("no HOME or DOCKER_CONFIG")?;
            registry::auth::store_credentials(&path, &host, None)
                .with_context(|| format!("writing {}", path.display()))?;
            logger(cli.global.quiet)(&format!(
                "{host}: credentials removed from {}",
                path.display()
            ));
            Ok(exit::OK)
        }
        Command::Tags { repository } => {
            let config = load_config(&cli.global)?;
            let remote = Remote::parse(&repository)?;
            let client = configured::client_for(&config, &remote.registry)?;
            for t in client.tags(&remote).with_context(|| {
                format!("listing tags of {}/{}", remote.registry, remote.repository)
            })? {
                println!("{t}");
            }
            Ok(exit::OK)
        }
        Command::Cache { command } => {
            let config = load_config(&cli.global)?;
            let cache = configured::open_cache(&config)?;
            let log = logger(cli.global.quiet);
            match command {
                CacheCommand::Info { json } => {
                    let usage = maintain::usage(&cache);
                    let fs = host::filesystem_of(cache.root())?;
                    let lock = lpmx_job::cache::lock::probe(
                        cache.root(),
                        std::time::Duration::from_secs(10),
                    )?;
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
                    let faults = maintain::verify(&cache)?;
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
                        .filter(|f| f.repair != maintain::Repair::None)
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
                        if f.repair == maintain::Repair::None || !removed.insert(f.path.clone()) {
                            continue;
                        }
                        if f.repair == maintain::Repair::Rebuild {
                            if !maintain::remove_tree_entry(&cache, &f.path, &log)? {
                                continue;
                            }
                            rebuild.extend(f.images.iter().cloned());
                        } else {
                            maintain::remove_entry(&cache, &f.path, &log)?;
                            again.extend(f.images.iter().cloned());
                        }
                    }
                    let progress = lpmx_job::image::progress::for_setting(
                        config.settings.progress,
                        cli.global.quiet,
                    );
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
                    let left = maintain::verify(&cache)?;
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
        Command::Run(args) => match args.flag_for_image() {
            Some("-h" | "--help") => {
                let mut c = Cli::command();
                if let Some(run) = c.find_subcommand_mut("run") {
                    let long = args.image() == "--help";
                    let _ = if long {
                        run.print_long_help()
                    } else {
                        run.print_help()
                    };
                }
                Ok(exit::OK)
            }
            Some(flag) => Err(anyhow::anyhow!(
                "run: unknown option {flag:?} before IMAGE (see lpmx-job run --help)"
            )),
            None => crate::cli::run::run(&cli.global, args),
        },
        Command::Expose {
            image,
            command,
            name,
            dir,
            list,
            remove,
            json,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => std::env::var_os("XDG_BIN_HOME")
                    .map(std::path::PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME")
                            .map(|h| std::path::Path::new(&h).join(".local/bin"))
                    })
                    .context("no HOME: say where wrappers go with --dir")?,
            };
            let log = logger(cli.global.quiet);
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
                    let d =
                        std::fs::canonicalize(&d).with_context(|| format!("{}", d.display()))?;
                    Reference::OciLayout { dir: d, tag }.to_string()
                }
                Reference::DockerArchive { file } => {
                    let file = std::fs::canonicalize(&file)
                        .with_context(|| format!("{}", file.display()))?;
                    Reference::DockerArchive { file }.to_string()
                }
                r => r.to_string(),
            };
            let name =
                name.unwrap_or_else(|| command.rsplit('/').next().unwrap_or(&command).to_string());
            let lpmx = std::env::current_exe().context("finding the lpmx-job executable")?;
            let text = lpmx_job::container::expose::wrapper(
                &lpmx,
                &image,
                &command,
                cli.global.cache.as_deref(),
            )?;
            // The image now, not at the first call: a wrapper naming an image that does not
            // exist (a typo, a missing tag) would only fail later, far from here.
            let config = load_config(&cli.global)?;
            let cache = configured::open_cache(&config)?;
            let reference = Reference::parse(&image)?;
            let platform = pull::Platform::host();
            if pull::cached(&cache, &reference, &platform)?.is_none() {
                let progress = lpmx_job::image::progress::for_setting(
                    config.settings.progress,
                    cli.global.quiet,
                );
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
        Command::Prefetch { images, platform } => {
            crate::cli::batch::prefetch(&cli.global, &images, platform.as_deref())
        }
        Command::Cleanup { job, dirs } => crate::cli::batch::cleanup(&cli.global, &job, &dirs),
        Command::Doctor { json } => {
            let config = load_config(&cli.global)?;
            let report = doctor::run(&config);
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else if !cli.global.quiet || !report.can_run {
                out.write_all(report.render_text().as_bytes())?;
            }
            Ok(if report.can_run {
                exit::OK
            } else {
                exit::CHECK_FAILED
            })
        }
        Command::Config {
            command: ConfigCommand::Show { json },
        } => {
            let config = load_config(&cli.global)?;
            config_show(&config, json)?;
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lpmx-job",
                &mut std::io::stdout(),
            );
            Ok(exit::OK)
        }
        Command::Man { dir } => {
            let cmd = Cli::command();
            match dir {
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
                Some(dir) => {
                    fs_err::create_dir_all(&dir)?;
                    clap_mangen::generate_to(cmd, &dir)
                        .with_context(|| format!("writing man pages into {}", dir.display()))?;
                }
            }
            Ok(exit::OK)
        }
    }
}

/// The password for `login`: a line of standard input, or typed at the terminal unechoed.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if !from_stdin && !stdin.is_terminal() {
        anyhow::bail!(
            "no terminal to ask for the password on: pass --password-stdin and pipe it in"
        );
    }
    let mut line = String::new();
    if from_stdin {
        stdin.lock().read_line(&mut line)?;
    } else {
        eprint!("Password: ");
        // SAFETY: termios calls on standard input, restoring the saved settings afterwards.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            libc::tcgetattr(0, &mut t);
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            let r = stdin.lock().read_line(&mut line);
            libc::tcsetattr(0, libc::TCSANOW, &saved);
            eprintln!();
            r?;
        }
    }
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    Ok(password)
}

fn human_age(secs: u64) -> String {
    match secs {
        0..=119 => "just now".into(),
        120..=7199 => format!("{} minutes ago", secs / 60),
        7200..=172_799 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

fn config_show(config: &Config, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let keys: serde_json::Map<String, serde_json::Value> = config
            .origins
            .iter()
            .map(|(k, (v, s))| {
                (
                    k.clone(),
                    serde_json::json!({ "value": v, "source": s.to_string() }),
                )
            })
            .collect();
        let files: Vec<_> = config
            .files
            .iter()
            .map(|(s, found)| serde_json::json!({ "file": s.to_string(), "found": found }))
            .collect();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({ "keys": keys, "files": files }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    for (source, found) in &config.files {
        writeln!(
            out,
            "# {source}: {}",
            if *found { "read" } else { "absent" }
        )?;
    }
    let width = config.origins.keys().map(String::len).max().unwrap_or(0);
    for (key, (value, source)) in &config.origins {
        let shown = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "(unset)".into(),
            other => other.to_string(),
        };
        writeln!(out, "{key:<width$}  {shown}  [{source}]")?;
    }
    Ok(())
}
