//! Dispatch: each verb calls the library and maps its result to an exit status. Errors are
//! one line on stderr naming the node (batch logs interleave many nodes); `-v` shows the
//! whole chain and, for config files, the offending lines.

use std::io::Write;

use anyhow::Context;
use clap::{CommandFactory, Parser};

use crate::cli::args::{Cli, Command, ConfigCommand};
use crate::cli::common::load_config;
use lpmx_job::config::{self, Config};
use lpmx_job::host::doctor;
use lpmx_job::{exit, host};

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
        } => crate::cli::images::pull(&cli.global, images, platform, jobs, json, offline),
        Command::Images { json } => crate::cli::images::images(&cli.global, json),
        Command::Rmi { images } => crate::cli::images::rmi(&cli.global, images),
        Command::Search {
            term,
            registry,
            limit,
            json,
        } => crate::cli::registry::search(&cli.global, term, registry, limit, json),
        Command::Login {
            registry: host,
            username,
            password_stdin,
        } => crate::cli::registry::login(&cli.global, host, username, password_stdin),
        Command::Logout { registry: host } => crate::cli::registry::logout(&cli.global, host),
        Command::Tags { repository } => crate::cli::registry::tags(&cli.global, repository),
        Command::Cache { command } => crate::cli::cache::cache(&cli.global, command),
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
        } => crate::cli::expose::expose(&cli.global, image, command, name, dir, list, remove, json),
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
