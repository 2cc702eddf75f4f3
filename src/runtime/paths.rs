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

/// The host path under `root` where the container sees `p`. Symlinks are followed in every
/// component, the last included; absolute targets and `..` never leave `root`. The walk stops
/// checking at the first missing component; the rest is appended lexically.
pub fn resolve_in_root(sys: &dyn Syscall, root: &Path, p: &Path) -> io::Result<PathBuf> {
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_front(&mut todo, p);
    let mut cur: Vec<OsString> = Vec::new();
    let mut links = 0;
    let mut missing = false;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        if missing {
            cur.push(c);
            continue;
        }
        let mut cand = root.to_path_buf();
        cand.extend(&cur);
        cand.push(&c);
        match sys.lstat_kind(&cand) {
            Ok(Kind::Symlink) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = sys.read_link(&cand)?;
                if target.is_absolute() {
                    cur.clear();
                }
                push_front(&mut todo, &target);
            }
            Ok(_) => cur.push(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing = true;
                cur.push(c);
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&cur);
    Ok(out)
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
    fn lexical_normal_form() {
        assert_eq!(normalize(Path::new("/a/./b//c/../d/")), Path::new("/a/b/d"));
        assert_eq!(normalize(Path::new("/../x")), Path::new("/x"));
    }
}
