//! The verbs that ask a registry: `search`, `tags`, `login`, `logout`.

use anyhow::Context;

use crate::cli::args::Global;
use crate::cli::common::{load_config, logger};
use lpmx_job::image::reference::Remote;
use lpmx_job::image::registry::{self, Client};
use lpmx_job::{configured, exit};

/// `lpmx-job search TERM`
pub fn search(
    g: &Global,
    term: String,
    registry: Option<String>,
    limit: usize,
    json: bool,
) -> anyhow::Result<u8> {
    let config = load_config(g)?;
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

/// `lpmx-job tags REPO`
pub fn tags(g: &Global, repository: String) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let remote = Remote::parse(&repository)?;
    let client = configured::client_for(&config, &remote.registry)?;
    for t in client
        .tags(&remote)
        .with_context(|| format!("listing tags of {}/{}", remote.registry, remote.repository))?
    {
        println!("{t}");
    }
    Ok(exit::OK)
}

/// `lpmx-job login [REGISTRY]`
pub fn login(
    g: &Global,
    host: Option<String>,
    username: String,
    password_stdin: bool,
) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let host = host.unwrap_or_else(|| lpmx_job::image::reference::DOCKER_HUB.to_string());
    let password = read_password(password_stdin)?;
    let creds = registry::auth::Credentials {
        user: username,
        password,
    };
    let mut client_opts = configured::client_options(&config, &host);
    client_opts.credentials = std::collections::HashMap::from([(host.clone(), creds.clone())]);
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
    logger(g.quiet)(&format!(
        "{host}: logged in as {}; credentials stored in {}",
        creds.user,
        path.display()
    ));
    Ok(exit::OK)
}

/// `lpmx-job logout [REGISTRY]`
pub fn logout(g: &Global, host: Option<String>) -> anyhow::Result<u8> {
    let host = host.unwrap_or_else(|| lpmx_job::image::reference::DOCKER_HUB.to_string());
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let path = registry::auth::docker_config_path(&env).context("no HOME or DOCKER_CONFIG")?;
    registry::auth::store_credentials(&path, &host, None)
        .with_context(|| format!("writing {}", path.display()))?;
    logger(g.quiet)(&format!(
        "{host}: credentials removed from {}",
        path.display()
    ));
    Ok(exit::OK)
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
