//! Layered configuration: built-in defaults < site file < user file < `LPMX_CONFIG` file
//! < `LPMX_*` environment < command-line flags. Every effective value remembers where it came
//! from so `lpmx-job config show` can answer "why is my cache over there?".
//!
//! Layers are merged as flat dotted keys (`cache.dir`) so that adding a setting means adding a
//! field to [`FileConfig`] and [`Settings`], and a row to [`ENV_KEYS`] when it has a variable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `detail` is the parser's own text with its source snippet, shown with `-v`.
    #[error("config file {path}, line {line}{}: {message}", key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: u64,
        key: Option<String>,
        message: String,
        detail: String,
    },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("{origin}, key `{key}`: {message}")]
    Value {
        origin: Source,
        key: String,
        message: String,
    },
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "from", rename_all = "kebab-case")]
pub enum Source {
    Default,
    SiteFile(PathBuf),
    UserFile(PathBuf),
    /// The file named by `LPMX_CONFIG` or `--config`.
    ConfigFile(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::SiteFile(p) => write!(f, "site file {}", p.display()),
            Source::UserFile(p) => write!(f, "user file {}", p.display()),
            Source::ConfigFile(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment {v}"),
            Source::Flag(n) => write!(f, "flag {n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Progress {
    /// Bars on a terminal, one line per event otherwise.
    #[default]
    Auto,
    Bar,
    Line,
    None,
}

/// Which kind of lock the cache uses; `auto` probes once and records the answer in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LockModeSetting {
    #[default]
    Auto,
    Flock,
    FcntlOfd,
    Lockdir,
}

impl LockModeSetting {
    pub fn forced(self) -> Option<crate::cache::lock::Mode> {
        match self {
            LockModeSetting::Auto => None,
            LockModeSetting::Flock => Some(crate::cache::lock::Mode::Flock),
            LockModeSetting::FcntlOfd => Some(crate::cache::lock::Mode::FcntlOfd),
            LockModeSetting::Lockdir => Some(crate::cache::lock::Mode::LockDir),
        }
    }
}

/// Whose entries of a group cache a user takes (`cache.trust`). A member of the group can
/// publish anything under any digest or name first, so `group` trusts every member as much
/// as oneself; `self` takes only entries the user or root (the site) owns and pulls the rest
/// again into a directory of the user's own (see `Cache::share_with_group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TrustSetting {
    #[default]
    Group,
    #[serde(rename = "self")]
    Own,
}

/// What a config file may contain. Every field is optional: a file sets only what it names.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub cache: CacheFile,
    #[serde(default)]
    pub registry: RegistryFile,
    /// Per-registry settings by host (`docker.io`, `127.0.0.1:5000`).
    pub registries: Option<BTreeMap<String, RegistryEntry>>,
    pub progress: Option<Progress>,
    #[serde(default)]
    pub stage: StageFile,
    #[serde(default)]
    pub bridge: BridgeFile,
    #[serde(default)]
    pub mpi: MpiFile,
    #[serde(default)]
    pub scratch: ScratchFile,
}

/// The per-task tmpfs (writes with `--write`, created mount points, passwd and group).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchFile {
    /// tmpfs `size=`: bytes with an optional k, m or g, or a percentage of memory.
    pub size: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScratchSettings {
    pub size: Option<String>,
}

/// A tmpfs `size=` value: `N`, `N[kKmMgG]` or `N%` (1 to 100).
pub fn check_tmpfs_size(v: &str) -> std::result::Result<(), String> {
    let (num, unit) = match v.char_indices().last() {
        Some((i, c)) if "kKmMgG%".contains(c) => (&v[..i], Some(c)),
        _ => (v, None),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 && (unit != Some('%') || n <= 100) => Ok(()),
        _ => Err(format!(
            "{v:?} is not a tmpfs size: give bytes with an optional k, m or g (e.g. 4g), or \
             a percentage of memory (e.g. 25%)"
        )),
    }
}

/// The host command bridge (see `crate::container::bridge`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeFile {
    /// Names bridged in every run, as if given with `--host-cmd` (sets such as `@slurm` too).
    pub commands: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpiFile {
    #[serde(default)]
    pub host: MpiHostFile,
}

/// The host MPI `run --mpi host` injects (see `crate::container::mpi`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpiHostFile {
    /// The MPI library files, or directories holding them; empty: found by `ldconfig -p`.
    pub libs: Option<Vec<String>>,
    /// Further host paths bound read-only at the same path (fabric provider configs, Open
    /// MPI's component directory).
    pub binds: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BridgeSettings {
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MpiSettings {
    pub host: MpiHostSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MpiHostSettings {
    pub libs: Vec<PathBuf>,
    pub binds: Vec<PathBuf>,
}

/// Node-local staging of image trees in jobs (see `crate::cache::stage`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageFile {
    pub mode: Option<crate::cache::stage::Mode>,
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSettings {
    /// `auto` (when the cache is on a network or parallel filesystem), `always`, `never`.
    pub mode: crate::cache::stage::Mode,
    /// Node-local directory; None: `$TMPDIR`, else `/tmp`.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// A PEM file of certificate authorities trusted for this registry only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Reach this registry over plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Registries serving the same repositories, tried first (a site mirror of docker.io).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub dir: Option<String>,
    pub group: Option<String>,
    pub readonly: Option<Vec<String>>,
    pub lock_timeout: Option<u64>,
    pub lock_mode: Option<LockModeSetting>,
    pub trust: Option<TrustSetting>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    pub insecure: Option<Vec<String>>,
    pub resolve_window: Option<u64>,
}

/// The effective settings every verb works from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub cache: CacheSettings,
    pub registry: RegistrySettings,
    pub registries: BTreeMap<String, RegistryEntry>,
    pub progress: Progress,
    pub stage: StageSettings,
    pub bridge: BridgeSettings,
    pub mpi: MpiSettings,
    pub scratch: ScratchSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheSettings {
    /// None only when neither HOME, the password database nor any layer gives a directory.
    pub dir: Option<PathBuf>,
    pub group: Option<String>,
    pub readonly: Vec<PathBuf>,
    /// Seconds a process waits for another's lock before giving up.
    pub lock_timeout: u64,
    pub lock_mode: LockModeSetting,
    /// Whose entries of a group cache to use; meaningful only with `group`.
    #[serde(default)]
    pub trust: TrustSetting,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrySettings {
    /// `host:port` entries that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Seconds a tag's answer, once asked by any process on any node of the cache, is
    /// reused instead of asking the registry again (0: always ask). Docker Hub counts every
    /// manifest GET against its pull limit; a 1,000-task job must not send 1,000.
    pub resolve_window: u64,
}

impl Settings {
    pub fn cache_dir(&self) -> Result<&Path> {
        self.cache.dir.as_deref().ok_or_else(|| Error::Value {
            origin: Source::Default,
            key: "cache.dir".into(),
            message: "no cache directory: HOME is unset and no config names one; \
                      set LPMX_CACHE or pass --cache DIR"
                .into(),
        })
    }
}

#[derive(Clone, Copy)]
enum EnvKind {
    Text,
    /// Split on this separator, empty items dropped.
    List(char),
    Seconds,
}

/// `LPMX_*` variables and the key each one sets.
const ENV_KEYS: &[(&str, &str, EnvKind)] = &[
    ("LPMX_CACHE", "cache.dir", EnvKind::Text),
    ("LPMX_CACHE_GROUP", "cache.group", EnvKind::Text),
    ("LPMX_READONLY_CACHES", "cache.readonly", EnvKind::List(':')),
    ("LPMX_LOCK_TIMEOUT", "cache.lock_timeout", EnvKind::Seconds),
    (
        "LPMX_RESOLVE_WINDOW",
        "registry.resolve_window",
        EnvKind::Seconds,
    ),
    ("LPMX_LOCK_MODE", "cache.lock_mode", EnvKind::Text),
    ("LPMX_CACHE_TRUST", "cache.trust", EnvKind::Text),
    (
        "LPMX_INSECURE_REGISTRIES",
        "registry.insecure",
        EnvKind::List(','),
    ),
    ("LPMX_PROGRESS", "progress", EnvKind::Text),
    ("LPMX_STAGE", "stage.mode", EnvKind::Text),
    ("LPMX_STAGE_DIR", "stage.dir", EnvKind::Text),
    ("LPMX_HOST_CMDS", "bridge.commands", EnvKind::List(',')),
    ("LPMX_MPI_HOST_LIBS", "mpi.host.libs", EnvKind::List(':')),
    ("LPMX_SCRATCH_SIZE", "scratch.size", EnvKind::Text),
];

/// Variables that steer loading itself rather than setting a key.
pub const SITE_CONFIG_VAR: &str = "LPMX_SITE_CONFIG";
pub const CONFIG_VAR: &str = "LPMX_CONFIG";
pub const DEFAULT_SITE_CONFIG: &str = "/etc/lpmx/config.yaml";

/// Keys whose value is a map by name, kept whole when flattening (names contain dots).
const MAP_KEYS: &[&str] = &["registries"];

/// Key paths whose values are filesystem paths: `~` and `$VAR` are expanded in them.
const PATH_KEYS: &[&str] = &[
    "cache.dir",
    "cache.readonly",
    "stage.dir",
    "mpi.host.libs",
    "mpi.host.binds",
];

/// Everything outside the process that loading reads, gathered up front so tests can supply it.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub env: BTreeMap<String, String>,
    /// Home directory from the password database, used when HOME is unset (`env -i` pilots).
    pub passwd_home: Option<PathBuf>,
    /// `--config FILE`, which takes the place of `LPMX_CONFIG`.
    pub config_flag: Option<PathBuf>,
    /// `--cache DIR`.
    pub cache_flag: Option<PathBuf>,
}

impl Inputs {
    pub fn from_process() -> Self {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        // The password database only when HOME does not answer: a lookup costs a file
        // parse (or a name service's round trip) on every task start.
        let passwd_home = match env.get("HOME") {
            Some(h) if !h.is_empty() => None,
            _ => crate::host::passwd_home(),
        };
        Inputs {
            env,
            passwd_home,
            config_flag: None,
            cache_flag: None,
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        self.var("HOME")
            .map(PathBuf::from)
            .or_else(|| self.passwd_home.clone())
    }
}

/// The merged configuration: typed settings plus, per key, its value and origin.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub origins: BTreeMap<String, (Value, Source)>,
    /// Files that were looked for, and whether each existed (for `config show`).
    pub files: Vec<(Source, bool)>,
}

impl Config {
    pub fn load(inputs: &Inputs) -> Result<Config> {
        let mut merged: BTreeMap<String, (Value, Source)> = BTreeMap::new();
        let mut put = |flat: Vec<(String, Value)>, source: &Source| {
            for (k, v) in flat {
                // Maps keyed by name merge entry by entry: a user's own registry does not
                // drop the site's settings for another.
                if let (Some((Value::Object(old), _)), Value::Object(new)) = (merged.get(&k), &v) {
                    if MAP_KEYS.contains(&k.as_str()) {
                        let mut both = old.clone();
                        both.extend(new.clone());
                        merged.insert(k, (Value::Object(both), source.clone()));
                        continue;
                    }
                }
                merged.insert(k, (v, source.clone()));
            }
        };
        // Defaults keep their nulls so that every key is listed, set or not.
        put(
            flatten(
                &serde_json::to_value(defaults(inputs)).expect("defaults serialize"),
                true,
            ),
            &Source::Default,
        );

        let mut files = Vec::new();
        for source in file_sources(inputs) {
            let path = match &source {
                Source::SiteFile(p) | Source::UserFile(p) | Source::ConfigFile(p) => p.clone(),
                _ => unreachable!("file_sources yields files"),
            };
            // An explicitly named file must exist; the conventional locations are optional.
            let explicit = matches!(source, Source::ConfigFile(_));
            match fs_err::read_to_string(&path) {
                Ok(text) => {
                    let layer = parse_file(&path, &text)?;
                    put(
                        flatten(
                            &serde_json::to_value(layer).expect("layer serializes"),
                            false,
                        ),
                        &source,
                    );
                    files.push((source, true));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                    files.push((source, false));
                }
                Err(e) => return Err(Error::Read { path, source: e }),
            }
        }

        for &(var, key, kind) in ENV_KEYS {
            if let Some(raw) = inputs.var(var) {
                let value = env_value(var, raw, kind)?;
                check_one(key, &value).map_err(|message| Error::Env {
                    var,
                    value: raw.to_string(),
                    message,
                })?;
                put(vec![(key.to_string(), value)], &Source::Env(var));
            }
        }
        if let Some(dir) = &inputs.cache_flag {
            put(
                vec![("cache.dir".into(), Value::String(dir.display().to_string()))],
                &Source::Flag("--cache"),
            );
        }

        if let Some((Value::Object(hosts), source)) = merged.get_mut("registries") {
            for (host, entry) in hosts.iter_mut() {
                if let Some(ca) = entry.get_mut("ca") {
                    expand_paths(ca, inputs).map_err(|message| Error::Value {
                        origin: source.clone(),
                        key: format!("registries.{host}.ca"),
                        message,
                    })?;
                }
            }
        }
        for key in PATH_KEYS {
            if let Some((value, source)) = merged.get_mut(*key) {
                expand_paths(value, inputs).map_err(|message| Error::Value {
                    origin: source.clone(),
                    key: key.to_string(),
                    message,
                })?;
            }
        }

        if let Some((Value::String(v), source)) = merged.get("scratch.size") {
            check_tmpfs_size(v).map_err(|message| Error::Value {
                origin: source.clone(),
                key: "scratch.size".into(),
                message,
            })?;
        }

        let nested = unflatten(merged.iter().map(|(k, (v, _))| (k.as_str(), v.clone())));
        let settings: Settings = serde_json::from_value(nested).map_err(|e| Error::Value {
            origin: Source::Default,
            key: "(all)".into(),
            message: e.to_string(),
        })?;
        Ok(Config {
            settings,
            origins: merged,
            files,
        })
    }
}

fn defaults(inputs: &Inputs) -> Settings {
    let dir = inputs
        .var("XDG_CACHE_HOME")
        .map(|x| PathBuf::from(x).join("lpmx"))
        .or_else(|| inputs.home().map(|h| h.join(".cache/lpmx")));
    Settings {
        cache: CacheSettings {
            dir,
            group: None,
            readonly: Vec::new(),
            lock_timeout: 3600,
            lock_mode: LockModeSetting::Auto,
            trust: TrustSetting::Group,
        },
        registry: RegistrySettings {
            insecure: Vec::new(),
            resolve_window: 60,
        },
        registries: BTreeMap::new(),
        progress: Progress::Auto,
        stage: StageSettings {
            mode: crate::cache::stage::Mode::Auto,
            dir: None,
        },
        bridge: BridgeSettings {
            commands: Vec::new(),
        },
        mpi: MpiSettings {
            host: MpiHostSettings {
                libs: Vec::new(),
                binds: Vec::new(),
            },
        },
        scratch: ScratchSettings { size: None },
    }
}

fn file_sources(inputs: &Inputs) -> Vec<Source> {
    let site = inputs.var(SITE_CONFIG_VAR).unwrap_or(DEFAULT_SITE_CONFIG);
    let mut out = vec![Source::SiteFile(PathBuf::from(site))];
    let user_dir = inputs
        .var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| inputs.home().map(|h| h.join(".config")));
    if let Some(dir) = user_dir {
        out.push(Source::UserFile(dir.join("lpmx/config.yaml")));
    }
    let named = inputs
        .config_flag
        .clone()
        .or_else(|| inputs.var(CONFIG_VAR).map(PathBuf::from));
    if let Some(p) = named {
        out.push(Source::ConfigFile(p));
    }
    out
}

/// Parses one YAML file, turning the parser's error into one naming the file, line and key.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig> {
    serde_saphyr::from_str::<Option<FileConfig>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            // The typed parse reads as it goes, so an unclosed `[a` under a string key reads
            // as a type error ("expected string scalar"). A syntax error is said as one, and
            // where: parsing as plain YAML (only on this error path) tells the two apart.
            if let Err(syntax) = serde_saphyr::from_str::<serde_json::Value>(text) {
                let line = syntax.location().map(|l| l.line()).unwrap_or(0);
                let column = syntax.location().map(|l| l.column()).unwrap_or(0);
                return Error::Parse {
                    path: path.to_path_buf(),
                    line,
                    key: None,
                    message: format!(
                        "not valid YAML at column {column}: {}",
                        strip_position(&syntax.without_snippet().to_string())
                    ),
                    detail: syntax.to_string(),
                };
            }
            let line = e.location().map(|l| l.line()).unwrap_or(0);
            let key = e.location().and_then(|l| key_at(text, l.line()));
            let plain = strip_position(&e.without_snippet().to_string());
            Error::Parse {
                path: path.to_path_buf(),
                line,
                message: expectation(key.as_deref(), &plain),
                key,
                detail: e.to_string(),
            }
        })
}

/// What a key holds, in words, where the parser's type name would not tell a user: "invalid
/// u64" means nothing to someone who wrote `lock_timeout: soon`.
const EXPECTED: &[(&str, &str)] = &[
    (
        "cache.lock_timeout",
        "a whole number of seconds, such as 600",
    ),
    ("cache.readonly", "a list of directories"),
    ("registry.insecure", "a list of host:port names"),
    (
        "registry.resolve_window",
        "a whole number of seconds, such as 60 (0: ask the registry every time)",
    ),
    (
        "bridge.commands",
        "a list of command names or sets such as @slurm",
    ),
    ("mpi.host.libs", "a list of files or directories"),
    ("mpi.host.binds", "a list of host paths"),
];

/// The parser's message for a value of the wrong type, said as what was expected. Messages
/// that are not about a type (an unknown key, a bad name) are kept as they are.
fn expectation(key: Option<&str>, parser: &str) -> String {
    let by_type = [
        ("invalid u64", "a whole number"),
        ("invalid u32", "a whole number"),
        ("invalid i64", "a whole number"),
        ("invalid bool", "true or false"),
        (
            "expected string scalar",
            "a string (quote it if it looks like a list or a number)",
        ),
        (
            "expected sequence start",
            "a list ([a, b] or one `- item` per line)",
        ),
        (
            "expected mapping start",
            "a mapping (one `key: value` per line, indented below)",
        ),
    ];
    let Some((_, generic)) = by_type.iter().find(|(p, _)| parser.starts_with(p)) else {
        return parser.to_string();
    };
    let wanted = key
        .and_then(|k| EXPECTED.iter().find(|(name, _)| *name == k))
        .map_or(*generic, |(_, w)| *w);
    format!("expected {wanted}")
}

/// The parser prefixes "error: line N column M: "; the file and line are said once, by us.
/// It may also end with " at line L, column C".
fn strip_position(msg: &str) -> String {
    let mut m = msg.strip_prefix("error: ").unwrap_or(msg);
    if m.starts_with("line ") {
        if let Some(i) = m.find(": ") {
            m = &m[i + 2..];
        }
    }
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

/// The dotted key at a 1-based line of a block-style YAML text: the key on that line (or the
/// nearest above it), then each less-indented key above.
pub fn key_at(text: &str, line: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut idx = (line as usize).checked_sub(1)?;
    if idx >= lines.len() {
        return None;
    }
    let key_of = |l: &str| -> Option<(usize, String)> {
        let indent = l.len() - l.trim_start().len();
        let body = l.trim_start().trim_start_matches("- ");
        if body.starts_with('#') {
            return None;
        }
        let colon = body.find(':')?;
        let k = body[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
        (!k.is_empty() && !k.contains(' ')).then(|| (indent, k.to_string()))
    };
    // The error may point at a key's value or at a continuation line of a list below it.
    let (mut indent, first) = loop {
        if let Some(found) = key_of(lines[idx]) {
            break found;
        }
        idx = idx.checked_sub(1)?;
    };
    let mut path = vec![first];
    while indent > 0 && idx > 0 {
        idx -= 1;
        if let Some((i, k)) = key_of(lines[idx]) {
            if i < indent {
                path.push(k);
                indent = i;
            }
        }
    }
    path.reverse();
    Some(path.join("."))
}

fn env_value(var: &'static str, raw: &str, kind: EnvKind) -> Result<Value> {
    Ok(match kind {
        EnvKind::Text => Value::String(raw.to_string()),
        EnvKind::List(sep) => Value::Array(
            raw.split(sep)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        EnvKind::Seconds => Value::from(raw.trim().parse::<u64>().map_err(|_| Error::Env {
            var,
            value: raw.to_string(),
            message: "expected a whole number of seconds".into(),
        })?),
    })
}

/// Type-checks one key's value by deserializing it alone into [`FileConfig`].
fn check_one(key: &str, value: &Value) -> std::result::Result<(), String> {
    let nested = unflatten(std::iter::once((key, value.clone())));
    serde_json::from_value::<FileConfig>(nested)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Dotted keys and their values. A null in a file layer means "this layer does not set it".
fn flatten(v: &Value, keep_null: bool) -> Vec<(String, Value)> {
    fn walk(prefix: &str, v: &Value, keep_null: bool, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(map) if !MAP_KEYS.contains(&prefix) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, keep_null, out);
                }
            }
            Value::Null if !keep_null => {}
            other => out.push((prefix.to_string(), other.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", v, keep_null, &mut out);
    out
}

fn unflatten<'a>(items: impl Iterator<Item = (&'a str, Value)>) -> Value {
    let mut root = Map::new();
    for (key, value) in items {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("keys are non-empty");
        let mut node = &mut root;
        for p in parts {
            node = node
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("a section is an object");
        }
        node.insert(last.to_string(), value);
    }
    Value::Object(root)
}

/// Expands a leading `~` and `$VAR` / `${VAR}` in a path value (or each path of a list), the
/// way site configs write `/scratch/$USER/lpmx`. An unset variable is an error, not an empty
/// string, so a typo never turns into a cache in `/`.
fn expand_paths(value: &mut Value, inputs: &Inputs) -> std::result::Result<(), String> {
    match value {
        Value::String(s) => {
            *s = expand_one(s, inputs)?;
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| expand_paths(v, inputs)),
        _ => Ok(()),
    }
}

fn expand_one(s: &str, inputs: &Inputs) -> std::result::Result<String, String> {
    let mut out = String::new();
    let rest = if s == "~" || s.starts_with("~/") {
        let home = inputs.home().ok_or("`~` used but HOME is unset")?;
        out.push_str(&home.display().to_string());
        &s[1..]
    } else {
        s
    };
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let (name, braced) = if rest[i + 1..].starts_with('{') {
            let end = rest[i + 2..]
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
            (&rest[i + 2..i + 2 + end], true)
        } else {
            let len = rest[i + 1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - i - 1);
            (&rest[i + 1..i + 1 + len], false)
        };
        if name.is_empty() {
            out.push('$');
            continue;
        }
        let val = match name {
            "HOME" => inputs.home().map(|h| h.display().to_string()),
            _ => inputs.var(name).map(str::to_string),
        }
        .ok_or_else(|| format!("variable ${name} in {s:?} is not set"))?;
        out.push_str(&val);
        let skip = name.len() + if braced { 2 } else { 0 };
        for _ in 0..skip {
            chars.next();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod scratch_tests {
    #[test]
    fn tmpfs_sizes() {
        for ok in ["4g", "512M", "1048576", "25%", "100%"] {
            assert!(super::check_tmpfs_size(ok).is_ok(), "{ok}");
        }
        for bad in ["", "g", "0", "4t", "101%", "-1g", "4 g", "1,5g"] {
            assert!(super::check_tmpfs_size(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(env: &[(&str, &str)]) -> Inputs {
        Inputs {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Inputs::default()
        }
    }

    #[test]
    fn default_cache_follows_xdg_then_home() {
        let c = Config::load(&inputs(&[
            ("HOME", "/h"),
            (SITE_CONFIG_VAR, "/nonexistent/site.yaml"),
        ]))
        .unwrap();
        assert_eq!(
            c.settings.cache.dir.as_deref(),
            Some(Path::new("/h/.cache/lpmx"))
        );
        let c = Config::load(&inputs(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            (SITE_CONFIG_VAR, "/nonexistent/site.yaml"),
        ]))
        .unwrap();
        assert_eq!(c.settings.cache.dir.as_deref(), Some(Path::new("/x/lpmx")));
        let mut i = inputs(&[(SITE_CONFIG_VAR, "/nonexistent/site.yaml")]);
        i.passwd_home = Some("/pw".into());
        let c = Config::load(&i).unwrap();
        assert_eq!(
            c.settings.cache.dir.as_deref(),
            Some(Path::new("/pw/.cache/lpmx"))
        );
        let c = Config::load(&inputs(&[(SITE_CONFIG_VAR, "/nonexistent/site.yaml")])).unwrap();
        assert!(c
            .settings
            .cache_dir()
            .unwrap_err()
            .to_string()
            .contains("LPMX_CACHE"));
    }

    #[test]
    fn key_at_names_nested_keys() {
        let t = "# site\ncache:\n  dir: /x\n  lock_timeout: abc\nregistry:\n  insecure:\n    - a\n";
        assert_eq!(key_at(t, 4).as_deref(), Some("cache.lock_timeout"));
        assert_eq!(key_at(t, 3).as_deref(), Some("cache.dir"));
        assert_eq!(key_at(t, 7).as_deref(), Some("registry.insecure"));
        assert_eq!(key_at(t, 2).as_deref(), Some("cache"));
    }

    #[test]
    fn parse_errors_name_file_line_and_key() {
        let p = Path::new("/etc/lpmx/config.yaml");
        let e = parse_file(p, "cache:\n  dir: /x\n  lock_timout: 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/lpmx/config.yaml"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("lock_timout"), "{e}");
        let e = parse_file(p, "cache:\n  lock_timeout: soon\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("key `cache.lock_timeout`"),
            "{e}"
        );
        let e = parse_file(p, "registry:\n  insecure: 127.0.0.1:5000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `registry.insecure`"), "{e}");
        let e = parse_file(p, "colour: blue\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("colour"), "{e}");
    }

    #[test]
    fn type_and_syntax_errors_say_what_was_expected() {
        let p = Path::new("c.yaml");
        let e = parse_file(p, "cache:\n  lock_timeout: soon\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "key `cache.lock_timeout`: expected a whole number of seconds, such as 600"
            ),
            "{e}"
        );
        let e = parse_file(p, "cache:\n  dir: [a\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("not valid YAML at column"),
            "{e}"
        );
        assert!(!e.contains("string scalar"), "{e}");
        let e = parse_file(p, "cache:\n  dir: [a, b]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "key `cache.dir`: expected a string (quote it if it looks like a list or a number)"
            ),
            "{e}"
        );
        let e = parse_file(p, "bridge:\n  commands: {a: 1}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a list of command names"), "{e}");
    }

    #[test]
    fn empty_file_sets_nothing() {
        let f = parse_file(Path::new("x"), "").unwrap();
        assert!(flatten(&serde_json::to_value(f).unwrap(), false).is_empty());
        let f = parse_file(Path::new("x"), "# only a comment\n").unwrap();
        assert!(flatten(&serde_json::to_value(f).unwrap(), false).is_empty());
    }

    #[test]
    fn env_overrides_and_is_checked() {
        let c = Config::load(&inputs(&[
            ("HOME", "/h"),
            (SITE_CONFIG_VAR, "/nonexistent"),
            ("LPMX_INSECURE_REGISTRIES", "a:1, b:2,,"),
            ("LPMX_LOCK_TIMEOUT", "5"),
        ]))
        .unwrap();
        assert_eq!(c.settings.registry.insecure, vec!["a:1", "b:2"]);
        assert_eq!(c.settings.cache.lock_timeout, 5);
        assert_eq!(
            c.origins["cache.lock_timeout"].1,
            Source::Env("LPMX_LOCK_TIMEOUT")
        );
        let e = Config::load(&inputs(&[
            (SITE_CONFIG_VAR, "/n"),
            ("LPMX_LOCK_TIMEOUT", "1h"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("LPMX_LOCK_TIMEOUT") && e.contains("seconds"),
            "{e}"
        );
        let e = Config::load(&inputs(&[
            (SITE_CONFIG_VAR, "/n"),
            ("LPMX_PROGRESS", "fancy"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("LPMX_PROGRESS") && e.contains("fancy"), "{e}");
    }

    #[test]
    fn registries_merge_by_host_across_layers() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site.yaml");
        let user = dir.path().join("user.yaml");
        std::fs::write(
            &site,
            "registries:\n  docker.io:\n    ca: /site/ca.pem\n  a.b:5000:\n    insecure: true\n",
        )
        .unwrap();
        std::fs::write(
            &user,
            "registries:\n  \"127.0.0.1:5001\":\n    ca: ~/ca.pem\n",
        )
        .unwrap();
        let mut i = inputs(&[("HOME", "/h"), (SITE_CONFIG_VAR, site.to_str().unwrap())]);
        i.config_flag = Some(user);
        let c = Config::load(&i).unwrap();
        let r = &c.settings.registries;
        assert_eq!(r["docker.io"].ca.as_deref(), Some("/site/ca.pem"));
        assert_eq!(r["a.b:5000"].insecure, Some(true));
        assert_eq!(r["127.0.0.1:5001"].ca.as_deref(), Some("/h/ca.pem"));
        let e = parse_file(Path::new("f"), "registries:\n  x.io:\n    cafile: /a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cafile") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn paths_expand_home_and_variables() {
        let i = inputs(&[("HOME", "/h"), ("USER", "ann"), ("SCRATCH", "/s")]);
        assert_eq!(expand_one("~/c", &i).unwrap(), "/h/c");
        assert_eq!(
            expand_one("$SCRATCH/${USER}/lpmx", &i).unwrap(),
            "/s/ann/lpmx"
        );
        assert_eq!(expand_one("/a$/b", &i).unwrap(), "/a$/b");
        assert!(expand_one("/x/$NOPE/y", &i).unwrap_err().contains("$NOPE"));
        assert!(expand_one("/x/${USER", &i).is_err());
    }
}
