//! Dispatch: each verb calls the library and maps its result to an exit status. Errors are
//! one line on stderr naming the node (batch logs interleave many nodes); `-v` shows the
//! whole chain and, for config files, the offending lines.

use std::io::Write;

use anyhow::Context;
use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, ConfigCommand, Global};
use lpmx_job::config::{self, Config};
use lpmx_job::{doctor, exit, host};

pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
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
    let first = text
        .lines()
        .next()
        .unwrap_or("bad arguments")
        .trim_start_matches("error: ");
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

fn report_error(e: &anyhow::Error, verbose: u8) {
    let node = host::hostname();
    if verbose == 0 {
        eprintln!("lpmx-job[{node}]: error: {e:#}");
        return;
    }
    eprintln!("lpmx-job[{node}]: error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    for cause in e.chain() {
        if let Some(config::Error::Parse { detail, .. }) = cause.downcast_ref::<config::Error>() {
            eprintln!("{detail}");
        }
    }
}

fn load_config(g: &Global) -> anyhow::Result<Config> {
    let mut inputs = config::Inputs::from_process();
    inputs.config_flag = g.config.clone();
    inputs.cache_flag = g.cache.clone();
    Ok(Config::load(&inputs)?)
}

fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
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
