//! Container tools on the host (`lpmx-job expose`): a small shell wrapper per tool that runs
//! it in its image with the caller's arguments, working directory and stdio. The wrapper execs
//! `lpmx-job run`, which execs the tool in place, so a call costs one container entry and any
//! number of calls may run at once.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

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
    #[error(
        "{path} is a symbolic link: expose never writes, lists or removes through one (in a \
         directory others can write, someone may have planted it); remove it yourself or \
         choose another name with --as"
    )]
    Symlink { path: PathBuf },
    #[error(
        "{path} belongs to uid {uid}, not to you: expose replaces and removes only the wrappers \
         you wrote; choose another name with --as"
    )]
    Foreign { path: PathBuf, uid: u32 },
    #[error("{name:?} is not a valid command name (no `/`, not empty, not `.` or `..`)")]
    BadName { name: String },
    #[error(
        "the {what} {value:?} contains a control character: a newline would end the wrapper's \
         comment line and run the rest as shell code on the host; refused"
    )]
    BadValue { what: &'static str, value: String },
}

/// The second line of every wrapper: how `--list` and `--remove` recognise their own. The
/// image and command follow, each [`encode`]d.
const MARKER: &str = "# lpmx-job expose:";

/// Largest file read when looking for the marker: a wrapper is a few hundred bytes, and a
/// planted huge file must not make `--list` read it all.
const MAX_WRAPPER: u64 = 64 << 10;

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

/// A value for a comment line: `%XX` for `%`, space and every control character, so the
/// value is one word and the line cannot end early (a newline in a comment ends the comment,
/// and the shell runs what follows).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c == ' ' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`encode`]; a `%` not followed by two hex digits stays as it is (wrappers
/// written before the encoding).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(Error::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Image and command reach the wrapper's text: refuse what no image reference or command
/// path needs and what a shell line cannot hold (newline, NUL, escapes).
fn check_value(what: &'static str, value: &str) -> Result<()> {
    if value.chars().any(char::is_control) {
        return Err(Error::BadValue {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// The wrapper's text. `lpmx` is the absolute path of the lpmx-job to call; `cache` is
/// written in only when the user chose one explicitly, so the wrapper otherwise follows the
/// caller's configuration at call time. Every value is quoted on the executed line and
/// [`encode`]d on the comment lines; image and command with control characters are refused.
pub fn wrapper(lpmx: &Path, image: &str, command: &str, cache: Option<&Path>) -> Result<String> {
    check_value("image", image)?;
    check_value("command", command)?;
    let cache = cache
        .map(|c| format!(" --cache {}", shell_quote(&c.display().to_string())))
        .unwrap_or_default();
    let (img, cmd) = (encode(image), encode(command));
    Ok(format!(
        "#!/bin/sh\n{MARKER} {img} {cmd}\n# Runs {cmd} in {img} with this call's arguments, directory and stdio.\nexec {}{cache} run -w \"$PWD\" {} -- {} \"$@\"\n",
        shell_quote(&lpmx.display().to_string()),
        shell_quote(image),
        shell_quote(command),
    ))
}

/// Why `dir` is unsafe for wrappers, if it is: writable by its group or by everyone, so
/// another user can plant a wrapper there or (without the sticky bit) replace one of ours.
pub fn shared_dir_warning(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).ok()?;
    let mode = m.mode();
    if mode & 0o022 == 0 {
        return None;
    }
    let who = if mode & 0o002 != 0 {
        "everyone"
    } else {
        "its group"
    };
    let sticky = if mode & 0o1000 != 0 {
        "they cannot replace your wrappers (sticky), but can add their own beside them"
    } else {
        "they can replace your wrappers with their own"
    };
    Some(format!(
        "{} is writable by {who} (mode {:04o}): {sticky}, and whoever calls a wrapper there \
         runs what it says; keep wrappers in a directory only you can write",
        dir.display(),
        mode & 0o7777
    ))
}

/// What `dir/name` is, looked at through a descriptor that never follows a symlink.
enum Entry {
    Missing,
    Ours(Exposed),
    Symlink,
    Foreign(u32),
    NotWrapper,
}

fn io_err(path: &Path) -> impl FnOnce(Errno) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn entry(dirfd: BorrowedFd, dir: &Path, name: &str) -> Result<Entry> {
    let path = dir.join(name);
    // O_NONBLOCK: a FIFO planted under the name must not block the open.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(dirfd, name, flags | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Entry::Missing),
        Err(Errno::LOOP) => return Ok(Entry::Symlink),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(io_err(&path))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Ok(Entry::NotWrapper);
    }
    // A file of another user is never ours, whatever it says: in a directory others can
    // write, anyone can imitate the marker.
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Ok(Entry::Foreign(st.st_uid));
    }
    let mut text = String::new();
    if std::fs::File::from(fd)
        .take(MAX_WRAPPER)
        .read_to_string(&mut text)
        .is_err()
    {
        return Ok(Entry::NotWrapper);
    }
    Ok(parse(&text, name, &path).map_or(Entry::NotWrapper, Entry::Ours))
}

/// The exposed tool a wrapper's text describes, if it is one of ours.
fn parse(text: &str, name: &str, path: &Path) -> Option<Exposed> {
    let mut lines = text.lines();
    (lines.next()? == "#!/bin/sh").then_some(())?;
    let rest = lines.next()?.strip_prefix(MARKER)?.trim();
    let (image, command) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Exposed {
        name: name.to_string(),
        image: decode(image),
        command: decode(command),
        path: path.to_path_buf(),
    })
}

fn open_dir(dir: &Path) -> std::result::Result<OwnedFd, Errno> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// A new file in `dirfd` under a random name, created exclusively (never an existing file,
/// never through a symlink), mode 0600 until written.
fn create_temp(dirfd: BorrowedFd, dir: &Path, name: &str) -> Result<(String, OwnedFd)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut last = Errno::EXIST;
    for _ in 0..16 {
        let tmp = format!(".{name}.lpmx-expose.{}", random_hex());
        match rustix::fs::openat(dirfd, tmp.as_str(), flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((tmp, fd)),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(io_err(&dir.join(&tmp))(e)),
        }
    }
    Err(io_err(&dir.join(format!(".{name}.lpmx-expose.*")))(last))
}

/// 16 random hex digits for a temporary name nobody can predict.
fn random_hex() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // No getrandom (very old kernel): time and pid still differ per attempt, and
        // O_EXCL|O_NOFOLLOW keeps a guessed name harmless.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    hex::encode(b)
}

/// Writes the wrapper `dir/name` (mode 0755): a new file with a random name, created with
/// O_EXCL|O_NOFOLLOW in `dir`, chmod-ed by descriptor and renamed into place. Refuses to
/// replace anything but a regular file of ours that is one of our wrappers: never a symlink,
/// never another user's file.
pub fn expose(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    check_name(name)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let dirfd = open_dir(dir).map_err(io_err(dir))?;
    let path = dir.join(name);
    let replace = match entry(dirfd.as_fd(), dir, name)? {
        Entry::Missing => false,
        Entry::Ours(_) => true,
        Entry::Symlink => return Err(Error::Symlink { path }),
        Entry::Foreign(uid) => return Err(Error::Foreign { path, uid }),
        Entry::NotWrapper => return Err(Error::NotOurs { path }),
    };
    let (tmp, fd) = create_temp(dirfd.as_fd(), dir, name)?;
    let unlink_tmp = || {
        let _ = rustix::fs::unlinkat(&dirfd, tmp.as_str(), rustix::fs::AtFlags::empty());
    };
    let written = std::fs::File::from(fd);
    let tmp_path = dir.join(&tmp);
    let wrote = (&written)
        .write_all(text.as_bytes())
        .map_err(|source| Error::Io {
            path: tmp_path.clone(),
            source,
        })
        .and_then(|()| {
            rustix::fs::fchmod(&written, Mode::from_raw_mode(0o755)).map_err(io_err(&tmp_path))
        });
    drop(written);
    if let Err(e) = wrote {
        unlink_tmp();
        return Err(e);
    }
    // A name that was free must still be: RENAME_NOREPLACE, so a file planted meanwhile is
    // not silently replaced (nor reported as ours). Filesystems without it get a rename.
    let renamed = if replace {
        rustix::fs::renameat(&dirfd, tmp.as_str(), &dirfd, name)
    } else {
        match rustix::fs::renameat_with(
            &dirfd,
            tmp.as_str(),
            &dirfd,
            name,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Err(Errno::INVAL | Errno::NOSYS) => {
                rustix::fs::renameat(&dirfd, tmp.as_str(), &dirfd, name)
            }
            r => r,
        }
    };
    match renamed {
        Ok(()) => Ok(path),
        Err(Errno::EXIST) => {
            unlink_tmp();
            Err(Error::NotOurs { path })
        }
        Err(e) => {
            unlink_tmp();
            Err(io_err(&path)(e))
        }
    }
}

/// Every wrapper of ours in `dir`, by name: regular files of the caller with the marker,
/// looked at without following symlinks.
pub fn list(dir: &Path) -> Result<Vec<Exposed>> {
    let dirfd = match open_dir(dir) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    let listing = rustix::fs::Dir::read_from(&dirfd).map_err(io_err(dir))?;
    for ent in listing {
        let ent = ent.map_err(io_err(dir))?;
        let Ok(name) = ent.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        if let Entry::Ours(e) = entry(dirfd.as_fd(), dir, name)? {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the wrapper `dir/name` when it is a regular file of ours with the marker;
/// anything else there (a symlink, another user's file, a file of ours expose did not
/// write) is left alone.
pub fn remove(dir: &Path, name: &str) -> Result<Exposed> {
    check_name(name)?;
    let path = dir.join(name);
    let dirfd = open_dir(dir).map_err(io_err(dir))?;
    let found = match entry(dirfd.as_fd(), dir, name)? {
        Entry::Ours(e) => e,
        Entry::Symlink => return Err(Error::Symlink { path }),
        Entry::Foreign(uid) => return Err(Error::Foreign { path, uid }),
        Entry::Missing | Entry::NotWrapper => return Err(Error::NotOurs { path }),
    };
    rustix::fs::unlinkat(&dirfd, name, rustix::fs::AtFlags::empty()).map_err(io_err(&path))?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
        )
        .unwrap();
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
        let with_cache = wrapper(Path::new("/l"), "i", "c", Some(Path::new("/my cache"))).unwrap();
        assert!(
            with_cache.contains("--cache '/my cache' run"),
            "{with_cache}"
        );
    }

    #[test]
    fn comment_values_are_one_word_on_one_line() {
        for v in [
            "plain", "a b", "100%", "%41", "é ü", "a\tb", "x\ny", "\u{7f}", "",
        ] {
            let e = encode(v);
            assert!(!e.contains([' ', '\n', '\t']), "{e:?}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
            assert_eq!(decode(&e), v);
        }
        // Wrappers written before the encoding read back as they were.
        assert_eq!(decode("docker.io/x:1"), "docker.io/x:1");
        assert_eq!(decode("50%"), "50%");
    }

    /// D7: a newline (or any control character) in the image or the command would end the
    /// comment line and run the rest on the host when the wrapper is called.
    #[test]
    fn control_characters_in_image_or_command_are_refused() {
        let l = Path::new("/l");
        for (img, cmd) in [
            ("img", "/bin/echo\ntouch /tmp/pwned"),
            ("oci:/tmp/a\ntouch pwned\n#:one", "ls"),
            ("img", "ls\r"),
            ("img\0", "ls"),
        ] {
            let e = wrapper(l, img, cmd, None).unwrap_err();
            assert!(matches!(e, Error::BadValue { .. }), "{e}");
            assert!(e.to_string().contains("control character"), "{e}");
        }
        // Spaces, quotes and `%` are fine: quoted where run, encoded where commented.
        let t = wrapper(l, "oci:/my dir/lay:one", "it's a %cmd", None).unwrap();
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(
            t.contains("'oci:/my dir/lay:one' -- 'it'\\''s a %cmd'"),
            "{t}"
        );
        let d = tempfile::tempdir().unwrap();
        expose(d.path(), "t", &t).unwrap();
        let l = list(d.path()).unwrap();
        assert_eq!(
            (l[0].image.as_str(), l[0].command.as_str()),
            ("oci:/my dir/lay:one", "it's a %cmd")
        );
        // The text a shell sees: with a refusing check removed, the encoding alone still
        // keeps the command on the comment line (sh -n would not catch it; run it).
        let marker = d.path().join("pwned");
        let text = format!(
            "#!/bin/sh\n{MARKER} img {}\nexit 0\n",
            encode(&format!("x\ntouch {}", marker.display()))
        );
        let st = std::process::Command::new("sh")
            .args(["-c", &text])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(!marker.exists(), "the comment line ran code");
    }

    /// D6 in one user's terms: a symlink under the temporary or the final name is never
    /// written through, listed or removed.
    #[test]
    fn symlinks_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let private = d.path().join("private");
        std::fs::write(&private, "secret\n").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // The temporary names the old code used (PID) and a spread around it.
        let pid = std::process::id();
        for p in pid.saturating_sub(50)..pid + 50 {
            std::os::unix::fs::symlink(&private, bin.join(format!(".tool.lpmx-expose.{p}")))
                .unwrap();
        }
        let text = wrapper(Path::new("/l"), "img", "tool", None).unwrap();
        let p = expose(&bin, "tool", &text).unwrap();
        assert_eq!(std::fs::read_to_string(&private).unwrap(), "secret\n");
        let pm = std::fs::symlink_metadata(&private).unwrap();
        assert_eq!(pm.permissions().mode() & 0o777, 0o600);
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file(), "{m:?}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        // No temporary left behind beside the planted ones.
        let left = std::fs::read_dir(&bin)
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                !e.file_type().unwrap().is_symlink() && e.file_name() != "tool"
            })
            .count();
        assert_eq!(left, 0);

        // A symlink to one of our own wrappers, under the final name: not replaced, not
        // listed, not removed.
        std::os::unix::fs::symlink(&p, bin.join("alias")).unwrap();
        let e = expose(&bin, "alias", &text).unwrap_err();
        assert!(matches!(e, Error::Symlink { .. }), "{e}");
        assert!(matches!(remove(&bin, "alias"), Err(Error::Symlink { .. })));
        assert!(std::fs::symlink_metadata(bin.join("alias"))
            .unwrap()
            .file_type()
            .is_symlink());
        let names: Vec<_> = list(&bin).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["tool"]);
        // A FIFO under the name does not block and is not ours.
        let fifo = bin.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            expose(&bin, "fifo", &text),
            Err(Error::NotOurs { .. })
        ));
        assert_eq!(list(&bin).unwrap().len(), 1);
    }
}
