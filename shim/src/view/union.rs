//! What an operation does with a resolved name: EROFS, copy-up, whiteouts, merged listings.
//! The upper layer has overlayfs's format with `userxattr` (whiteout: char device 0/0,
//! opaque dir: `user.overlay.opaque=y`), so a `--write=DIR` layer is interchangeable with
//! namespace mode.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::sys::{self, K};
use super::{Base, Fin, Mnt, Node, Op, Outcome, Src, View};

fn p(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

fn cstr(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.push(0);
    v
}

fn err(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

pub(super) fn mknod_whiteout(path: &[u8]) -> Result<(), i32> {
    let c = cstr(path);
    let r = unsafe { libc::mknod(c.as_ptr().cast(), libc::S_IFCHR, 0) };
    if r == 0 { Ok(()) } else { Err(sys::errno()) }
}

fn set_times(path: &[u8], md: &fs::Metadata) {
    let c = cstr(path);
    let ts = [
        libc::timespec { tv_sec: md.atime(), tv_nsec: md.atime_nsec() },
        libc::timespec { tv_sec: md.mtime(), tv_nsec: md.mtime_nsec() },
    ];
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr().cast(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
}

impl View {
    fn host_out(&mut self, src: Src, slash: bool) -> Outcome {
        let g = self.guest.len();
        self.host_of(src, g);
        let mut h = self.hpath();
        if slash {
            h.as_mut_os_string().push("/");
        }
        Outcome::Host(h)
    }

    fn in_union(n: &Node, parent: Mnt) -> bool {
        matches!(n.src, Src::Upper | Src::Lower) || (n.src == Src::None && matches!(parent, Mnt::Union { .. }))
    }

    pub(super) fn finish(&mut self, fin: Fin, op: Op, slash: bool) -> Outcome {
        let n = fin.node;
        let parent = self.levels.last().map(|l| l.mnt).unwrap_or(Mnt::Virtual);
        if fin.must_dir && n.kind != K::Dir && n.kind != K::Missing && !matches!(n.mnt, Mnt::Proc(_)) {
            return Outcome::Fail(libc::ENOTDIR);
        }
        let bind_root = matches!(n.src, Src::Bind(b) if self.binds[b].guest == self.guest);
        match op {
            Op::Read => match n.src {
                Src::None => Outcome::Fail(libc::ENOENT),
                Src::Bind(_) => self.host_out(n.src, slash),
                Src::Virtual => {
                    self.make_virtual();
                    self.host_out(n.src, false)
                }
                s => self.host_out(s, false),
            },
            _ if matches!(n.src, Src::Bind(_)) || (n.src == Src::None && matches!(parent, Mnt::Bind(_) | Mnt::Proc(_))) => {
                let b = match (n.src, parent) {
                    (Src::Bind(b), _) | (_, Mnt::Bind(b)) | (_, Mnt::Proc(b)) => b,
                    _ => unreachable!(),
                };
                if bind_root && matches!(op, Op::Remove { .. }) {
                    return Outcome::Fail(libc::EBUSY);
                }
                if bind_root && op == Op::Create {
                    return Outcome::Fail(libc::EEXIST);
                }
                if self.binds[b].ro {
                    if op == Op::Create && n.kind != K::Missing {
                        return Outcome::Fail(libc::EEXIST);
                    }
                    return Outcome::Fail(libc::EROFS);
                }
                self.host_out(Src::Bind(b), slash)
            }
            _ if n.src == Src::Virtual || parent == Mnt::Virtual => match (op, n.kind) {
                (Op::Create, K::Dir) => Outcome::Fail(libc::EEXIST),
                (_, K::Missing) if op != Op::Create => Outcome::Fail(libc::ENOENT),
                _ => Outcome::Fail(libc::EROFS),
            },
            _ => {
                debug_assert!(Self::in_union(&n, parent));
                if fin.dir_self {
                    return match op {
                        Op::Create => Outcome::Fail(libc::EEXIST),
                        Op::Remove { dir: true } if self.guest.is_empty() => Outcome::Fail(libc::EBUSY),
                        Op::Remove { dir: true } => Outcome::Fail(libc::EINVAL),
                        Op::Remove { dir: false } => Outcome::Fail(libc::EISDIR),
                        _ => self.union_op(n, op, slash),
                    };
                }
                self.union_op(n, op, slash)
            }
        }
    }

    fn union_op(&mut self, n: Node, op: Op, slash: bool) -> Outcome {
        let ro = self.upper_root.is_none();
        match op {
            Op::Read => unreachable!(),
            Op::Modify => match n.src {
                Src::None => Outcome::Fail(libc::ENOENT),
                _ if ro => Outcome::Fail(libc::EROFS),
                Src::Upper => self.host_out(Src::Upper, slash),
                _ => match self.copy_up(self.guest.len()) {
                    Ok(()) => self.host_out(Src::Upper, slash),
                    Err(e) => Outcome::Fail(e),
                },
            },
            Op::Create => match n.kind {
                K::Dir => Outcome::Fail(libc::EEXIST),
                _ if ro => Outcome::Fail(libc::EROFS),
                K::Missing => {
                    let g = self.guest.len();
                    let pl = self.parent_len();
                    if let Err(e) = self.copy_up(pl) {
                        return Outcome::Fail(e);
                    }
                    if n.wh {
                        self.host_of(Src::Upper, g);
                        let c = self.hbuf.clone();
                        if unsafe { libc::unlink(c.as_ptr().cast()) } != 0 {
                            return Outcome::Fail(sys::errno());
                        }
                        if self.lower_dir_under_whiteout(g) {
                            self.pending_opaque.insert(self.guest.clone());
                        }
                    }
                    self.volatile.insert(self.guest.clone());
                    self.host_out(Src::Upper, slash)
                }
                _ => match n.src {
                    Src::Upper => self.host_out(Src::Upper, slash),
                    _ => match self.copy_up(self.guest.len()) {
                        Ok(()) => self.host_out(Src::Upper, slash),
                        Err(e) => Outcome::Fail(e),
                    },
                },
            },
            Op::Remove { dir } => {
                if n.kind == K::Missing {
                    return Outcome::Fail(libc::ENOENT);
                }
                if dir && n.kind != K::Dir {
                    return Outcome::Fail(libc::ENOTDIR);
                }
                if !dir && n.kind == K::Dir {
                    return Outcome::Fail(libc::EISDIR);
                }
                if ro {
                    return Outcome::Fail(libc::EROFS);
                }
                let g = self.guest.len();
                if !dir {
                    if n.lower == K::Missing {
                        self.volatile.insert(self.guest.clone());
                        return self.host_out(Src::Upper, false);
                    }
                    if let Err(e) = self.copy_up(self.parent_len()) {
                        return Outcome::Fail(e);
                    }
                    self.host_of(Src::Upper, g);
                    let h = self.hbuf[..self.hbuf.len() - 1].to_vec();
                    if n.upper != K::Missing {
                        if let Err(e) = fs::remove_file(p(&h)) {
                            return Outcome::Fail(err(e));
                        }
                    }
                    return match mknod_whiteout(&h) {
                        Ok(()) => Outcome::Done(0),
                        Err(e) => Outcome::Fail(e),
                    };
                }
                match self.merged_empty(n) {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Fail(libc::ENOTEMPTY),
                    Err(e) => return Outcome::Fail(e),
                }
                if let Err(e) = self.copy_up(self.parent_len()) {
                    return Outcome::Fail(e);
                }
                self.host_of(Src::Upper, g);
                let h = self.hbuf[..self.hbuf.len() - 1].to_vec();
                if n.upper == K::Dir {
                    // Only whiteouts are left in it (merged_empty).
                    if let Err(e) = fs::remove_dir_all(p(&h)) {
                        return Outcome::Fail(err(e));
                    }
                }
                if n.lower != K::Missing {
                    if let Err(e) = mknod_whiteout(&h) {
                        return Outcome::Fail(e);
                    }
                }
                self.forget_listing();
                Outcome::Done(0)
            }
        }
    }

    fn parent_len(&self) -> usize {
        self.guest.iter().rposition(|&c| c == b'/').unwrap_or(0)
    }

    fn lower_dir_under_whiteout(&mut self, glen: usize) -> bool {
        // The parent's lower dir shows through (or the whiteout would be pointless): look
        // the name up in lower directly.
        matches!(self.lower_ent(glen), Ok(K::Dir))
    }

    /// Empty in the merged view: whiteouts don't count, nor lower names they hide.
    fn merged_empty(&mut self, n: Node) -> Result<bool, i32> {
        let g = self.guest.len();
        let mut hidden = std::collections::HashSet::new();
        let Mnt::Union { upper, lower } = n.mnt else { return Ok(false) };
        if upper {
            self.host_of(Src::Upper, g);
            let h = self.hpath();
            for e in fs::read_dir(&h).map_err(err)? {
                let e = e.map_err(err)?;
                let md = e.metadata().map_err(err)?;
                if md.file_type().is_char_device() && md.rdev() == 0 {
                    hidden.insert(e.file_name());
                } else {
                    return Ok(false);
                }
            }
        }
        if lower {
            self.host_of(Src::Lower, g);
            let h = self.hpath();
            for e in fs::read_dir(&h).map_err(err)? {
                let e = e.map_err(err)?;
                if !hidden.contains(&e.file_name()) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Makes `guest[..glen]` exist in the upper layer: its parents as directories with the
    /// lower ones' modes, then the entry itself (a file copied with its mode and times,
    /// a symlink as a symlink, a directory as an empty directory).
    pub(super) fn copy_up(&mut self, glen: usize) -> Result<(), i32> {
        let Some(up) = self.upper_root.clone() else { return Err(libc::EROFS) };
        let g = self.guest[..glen].to_vec();
        let mut i = 0;
        while i < g.len() {
            let mut j = i + 1;
            while j < g.len() && g[j] != b'/' {
                j += 1;
            }
            let mut uh = up.clone();
            uh.extend_from_slice(&g[..j]);
            match fs::symlink_metadata(p(&uh)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let mut lh = self.lower_root.clone();
                    lh.extend_from_slice(&g[..j]);
                    let md = fs::symlink_metadata(p(&lh)).map_err(err)?;
                    let ft = md.file_type();
                    if ft.is_dir() {
                        fs::DirBuilder::new().mode(md.mode() & 0o7777).create(p(&uh)).map_err(err)?;
                        // The umask may have taken bits away.
                        let _ = fs::set_permissions(p(&uh), fs::Permissions::from_mode(md.mode() & 0o7777));
                    } else if ft.is_symlink() {
                        let t = fs::read_link(p(&lh)).map_err(err)?;
                        std::os::unix::fs::symlink(t, p(&uh)).map_err(err)?;
                    } else if ft.is_file() {
                        let mut tmp = uh.clone();
                        tmp.extend_from_slice(b".lpmx-copyup");
                        fs::copy(p(&lh), p(&tmp)).map_err(err)?;
                        let _ = fs::set_permissions(p(&tmp), fs::Permissions::from_mode(md.mode() & 0o7777));
                        set_times(&tmp, &md);
                        fs::rename(p(&tmp), p(&uh)).map_err(err)?;
                    } else {
                        let c = cstr(&uh);
                        let r = unsafe { libc::mknod(c.as_ptr().cast(), md.mode(), md.rdev()) };
                        if r != 0 {
                            return Err(sys::errno());
                        }
                    }
                    set_times(&uh, &md);
                }
                Err(e) => return Err(err(e)),
            }
            i = j;
        }
        self.forget_listing();
        Ok(())
    }

    /// Creates the directory standing for a virtual one, with its bind points, on demand.
    fn make_virtual(&mut self) {
        if self.made_virtual.contains(&self.guest) {
            return;
        }
        let g = self.guest.clone();
        self.made_virtual.insert(g.clone());
        let mut d = self.private_root.clone();
        d.extend_from_slice(b"/mnt");
        d.extend_from_slice(&g);
        let _ = fs::DirBuilder::new().recursive(true).mode(0o755).create(p(&d));
        for b in &self.binds {
            if b.guest.starts_with(&g) && b.guest.len() > g.len() && b.guest[g.len()] == b'/' {
                let rest = &b.guest[g.len() + 1..];
                let first = rest.split(|&c| c == b'/').next().unwrap_or(b"");
                let mut c = d.clone();
                c.push(b'/');
                c.extend_from_slice(first);
                let _ = fs::create_dir(p(&c));
            }
        }
    }

    /// The View's own writes may fall within one timestamp tick of a listing's stamp.
    fn forget_listing(&mut self) {
        self.listings.clear();
    }

    pub(super) fn rename_impl(&mut self, from: (&Base, &[u8]), to: (&Base, &[u8]), flags: u32) -> (Outcome, Outcome) {
        let fail = |e| (Outcome::Fail(e), Outcome::Fail(e));
        const NOREPLACE: u32 = 1;
        const EXCHANGE: u32 = 2;
        // The source.
        if let Err(o) = self.start(from.0, from.1) {
            let o2 = match self.start(to.0, to.1) { Err(o2) => o2, Ok(()) => return fail(libc::EXDEV) };
            return (o, o2);
        }
        let fs_ = match self.walk(false, from.0.tid) { Ok(f) => f, Err(e) => return fail(e) };
        let fparent = self.levels.last().map(|l| l.mnt).unwrap_or(Mnt::Virtual);
        let fguest = self.guest.clone();
        let fnode = fs_.node;
        if fnode.kind == K::Missing {
            return fail(libc::ENOENT);
        }
        if fs_.dir_self {
            return fail(if fguest.is_empty() { libc::EBUSY } else { libc::EINVAL });
        }
        if fs_.must_dir && fnode.kind != K::Dir {
            return fail(libc::ENOTDIR);
        }
        let fout = match self.finish(Fin { node: fnode, dir_self: false, must_dir: false }, Op::Read, false) {
            Outcome::Host(h) => h,
            o => return (o.clone(), o),
        };
        // The destination.
        if let Err(o) = self.start(to.0, to.1) {
            let _ = o;
            return fail(libc::EXDEV);
        }
        let ts = match self.walk(false, to.0.tid) { Ok(f) => f, Err(e) => return fail(e) };
        let tparent = self.levels.last().map(|l| l.mnt).unwrap_or(Mnt::Virtual);
        let tnode = ts.node;
        if ts.dir_self {
            return fail(if self.guest.is_empty() { libc::EBUSY } else { libc::EINVAL });
        }
        let mount = |n: &Node, par: Mnt| match (n.src, par) {
            (Src::Bind(b), _) => Some(b),
            (Src::None, Mnt::Bind(b)) | (Src::None, Mnt::Proc(b)) => Some(b),
            (Src::Virtual, _) | (_, Mnt::Virtual) => Some(usize::MAX),
            _ => None,
        };
        let (fm, tm) = (mount(&fnode, fparent), mount(&tnode, tparent));
        if fm != tm {
            return fail(libc::EXDEV);
        }
        if let Some(b) = fm {
            if b == usize::MAX || self.binds[b].ro {
                return fail(libc::EROFS);
            }
            if self.binds[b].guest == fguest || self.binds[b].guest == self.guest {
                return fail(libc::EBUSY);
            }
            let tout = self.host_out(Src::Bind(b), false);
            return (Outcome::Host(fout), tout);
        }
        // Both in the union.
        if self.upper_root.is_none() {
            return fail(libc::EROFS);
        }
        if fguest == self.guest {
            return (Outcome::Done(0), Outcome::Done(0));
        }
        if self.guest.starts_with(&fguest) && self.guest[fguest.len()] == b'/' {
            return fail(libc::EINVAL);
        }
        if tnode.kind != K::Missing {
            if flags & NOREPLACE != 0 {
                return fail(libc::EEXIST);
            }
            if flags & EXCHANGE == 0 {
                if fnode.kind == K::Dir && tnode.kind != K::Dir {
                    return fail(libc::ENOTDIR);
                }
                if fnode.kind != K::Dir && tnode.kind == K::Dir {
                    return fail(libc::EISDIR);
                }
                if tnode.kind == K::Dir {
                    match self.merged_empty(tnode) {
                        Ok(true) => {}
                        Ok(false) => return fail(libc::ENOTEMPTY),
                        Err(e) => return fail(e),
                    }
                }
            }
        } else if flags & EXCHANGE != 0 {
            return fail(libc::ENOENT);
        }
        let from_upper_only = fnode.lower == K::Missing;
        if flags & EXCHANGE != 0 {
            if from_upper_only && tnode.lower == K::Missing {
                self.volatile.insert(fguest.clone());
                self.volatile.insert(self.guest.clone());
                let tout = self.host_out(Src::Upper, false);
                return (Outcome::Host(fout), tout);
            }
            return fail(libc::EXDEV);
        }
        if !from_upper_only && fnode.kind == K::Dir {
            return fail(libc::EXDEV);
        }
        // Prepare the destination: parents in upper, no whiteout, no upper dir full of
        // whiteouts (the kernel would find it not empty).
        let tg = self.guest.len();
        let tguest = self.guest.clone();
        if let Err(e) = self.copy_up(self.parent_len()) {
            return fail(e);
        }
        self.host_of(Src::Upper, tg);
        let th = self.hbuf[..self.hbuf.len() - 1].to_vec();
        if tnode.wh {
            if let Err(e) = fs::remove_file(p(&th)) {
                return fail(err(e));
            }
        } else if tnode.upper == K::Dir {
            if let Err(e) = fs::remove_dir_all(p(&th)) {
                return fail(err(e));
            }
        }
        let lower_under_to = tnode.lower == K::Dir || (tnode.wh && self.lower_dir_under_whiteout(tg));
        self.guest.clear();
        self.guest.extend_from_slice(&fguest);
        if fnode.kind == K::Dir && lower_under_to {
            // An upper-only dir moved over a lower dir must hide it.
            self.host_of(Src::Upper, fguest.len());
            self.set_opaque();
        }
        if from_upper_only {
            self.volatile.insert(fguest.clone());
            self.volatile.insert(tguest);
            self.forget_listing();
            return (Outcome::Host(fout), Outcome::Host(PathBuf::from(OsStr::from_bytes(&th))));
        }
        if let Err(e) = self.copy_up(fguest.len()) {
            return fail(e);
        }
        self.host_of(Src::Upper, fguest.len());
        let fh = self.hbuf[..self.hbuf.len() - 1].to_vec();
        if let Err(e) = fs::rename(p(&fh), p(&th)) {
            return fail(err(e));
        }
        if let Err(e) = mknod_whiteout(&fh) {
            return fail(e);
        }
        self.forget_listing();
        (Outcome::Done(0), Outcome::Done(0))
    }

    pub(super) fn listing_impl(&mut self, host: &Path) -> Option<PathBuf> {
        let up = self.upper_root.as_ref()?;
        let hb = host.as_os_str().as_bytes();
        if !(hb.starts_with(up) && (hb.len() == up.len() || hb[up.len()] == b'/')) {
            return None;
        }
        let g = self.guest_path(host)?;
        self.rest.clear();
        self.rest.extend_from_slice(g.as_os_str().as_bytes());
        let fin = self.walk(true, 0).ok()?;
        if fin.node.mnt != (Mnt::Union { upper: true, lower: true }) {
            return None;
        }
        let gl = self.guest.len();
        self.host_of(Src::Upper, gl);
        let uh = self.hpath();
        let md = fs::symlink_metadata(&uh).ok()?;
        let stamp = (md.mtime(), md.mtime_nsec(), md.ctime(), md.ctime_nsec(), md.ino());
        let ls = |n: u64, root: &[u8]| {
            let mut d = root.to_vec();
            d.extend_from_slice(format!("/ls/{n}").as_bytes());
            PathBuf::from(OsStr::from_bytes(&d))
        };
        if let Some(&(n, st)) = self.listings.get(&self.guest) {
            if st == stamp {
                return Some(ls(n, &self.private_root));
            }
        }
        self.host_of(Src::Lower, gl);
        let lh = self.hpath();
        let n = self.next_listing;
        self.next_listing += 1;
        let dir = ls(n, &self.private_root);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).ok()?;
        let mut seen = std::collections::HashSet::new();
        for (i, src) in [&uh, &lh].into_iter().enumerate() {
            for e in fs::read_dir(src).ok()? {
                let e = e.ok()?;
                let name = e.file_name();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let ft = e.file_type().ok()?;
                if i == 0 && ft.is_char_device() && e.metadata().ok()?.rdev() == 0 {
                    continue; // a whiteout: its name stays in `seen`, hiding the lower one
                }
                let at = dir.join(&name);
                // Only names and d_type matter to getdents' readers.
                let r = if ft.is_dir() {
                    fs::create_dir(&at)
                } else if ft.is_symlink() {
                    std::os::unix::fs::symlink(".", &at)
                } else if ft.is_fifo() || ft.is_socket() || ft.is_char_device() {
                    let mode = if ft.is_fifo() { libc::S_IFIFO } else if ft.is_socket() { libc::S_IFSOCK } else { libc::S_IFCHR };
                    let c = cstr(at.as_os_str().as_bytes());
                    if unsafe { libc::mknod(c.as_ptr().cast(), mode | 0o600, 0) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
                } else {
                    fs::File::create(&at).map(drop)
                };
                r.ok()?;
            }
        }
        self.listing_guest.insert(n, self.guest.clone());
        self.listings.insert(self.guest.clone(), (n, stamp));
        Some(dir)
    }
}
