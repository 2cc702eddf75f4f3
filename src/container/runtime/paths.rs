//! Paths inside the container's root before `pivot_root`: a container path is looked up under
//! the root directory on the host with the image's symlinks followed as the container would
//! follow them, so an image's `/var/run -> /run` or `/etc/resolv.conf -> ../run/...` leads to
//! a mount point inside the root and never to a host path.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::syscall::{Kind, Syscall};

const MAX_SYMLINKS: u32 = 40;

/// Where a container path leads under the root on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The host path: `existing` with `missing` appended.
    pub path: PathBuf,
    /// What is there, symlinks followed; `None` when something on the way is missing.
    pub kind: Option<Kind>,
    /// How many trailing components of `path` do not exist (0 when `kind` is some).
    pub missing: usize,
    /// What the deepest existing component of `path` is (the root counts as a directory).
    pub existing_kind: Kind,
}

impl Resolved {
    /// The deepest part of `path` that exists.
    pub fn existing(&self) -> &Path {
        let mut p = self.path.as_path();
        for _ in 0..self.missing {
            p = p.parent().unwrap_or(p);
        }
        p
    }
}

/// The host path under `root` where the container sees `p`. Symlinks are followed in every
/// component, the last included; absolute targets and `..` never leave `root`. The walk stops
/// checking at the first missing component; the rest is appended lexically.
pub fn resolve_in_root(sys: &dyn Syscall, root: &Path, p: &Path) -> io::Result<PathBuf> {
    walk_in_root(sys, root, p).map(|r| r.path)
}

/// [`resolve_in_root`], also saying what is there and how much is missing: one `lstat` per
/// component, so that callers need not look again (a task start makes a few dozen of these
/// lookups on long cache paths).
pub fn walk_in_root(sys: &dyn Syscall, root: &Path, p: &Path) -> io::Result<Resolved> {
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_front(&mut todo, p);
    let mut cur = root.to_path_buf();
    let mut depth = 0usize; // components of `cur` below `root`
    let mut kind = Kind::Dir;
    let mut links = 0;
    let mut missing = 0usize;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            if depth > 0 {
                cur.pop();
                depth -= 1;
                if missing > 0 {
                    missing -= 1;
                } else {
                    kind = Kind::Dir;
                }
            }
            continue;
        }
        cur.push(&c);
        depth += 1;
        if missing > 0 {
            missing += 1;
            continue;
        }
        match sys.lstat_kind(&cur) {
            Ok(Kind::Symlink) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = sys.read_link(&cur)?;
                cur.pop();
                depth -= 1;
                if target.is_absolute() {
                    cur = root.to_path_buf();
                    depth = 0;
                }
                kind = Kind::Dir;
                push_front(&mut todo, &target);
            }
            Ok(k) => kind = k,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing = 1,
            Err(e) => return Err(e),
        }
    }
    Ok(Resolved {
        path: cur,
        kind: (missing == 0).then_some(kind),
        missing,
        existing_kind: kind,
    })
}

fn push_front(todo: &mut VecDeque<OsString>, p: &Path) {
    let comps: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    for c in comps.into_iter().rev() {
        todo.push_front(c);
    }
}

/// `p` without `.`, `..` or repeated slashes, judged lexically (for comparing host paths in
/// the bind tables, not for resolving them).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::syscall::Recorder;
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let r = Recorder::new();
        r.dir("/r/run")
            .dir("/r/etc")
            .link("/r/var/run", "/run")
            .link(
                "/r/etc/resolv.conf",
                "../run/systemd/resolve/stub-resolv.conf",
            )
            .link("/r/escape", "../../../host")
            .link("/r/loop", "loop")
            .link("/r/rel", "etc");
        let res = |p: &str| resolve_in_root(&r, Path::new("/r"), Path::new(p));
        assert_eq!(res("/var/run/x").unwrap(), Path::new("/r/run/x"));
        assert_eq!(
            res("/etc/resolv.conf").unwrap(),
            Path::new("/r/run/systemd/resolve/stub-resolv.conf")
        );
        assert_eq!(res("/escape/etc").unwrap(), Path::new("/r/host/etc"));
        assert_eq!(res("/../../etc").unwrap(), Path::new("/r/etc"));
        assert_eq!(res("/rel/passwd").unwrap(), Path::new("/r/etc/passwd"));
        assert_eq!(res("/").unwrap(), Path::new("/r"));
        assert_eq!(res("/loop").unwrap_err().raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn the_walk_says_what_is_there_and_what_is_missing() {
        let r = Recorder::new();
        r.dir("/r/home")
            .file("/r/etc/passwd", "")
            .link("/r/h", "home");
        let w = |p: &str| walk_in_root(&r, Path::new("/r"), Path::new(p)).unwrap();
        let a = w("/h/alice/work");
        assert_eq!(a.path, Path::new("/r/home/alice/work"));
        assert_eq!((a.kind, a.missing), (None, 2));
        assert_eq!(
            (a.existing(), a.existing_kind),
            (Path::new("/r/home"), Kind::Dir)
        );
        let f = w("/etc/passwd");
        assert_eq!((f.kind, f.missing), (Some(Kind::File), 0));
        assert_eq!(f.existing(), Path::new("/r/etc/passwd"));
        assert_eq!(w("/").kind, Some(Kind::Dir));
        let up = w("/home/x/../y");
        assert_eq!((up.path.as_path(), up.missing), (Path::new("/r/home/y"), 1));
        let up = w("/etc/passwd/..");
        assert_eq!(
            (up.path.as_path(), up.kind),
            (Path::new("/r/etc"), Some(Kind::Dir))
        );
    }

    #[test]
    fn lexical_normal_form() {
        assert_eq!(normalize(Path::new("/a/./b//c/../d/")), Path::new("/a/b/d"));
        assert_eq!(normalize(Path::new("/../x")), Path::new("/x"));
    }
}
