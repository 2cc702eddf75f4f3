//! The container's file system as its processes see it (see the crate's notes).
//!
//! The tracer calls [`View::resolve`] with what a traced system call asked for and gets back
//! what to hand the kernel instead: a host path, an error, or a result the view produced
//! itself (an emulated call: a deletion recorded as a whiteout, a rename refused with EXDEV).
//!
//! Notes for the tracer (the interface is unchanged):
//! - `link(old, new)`: resolve `old` with [`Op::Modify`], not `Read`: the image's file is then
//!   copied up (as overlayfs does) instead of hard-linked into the upper layer, where writes
//!   through the new name would change the shared image.
//! - `Op::Create` cannot tell `mkdir` from `open(O_CREAT)`: an existing directory gives
//!   EEXIST, an existing file of the image is copied up (O_CREAT opens it; `symlink`/`mknod`
//!   then fail with EEXIST on the upper copy). A directory made over a whiteout of an image
//!   directory is marked opaque when next looked up (or when the View is dropped).
//! - While a View lives, its upper layer must change only through calls it resolved: upper
//!   lookups are cached between its own writes (names it handed the kernel to create, remove
//!   or rename are never cached, since the kernel acts on them after `resolve` returns).
//!   Binds are never cached (host processes change them); the lower layer always is.
//! - Under a bind of a procfs (`/proc`), names go to the kernel unresolved, so magic links
//!   (`fd/N`, `cwd`, `exe`) are followed by the kernel in the tracee, except `self` and
//!   `thread-self` (rewritten to `TID`, `TID/task/TID`: the tracer's own otherwise) and
//!   `PID/root` (the guest's `/`).
//! - A bind's guest path missing from the image appears as a directory (`private/mnt/...`)
//!   holding the bind points; writes there fail with EROFS.
//! - Rename out of the image (a file or symlink) is done by the view: `(Done(0), Done(0))`;
//!   of an image directory, EXDEV (`mv` copies); between different binds or a bind and the
//!   union, EXDEV.
//! - The opaque marker is the xattr `user.overlay.opaque` (ext4 and tmpfs take user xattrs
//!   from an ordinary user; checked here as `lpmxtest` on ext4 /tmp); no `.wh..wh..opq`
//!   fallback.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::Layout;

mod sys;
mod union;
#[cfg(test)]
mod tests;

use sys::K;

/// What a traced call does with the path, which decides copy-up, whiteouts and EROFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// stat, access, readlink, open read-only, chdir, opendir, exec, a unix socket's connect.
    Read,
    /// open for writing (O_WRONLY/O_RDWR/O_TRUNC/O_APPEND), truncate, chmod, chown, utimes,
    /// setxattr: a file of the image is copied up first.
    Modify,
    /// The path names something about to be made: open with O_CREAT, mkdir, mknod, symlink's
    /// new name, link's new name, bind of a unix socket. Parents are copied up, a whiteout
    /// of the name is cleared.
    Create,
    /// unlink (`dir: false`) or rmdir (`dir: true`).
    Remove { dir: bool },
}

/// Where a relative path starts: the caller's working directory or a directory descriptor's
/// target, both as host paths (`/proc/TID/cwd`, `/proc/TID/fd/N` read by the tracer), which
/// the view maps back to guest paths.
#[derive(Debug, Clone)]
pub struct Base<'a> {
    pub host_dir: &'a Path,
    /// The traced thread, for `/proc/self` and `/proc/thread-self` in guest paths.
    pub tid: i32,
}

/// What to do with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let the kernel run the call on this host path instead.
    Host(PathBuf),
    /// Skip the call; it returns `-errno`.
    Fail(i32),
    /// Skip the call; it returns this (the view did the work, e.g. recorded a whiteout).
    Done(i64),
}

/// Which tree a directory met during a walk lies in: what its children are looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mnt {
    /// The union: `upper`: the directory exists in the upper layer; `lower`: the lower
    /// layer's directory shows through (not hidden by a whiteout, an opaque dir or a file).
    Union { upper: bool, lower: bool },
    /// Inside bind N.
    Bind(usize),
    /// Inside bind N whose host is a procfs: names are handed to the kernel unresolved
    /// (magic links must be followed by the kernel, in the tracee), but for
    /// `self`/`thread-self` (the tracer's own otherwise) and `PID/root`.
    Proc(usize),
    /// A directory that only exists because a bind lies beneath it.
    Virtual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Upper,
    Lower,
    Bind(usize),
    Virtual,
    None,
}

/// A name found during a walk.
#[derive(Debug, Clone, Copy)]
struct Node {
    kind: K,
    src: Src,
    /// For a directory: what its children are looked up in.
    mnt: Mnt,
    /// The upper layer has a whiteout at this name.
    wh: bool,
    upper: K,
    /// The lower layer's entry, when the parent's lower dir shows through.
    lower: K,
}

impl Node {
    fn of_dir(m: Mnt) -> Node {
        let (src, upper, lower) = match m {
            Mnt::Union { upper, lower } => (
                if upper { Src::Upper } else { Src::Lower },
                if upper { K::Dir } else { K::Missing },
                if lower { K::Dir } else { K::Missing },
            ),
            Mnt::Bind(i) | Mnt::Proc(i) => (Src::Bind(i), K::Missing, K::Missing),
            Mnt::Virtual => (Src::Virtual, K::Missing, K::Missing),
        };
        Node { kind: K::Dir, src, mnt: m, wh: false, upper, lower }
    }
}

struct Lvl {
    /// `guest`'s length before this level's name was pushed.
    start: usize,
    mnt: Mnt,
}

/// The end of a walk: `walk.guest` is the final guest path (no symlink, `.` or `..` in it).
struct Fin {
    node: Node,
    /// The path ended in `.`, `..` or `/` itself: there is no name in a parent to act on.
    dir_self: bool,
    /// A trailing slash (or `.`/`..`): the result must be a directory.
    must_dir: bool,
}

/// A directory's (mtime, mtime ns, ctime, ctime ns, inode): a listing built before it
/// changed no longer holds.
type Stamp = (i64, i64, i64, i64, u64);

struct BindE {
    guest: Vec<u8>, // "" for "/"
    host: Vec<u8>,
    ro: bool,
    proc_: bool,
}

/// An upper layer lookup. Cached between the View's own writes: the upper layer changes only
/// through calls the View resolved (each of which clears this), and the names it handed the
/// kernel to create, remove or rename are `volatile` for good: the kernel acts on them after
/// `resolve` returned, possibly after another thread's lookup.
struct UEnt {
    wh: bool,
    kind: K,
    opaque: Option<bool>,
}

struct LowerEnt {
    kind: K,
    target: Option<Box<[u8]>>,
}

const MAXLINKS: u32 = 40;
pub(crate) const OPAQUE_XATTR: &[u8] = b"user.overlay.opaque\0";

/// The view over one [`Layout`]; one per traced task, owned by the tracer.
pub struct View {
    layout: Layout,
    lower_root: Vec<u8>,
    upper_root: Option<Vec<u8>>,
    private_root: Vec<u8>,
    binds: Vec<BindE>,
    bind_at: HashMap<Vec<u8>, usize>,
    /// Proper ancestors of binds' guest paths: they exist in the guest even when the image
    /// lacks them.
    bind_ancestors: HashSet<Vec<u8>>,
    /// The lower layer never changes: its lookups are cached for good.
    lower_cache: HashMap<Box<[u8]>, LowerEnt>,
    /// Guest paths where a whiteout over a lower directory was cleared for a Create: if the
    /// name turns out to be a directory, it is made opaque when next met (the view cannot
    /// tell mkdir from open(O_CREAT)).
    pending_opaque: HashSet<Vec<u8>>,
    /// Merged directory listings: guest path -> (number under private/ls, upper dir's stamp).
    opaque_cache: HashMap<(u64, u64, i64, i64), bool>,
    upper_cache: HashMap<Box<[u8]>, UEnt>,
    made_virtual: HashSet<Vec<u8>>,
    volatile: HashSet<Vec<u8>>,
    /// The walk passed a volatile name: nothing below it is cached.
    walk_volatile: bool,
    listings: HashMap<Vec<u8>, (u64, Stamp)>,
    listing_guest: HashMap<u64, Vec<u8>>,
    next_listing: u64,
    // Scratch buffers reused across calls.
    levels: Vec<Lvl>,
    guest: Vec<u8>,
    rest: Vec<u8>,
    hbuf: Vec<u8>,
    lbuf: Vec<u8>,
}

fn trim_slashes(p: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(p.len());
    for c in p.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".") {
        v.push(b'/');
        v.extend_from_slice(c);
    }
    v
}

fn is_proc(host: &Path) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    let Ok(c) = std::ffi::CString::new(host.as_os_str().as_bytes()) else { return false };
    let r = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    r == 0 && unsafe { st.assume_init() }.f_type == libc::PROC_SUPER_MAGIC
}

impl View {
    pub fn new(layout: Layout) -> View {
        let mut binds = Vec::new();
        let mut bind_at = HashMap::new();
        let mut bind_ancestors = HashSet::new();
        for b in &layout.binds {
            let g = trim_slashes(b.guest.as_os_str().as_bytes());
            let mut h = trim_slashes(b.host.as_os_str().as_bytes());
            if h.is_empty() {
                h.push(b'/');
            }
            let mut a = g.clone();
            while let Some(p) = a.iter().rposition(|&c| c == b'/') {
                a.truncate(p);
                if !a.is_empty() {
                    bind_ancestors.insert(a.clone());
                }
            }
            bind_at.insert(g.clone(), binds.len());
            binds.push(BindE { guest: g, host: h, ro: b.ro, proc_: is_proc(&b.host) });
        }
        let root = |p: &Path| {
            let v = trim_slashes(p.as_os_str().as_bytes());
            v
        };
        View {
            lower_root: root(&layout.lower),
            upper_root: layout.upper.as_deref().map(root),
            private_root: root(&layout.private),
            binds,
            bind_at,
            bind_ancestors,
            lower_cache: HashMap::new(),
            pending_opaque: HashSet::new(),
            opaque_cache: HashMap::new(),
            upper_cache: HashMap::new(),
            made_virtual: HashSet::new(),
            volatile: HashSet::new(),
            walk_volatile: false,
            listings: HashMap::new(),
            listing_guest: HashMap::new(),
            next_listing: 0,
            levels: Vec::with_capacity(32),
            guest: Vec::with_capacity(256),
            rest: Vec::with_capacity(256),
            hbuf: Vec::with_capacity(512),
            lbuf: Vec::with_capacity(256),
            layout,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// `path` as a traced call gave it (bytes, relative to `base` unless absolute), followed
    /// through a final symlink when `follow`.
    pub fn resolve(&mut self, base: &Base, path: &[u8], follow: bool, op: Op) -> Outcome {
        let fin = match self.start(base, path) {
            Err(o) => return o,
            Ok(()) => match self.walk(follow, base.tid) {
                Ok(f) => f,
                Err(e) => return Outcome::Fail(e),
            },
        };
        let o = self.finish(fin, op, path.last() == Some(&b'/'));
        if op != Op::Read {
            self.upper_cache.clear();
        }
        o
    }

    /// Loads `rest` with the guest path to walk; Err: the base is outside the guest and the
    /// answer is the host path as it is.
    fn start(&mut self, base: &Base, path: &[u8]) -> Result<(), Outcome> {
        self.rest.clear();
        if path.is_empty() {
            return Err(Outcome::Fail(libc::ENOENT));
        }
        if path[0] != b'/' {
            match self.guest_path(base.host_dir) {
                Some(g) => self.rest.extend_from_slice(g.as_os_str().as_bytes()),
                None => {
                    return Err(Outcome::Host(base.host_dir.join(OsStr::from_bytes(path))));
                }
            }
            self.rest.push(b'/');
        }
        self.rest.extend_from_slice(path);
        Ok(())
    }

    fn root_mnt(&self) -> Mnt {
        match self.bind_at.get(&b""[..]) {
            Some(&i) if self.binds[i].proc_ => Mnt::Proc(i),
            Some(&i) => Mnt::Bind(i),
            None => Mnt::Union { upper: self.upper_root.is_some(), lower: true },
        }
    }

    fn reset_root(&mut self) {
        self.levels.clear();
        self.guest.clear();
        self.walk_volatile = false;
        let m = self.root_mnt();
        self.levels.push(Lvl { start: 0, mnt: m });
    }

    /// Walks `self.rest` from guest `/`.
    fn walk(&mut self, follow: bool, tid: i32) -> Result<Fin, i32> {
        self.reset_root();
        let mut links = 0u32;
        let mut i = 0usize;
        let mut rest = std::mem::take(&mut self.rest);
        let r = (|| loop {
            while i < rest.len() && rest[i] == b'/' {
                i += 1;
            }
            let cur = self.levels.last().unwrap().mnt;
            if i == rest.len() {
                // Only "/" (or slashes) left: the current directory itself.
                return Ok(Fin { node: Node::of_dir(cur), dir_self: true, must_dir: true });
            }
            let s = i;
            while i < rest.len() && rest[i] != b'/' {
                i += 1;
            }
            let e = i;
            let mut j = e;
            while j < rest.len() && rest[j] == b'/' {
                j += 1;
            }
            let last = j == rest.len();
            let trailing = last && e < rest.len();
            let name = &rest[s..e];
            if name == b"." || name == b".." {
                if name == b".." && self.levels.len() > 1 {
                    let l = self.levels.pop().unwrap();
                    self.guest.truncate(l.start);
                }
                if last {
                    let m = self.levels.last().unwrap().mnt;
                    return Ok(Fin { node: Node::of_dir(m), dir_self: true, must_dir: true });
                }
                continue;
            }
            let start = self.guest.len();
            self.guest.push(b'/');
            if let Mnt::Proc(b) = cur {
                // Depth below the procfs bind's root, counting this name.
                let bl = self.binds[b].guest.len();
                let depth = self.guest[bl..].iter().filter(|&&c| c == b'/').count();
                let is_pid = |n: &[u8]| {
                    n == b"self" || n == b"thread-self" || (!n.is_empty() && n.iter().all(u8::is_ascii_digit))
                };
                if depth == 1 && (name == b"self" || name == b"thread-self") {
                    // The tracer's own /proc/self is not the tracee's.
                    let t = tid.to_string();
                    self.guest.extend_from_slice(t.as_bytes());
                    if name == b"thread-self" {
                        self.levels.push(Lvl { start, mnt: cur });
                        let s2 = self.guest.len();
                        self.guest.extend_from_slice(b"/task");
                        self.levels.push(Lvl { start: s2, mnt: cur });
                        let s3 = self.guest.len();
                        self.guest.push(b'/');
                        self.guest.extend_from_slice(t.as_bytes());
                        self.levels.push(Lvl { start: s3, mnt: cur });
                        if last {
                            self.levels.pop();
                            return Ok(Fin { node: Node { kind: K::Dir, src: Src::Bind(b), mnt: cur, wh: false, upper: K::Missing, lower: K::Missing }, dir_self: false, must_dir: trailing });
                        }
                        continue;
                    }
                } else {
                    self.guest.extend_from_slice(name);
                }
                // PID/root and PID/task/TID/root: the tracee's root is the guest's.
                let parent = &self.guest[bl..start];
                let comps: Vec<&[u8]> = parent.split(|&c| c == b'/').skip(1).collect();
                let at_root = name == b"root"
                    && ((comps.len() == 1 && is_pid(comps[0]))
                        || (comps.len() == 3 && is_pid(comps[0]) && comps[1] == b"task" && is_pid(comps[2])));
                if at_root && (!last || follow || trailing) {
                    links += 1;
                    if links > MAXLINKS {
                        return Err(libc::ELOOP);
                    }
                    let mut nr = b"/".to_vec();
                    nr.extend_from_slice(&rest[e..]);
                    rest = nr;
                    i = 0;
                    self.reset_root();
                    continue;
                }
                if last {
                    return Ok(Fin { node: Node { kind: K::Other, src: Src::Bind(b), mnt: cur, wh: false, upper: K::Missing, lower: K::Missing }, dir_self: false, must_dir: trailing });
                }
                self.levels.push(Lvl { start, mnt: cur });
                continue;
            }
            self.guest.extend_from_slice(name);
            let node = self.lookup(cur, start)?;
            match node.kind {
                K::Link if !last || follow || trailing => {
                    links += 1;
                    if links > MAXLINKS {
                        return Err(libc::ELOOP);
                    }
                    let mut nr = Vec::with_capacity(256);
                    self.read_link(&node, &mut nr)?;
                    if nr.is_empty() {
                        return Err(libc::ENOENT);
                    }
                    self.guest.truncate(start);
                    if nr[0] == b'/' {
                        self.reset_root();
                    }
                    if !last || trailing {
                        nr.push(b'/');
                        nr.extend_from_slice(&rest[e..]);
                    }
                    rest = nr;
                    i = 0;
                }
                K::Dir if !last => self.levels.push(Lvl { start, mnt: node.mnt }),
                K::Missing if !last => return Err(libc::ENOENT),
                K::Other if !last => return Err(libc::ENOTDIR),
                _ => return Ok(Fin { node, dir_self: false, must_dir: trailing }),
            }
        })();
        self.rest = rest;
        r
    }

    /// Sets `hbuf` to the host path of `guest[..]` seen in `src`, NUL-terminated.
    fn host_of(&mut self, src: Src, glen: usize) {
        self.hbuf.clear();
        let g = &self.guest[..glen];
        match src {
            Src::Upper => {
                self.hbuf.extend_from_slice(self.upper_root.as_deref().unwrap_or(b""));
                self.hbuf.extend_from_slice(g);
            }
            Src::Lower | Src::None => {
                self.hbuf.extend_from_slice(&self.lower_root);
                self.hbuf.extend_from_slice(g);
            }
            Src::Bind(i) => {
                let b = &self.binds[i];
                self.hbuf.extend_from_slice(&b.host);
                let r = &g[b.guest.len()..];
                if !r.is_empty() {
                    if b.host != b"/" {
                        self.hbuf.extend_from_slice(r);
                    } else {
                        self.hbuf.extend_from_slice(&r[1..]);
                    }
                }
            }
            Src::Virtual => {
                self.hbuf.extend_from_slice(&self.private_root);
                self.hbuf.extend_from_slice(b"/mnt");
                self.hbuf.extend_from_slice(g);
            }
        }
        if self.hbuf.is_empty() {
            self.hbuf.push(b'/');
        }
        self.hbuf.push(0);
    }

    fn hpath(&self) -> PathBuf {
        PathBuf::from(OsStr::from_bytes(&self.hbuf[..self.hbuf.len() - 1]))
    }

    /// The lower layer's entry at `guest`, cached.
    fn lower_ent(&mut self, glen: usize) -> Result<K, i32> {
        if let Some(e) = self.lower_cache.get(&self.guest[..glen]) {
            return Ok(e.kind);
        }
        self.host_of(Src::Lower, glen);
        let (kind, target) = match sys::lstat_at(libc::AT_FDCWD, &self.hbuf) {
            Ok(st) => {
                let k = sys::kind_of(&st);
                let t = if k == K::Link {
                    sys::readlink_at(libc::AT_FDCWD, &self.hbuf, &mut self.lbuf)?;
                    Some(self.lbuf.clone().into_boxed_slice())
                } else {
                    None
                };
                (k, t)
            }
            Err(libc::ENOENT) | Err(libc::ENOTDIR) => (K::Missing, None),
            Err(e) => return Err(e),
        };
        if self.lower_cache.len() > 200_000 {
            self.lower_cache.clear();
        }
        self.lower_cache.insert(self.guest[..glen].into(), LowerEnt { kind, target });
        Ok(kind)
    }

    fn read_link(&mut self, node: &Node, out: &mut Vec<u8>) -> Result<(), i32> {
        let glen = self.guest.len();
        if node.src == Src::Lower {
            if let Some(LowerEnt { target: Some(t), .. }) = self.lower_cache.get(&self.guest[..]) {
                out.clear();
                out.extend_from_slice(t);
                return Ok(());
            }
        }
        self.host_of(node.src, glen);
        sys::readlink_at(libc::AT_FDCWD, &self.hbuf, out)
    }

    /// Looks up the name just pushed on `guest` (which was `start` long before) in a directory
    /// of `parent`.
    fn lookup(&mut self, parent: Mnt, start: usize) -> Result<Node, i32> {
        let glen = self.guest.len();
        let missing = Node { kind: K::Missing, src: Src::None, mnt: parent, wh: false, upper: K::Missing, lower: K::Missing };
        if let Some(&b) = self.bind_at.get(&self.guest[..]) {
            if self.binds[b].proc_ {
                return Ok(Node { kind: K::Dir, src: Src::Bind(b), mnt: Mnt::Proc(b), ..missing });
            }
            return self.lookup_bind(b, glen, missing);
        }
        let _ = start;
        let node = match parent {
            Mnt::Bind(b) => self.lookup_bind(b, glen, missing)?,
            Mnt::Proc(_) => unreachable!("procfs is walked without lookups"),
            Mnt::Virtual => missing,
            Mnt::Union { upper: pu, lower: pl } => {
                let mut n = missing;
                let mut opaque = false;
                let mut ust = None;
                let mut cached_opaque = None;
                if pu {
                    if !self.volatile.is_empty() && self.volatile.contains(&self.guest[..]) {
                        self.walk_volatile = true;
                    }
                    let cacheable = !self.walk_volatile;
                    match self.upper_cache.get(&self.guest[..]) {
                        Some(e) if cacheable => {
                            n.wh = e.wh;
                            n.upper = e.kind;
                            cached_opaque = e.opaque;
                        }
                        _ => {
                            self.host_of(Src::Upper, glen);
                            match sys::lstat_at(libc::AT_FDCWD, &self.hbuf) {
                                Ok(st) if sys::is_whiteout(&st) => n.wh = true,
                                Ok(st) => {
                                    n.upper = sys::kind_of(&st);
                                    ust = Some(st);
                                }
                                Err(libc::ENOENT) => {}
                                Err(e) => return Err(e),
                            }
                            if cacheable {
                                if self.upper_cache.len() > 100_000 {
                                    self.upper_cache.clear();
                                }
                                self.upper_cache.insert(self.guest[..].into(), UEnt { wh: n.wh, kind: n.upper, opaque: None });
                            }
                        }
                    }
                }
                if pl && !n.wh {
                    n.lower = self.lower_ent(glen)?;
                }
                if let (K::Dir, K::Dir, Some(o)) = (n.upper, n.lower, cached_opaque) {
                    opaque = o;
                } else if let (K::Dir, K::Dir, Some(st)) = (n.upper, n.lower, ust) {
                    // Opacity only matters over a lower dir. Setting the xattr changes the
                    // ctime, so (inode, ctime) keys it without a getxattr each time.
                    let key = (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec);
                    opaque = match self.opaque_cache.get(&key) {
                        Some(&o) => o,
                        None => {
                            self.host_of(Src::Upper, glen);
                            let o = self.is_opaque();
                            if self.opaque_cache.len() > 100_000 {
                                self.opaque_cache.clear();
        self.upper_cache.clear();
                            }
                            self.opaque_cache.insert(key, o);
                            o
                        }
                    };
                    if let Some(e) = self.upper_cache.get_mut(&self.guest[..]) {
                        e.opaque = Some(opaque);
                    }
                }
                if n.upper != K::Missing {
                    n.kind = n.upper;
                    n.src = Src::Upper;
                } else if n.lower != K::Missing {
                    n.kind = n.lower;
                    n.src = Src::Lower;
                }
                if n.upper == K::Dir && n.lower == K::Dir && !opaque && !self.pending_opaque.is_empty() {
                    let g = self.guest.clone();
                    if self.pending_opaque.remove(&g) {
                        self.host_of(Src::Upper, glen);
                        self.set_opaque();
                        opaque = true;
                    }
                }
                if n.kind == K::Dir {
                    n.mnt = Mnt::Union {
                        upper: n.upper == K::Dir,
                        lower: n.lower == K::Dir && !opaque && (n.upper == K::Dir || n.upper == K::Missing),
                    };
                }
                n
            }
        };
        if node.kind == K::Missing && self.bind_ancestors.contains(&self.guest[..]) {
            return Ok(Node { kind: K::Dir, src: Src::Virtual, mnt: Mnt::Virtual, ..node });
        }
        Ok(node)
    }

    fn lookup_bind(&mut self, b: usize, glen: usize, missing: Node) -> Result<Node, i32> {
        self.host_of(Src::Bind(b), glen);
        match sys::lstat_at(libc::AT_FDCWD, &self.hbuf) {
            Ok(st) => Ok(Node { kind: sys::kind_of(&st), src: Src::Bind(b), mnt: Mnt::Bind(b), ..missing }),
            Err(libc::ENOENT) => Ok(Node { src: Src::Bind(b), mnt: Mnt::Bind(b), ..missing }),
            Err(e) => Err(e),
        }
    }

    /// Whether the upper dir at `hbuf` is opaque.
    fn is_opaque(&self) -> bool {
        sys::lgetxattr_is_y(&self.hbuf, OPAQUE_XATTR)
    }

    fn set_opaque(&mut self) -> bool {
        // Within one ctime tick of a cached lookup the key would not change.
        self.opaque_cache.clear();
        self.upper_cache.clear();
        let r = unsafe {
            libc::lsetxattr(self.hbuf.as_ptr().cast(), OPAQUE_XATTR.as_ptr().cast(), b"y".as_ptr().cast(), 1, 0)
        };
        r == 0
    }

    /// rename/renameat/renameat2 (flags as given): both ends at once, since a rename out of
    /// the image is a copy-up of the source plus a whiteout of it.
    pub fn rename(
        &mut self,
        from: (&Base, &[u8]),
        to: (&Base, &[u8]),
        flags: u32,
    ) -> (Outcome, Outcome) {
        let r = self.rename_impl(from, to, flags);
        self.upper_cache.clear();
        r
    }

    /// The guest path of a host path (for getcwd, readlink of /proc/PID/{cwd,fd/N,exe,root},
    /// and for mapping a base back); None when the host path is not visible in the container.
    pub fn guest_path(&self, host: &Path) -> Option<PathBuf> {
        let h = host.as_os_str().as_bytes();
        // Longest host prefix wins: a `--write=DIR` under a bound $HOME is the upper layer.
        let mut best: Option<(usize, Vec<u8>)> = None;
        let mut consider = |root: &[u8], guest: &[u8]| {
            let r: &[u8] = if root == b"/" { b"" } else { root };
            if h.starts_with(r)
                && (h.len() == r.len() || h[r.len()] == b'/')
                && best.as_ref().is_none_or(|(l, _)| r.len() >= *l)
            {
                {
                    let mut g = guest.to_vec();
                    let tail = &h[r.len()..];
                    g.extend_from_slice(tail);
                    while g.len() > 1 && g.last() == Some(&b'/') {
                        g.pop();
                    }
                    best = Some((r.len(), g));
                }
            }
        };
        consider(&self.lower_root, b"");
        if let Some(u) = &self.upper_root {
            consider(u, b"");
        }
        for b in &self.binds {
            consider(&b.host, &b.guest);
        }
        let mut mnt = self.private_root.clone();
        mnt.extend_from_slice(b"/mnt");
        consider(&mnt, b"");
        let mut ls = self.private_root.clone();
        ls.extend_from_slice(b"/ls/");
        if h.starts_with(&ls) {
            let t = &h[ls.len()..];
            let (n, tail) = match t.iter().position(|&c| c == b'/') {
                Some(p) => (&t[..p], &t[p..]),
                None => (t, &b""[..]),
            };
            let n: u64 = std::str::from_utf8(n).ok()?.parse().ok()?;
            let mut g = self.listing_guest.get(&n)?.clone();
            g.extend_from_slice(tail);
            best = Some((usize::MAX, g));
        }
        let (_, mut g) = best?;
        if g.is_empty() {
            g.push(b'/');
        }
        Some(PathBuf::from(OsStr::from_bytes(&g)))
    }

    /// What a directory opened at `host` lists, when it is a merged directory of the union
    /// (the tracer redirects its open to the returned host directory: a listing built in
    /// `Layout::private`). None: the kernel's listing of `host` is right as it is.
    pub fn listing(&mut self, host: &Path) -> Option<PathBuf> {
        self.listing_impl(host)
    }
}

impl Drop for View {
    /// Directories made over whiteouts but never looked up again still hide the image's:
    /// the layer may be used next by namespace mode's overlayfs.
    fn drop(&mut self) {
        for g in std::mem::take(&mut self.pending_opaque) {
            self.guest.clear();
            self.guest.extend_from_slice(&g);
            let gl = self.guest.len();
            self.host_of(Src::Upper, gl);
            if matches!(sys::lstat_at(libc::AT_FDCWD, &self.hbuf), Ok(st) if sys::kind_of(&st) == K::Dir) {
                self.set_opaque();
            }
        }
    }
}
