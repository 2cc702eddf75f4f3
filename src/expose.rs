//! Container tools on the host (`lpmx-job expose`): a small shell wrapper per tool that runs
//! it in its image with the caller's arguments, working directory and stdio. The wrapper execs
//! `lpmx-job run`, which execs the tool in place, so a call costs one container entry and any
//! number of calls may run at once.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} exists and was not written by `lpmx-job expose`; choose another name with --as"
    )]
    NotOurs { path: PathBuf },
    #[error("{name:?} is not a valid command name (no `/`, not empty, not `.` or `..`)")]
    BadName { name: String },
}

/// The second line of every wrapper: how `--list` and `--remove` recognise their own.
const MARKER: &str = "# lpmx-job expose:";

/// One exposed tool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exposed {
    pub name: String,
    pub image: String,
    pub command: String,
    pub path: PathBuf,
}

/// Quotes a word for a POSIX shell: single quotes, with each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// The wrapper's text. `lpmx` is the absolute path of the lpmx-job to call; `cache` is
/// written in only when the user chose one explicitly, so the wrapper otherwise follows the
/// caller's configuration at call time.
pub fn wrapper(lpmx: &Path, image: &str, command: &str, cache: Option<&Path>) -> String {
    let cache = cache
        .map(|c| format!(" --cache {}", shell_quote(&c.display().to_string())))
        .unwrap_or_default();
    format!(
        "#!/bin/sh\n{MARKER} {image} {command}\n# Runs {command} in {image} with this call's arguments, directory and stdio.\nexec {}{cache} run -w \"$PWD\" {} -- {} \"$@\"\n",
        shell_quote(&lpmx.display().to_string()),
        shell_quote(image),
        shell_quote(command),
    )
}

/// Writes the wrapper `dir/name` (mode 0755) through a temporary file and a rename, refusing
/// to replace a file that is not one of ours.
pub fn expose(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    check_name(name)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(name);
    if path.symlink_metadata().is_ok() && read(&path).is_none() {
        return Err(Error::NotOurs { path });
    }
    let tmp = dir.join(format!(".{name}.lpmx-expose.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io {
            path: path.clone(),
            source: e,
        }
    })?;
    Ok(path)
}

/// The exposed tool a file is, if it is one of our wrappers.
fn read(path: &Path) -> Option<Exposed> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    (lines.next()? == "#!/bin/sh").then_some(())?;
    let rest = lines.next()?.strip_prefix(MARKER)?.trim();
    let (image, command) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Exposed {
        name: path.file_name()?.to_string_lossy().into_owned(),
        image: image.to_string(),
        command: command.to_string(),
        path: path.to_path_buf(),
    })
}

/// Every wrapper in `dir`, by name.
pub fn list(dir: &Path) -> Result<Vec<Exposed>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out: Vec<Exposed> = entries.flatten().filter_map(|e| read(&e.path())).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the wrapper `dir/name`; anything else there is left alone.
pub fn remove(dir: &Path, name: &str) -> Result<Exposed> {
    check_name(name)?;
    let path = dir.join(name);
    let found = read(&path).ok_or_else(|| Error::NotOurs { path: path.clone() })?;
    std::fs::remove_file(&path).map_err(|source| Error::Io { path, source })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_real_shell() {
        for word in [
            "plain",
            "with space",
            "it's",
            "$HOME",
            "a\"b",
            "`x`",
            "",
            "\\n",
        ] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", shell_quote(word))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word);
        }
    }

    #[test]
    fn write_list_remove_and_refuse_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        let text = wrapper(
            Path::new("/opt/lpmx-job"),
            "docker.io/library/alpine:3",
            "/bin/ls",
            None,
        );
        let p = expose(d.path(), "als", &text).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(text.contains("exec '/opt/lpmx-job' run -w \"$PWD\" 'docker.io/library/alpine:3' -- '/bin/ls' \"$@\""), "{text}");
        std::fs::write(d.path().join("mine"), "#!/bin/sh\necho not a wrapper\n").unwrap();
        let l = list(d.path()).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (
                l[0].name.as_str(),
                l[0].image.as_str(),
                l[0].command.as_str()
            ),
            ("als", "docker.io/library/alpine:3", "/bin/ls")
        );
        assert!(
            matches!(expose(d.path(), "mine", &text), Err(Error::NotOurs { .. })),
            "never overwrite a user's file"
        );
        assert!(matches!(
            remove(d.path(), "mine"),
            Err(Error::NotOurs { .. })
        ));
        assert!(d.path().join("mine").exists());
        assert!(matches!(
            expose(d.path(), "../x", &text),
            Err(Error::BadName { .. })
        ));
        remove(d.path(), "als").unwrap();
        assert!(list(d.path()).unwrap().is_empty());
        let with_cache = wrapper(Path::new("/l"), "i", "c", Some(Path::new("/my cache")));
        assert!(
            with_cache.contains("--cache '/my cache' run"),
            "{with_cache}"
        );
    }
}
