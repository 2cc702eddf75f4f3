//! The extractor: one tar stream into an empty directory, entry by entry, by descriptor.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use super::entry::{classify, dir_mode, file_mode, join, normalize, Kind, IMPLICIT_DIR_MODE};
use super::resolve::{resolve_dir, resolver, Resolver};
use super::{io_err, Error, LayerStats, Result};

/// Extract the (already decompressed) tar stream into `dest`, an existing empty directory.
///
/// `what` names the layer in errors ("layer sha256:abc of docker.io/library/alpine:3"). On
/// error `dest` holds a partial tree and should be thrown away; nothing is ever written
/// outside it. After the end-of-archive marker the rest of the stream is read and discarded,
/// so a digest computed by a wrapping reader covers the whole blob and a gzip trailer is
/// checked.
pub fn unpack_layer(tar: impl Read, dest: &Path, what: &str) -> Result<LayerStats> {
    unpack_layer_with(tar, dest, what, resolver())
}

/// [`unpack_layer`] with the path resolver chosen by the caller, for tests and for forcing
/// the userspace walk where `openat2` misbehaves.
pub fn unpack_layer_with(
    tar: impl Read,
    dest: &Path,
    what: &str,
    resolver: Resolver,
) -> Result<LayerStats> {
    let dest_err = |source: io::Error| Error::Dest {
        what: what.to_owned(),
        dest: dest.to_owned(),
        source,
    };
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| dest_err(e.into()))?;
    // Hardlink targets are checked against what this layer extracted, which only means
    // something when nothing else is there.
    let mut listing = rustix::fs::Dir::read_from(&root).map_err(|e| dest_err(e.into()))?;
    for item in &mut listing {
        let item = item.map_err(|e| dest_err(e.into()))?;
        if !matches!(item.file_name().to_bytes(), b"." | b"..") {
            return Err(Error::DestNotEmpty {
                what: what.to_owned(),
                dest: dest.to_owned(),
            });
        }
    }

    let mut u = Unpacker {
        what,
        root,
        resolver,
        stats: LayerStats::default(),
        dirs: BTreeMap::new(),
        files: BTreeSet::new(),
        buf: vec![0; 128 * 1024],
    };
    let mut archive = tar::Archive::new(Tail {
        inner: tar,
        total: 0,
        zero_run: 0,
        eof: false,
    });
    let mut last: Option<String> = None;
    let corrupt = |after: &Option<String>, source| Error::Corrupt {
        what: what.to_owned(),
        after: after.clone(),
        source,
    };
    for entry in archive.entries().map_err(|e| corrupt(&last, e))? {
        let mut entry = entry.map_err(|e| corrupt(&last, e))?;
        last = Some(u.entry(&mut entry)?);
    }
    let mut tail = archive.into_inner();
    // The tar crate takes a clean EOF where a header should start as the end of the archive,
    // so a stream cut at a block boundary would otherwise pass as a shorter layer. A proper
    // end has just read a zero block; a cut one has just read data or a header.
    if tail.eof && tail.total > 0 && tail.zero_run < 512 {
        return Err(Error::Truncated {
            what: what.to_owned(),
            detail: match &last {
                Some(e) => format!("it ends after entry {e} without the end-of-archive marker"),
                None => "it ends without the end-of-archive marker".to_owned(),
            },
        });
    }
    io::copy(&mut tail, &mut io::sink()).map_err(|e| corrupt(&last, e))?;
    u.finish()
}

/// Watches what the tar parser reads, to tell a finished archive from a cut one.
struct Tail<R> {
    inner: R,
    total: u64,
    /// Zero bytes at the end of everything read so far.
    zero_run: u64,
    eof: bool,
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.eof |= !buf.is_empty();
            return Ok(0);
        }
        self.total += n as u64;
        match buf[..n].iter().rposition(|&b| b != 0) {
            Some(i) => self.zero_run = (n - 1 - i) as u64,
            None => self.zero_run += n as u64,
        }
        Ok(n)
    }
}

struct DirMeta {
    mode: u32,
    mtime: Option<Timespec>,
}

struct Unpacker<'w> {
    what: &'w str,
    root: OwnedFd,
    resolver: Resolver,
    stats: LayerStats,
    /// Directory metadata to apply once every entry is in: a read-only directory would
    /// refuse its own children, and each child created bumps the parent's mtime.
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    /// Non-directories extracted so far, the only valid hardlink targets.
    files: BTreeSet<Vec<u8>>,
    buf: Vec<u8>,
}

/// An entry name for messages: a hostile name of thousands of bytes is cut in the middle,
/// so the error stays readable and still shows where the name starts and ends.
fn show(b: &[u8]) -> String {
    const KEEP: usize = 120;
    if b.len() <= 2 * KEEP + 40 {
        return String::from_utf8_lossy(b).into_owned();
    }
    format!(
        "{}...({} bytes)...{}",
        String::from_utf8_lossy(&b[..KEEP]),
        b.len(),
        String::from_utf8_lossy(&b[b.len() - KEEP..])
    )
}

fn times(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// PAX times are decimal seconds with an optional fraction, possibly negative.
pub(super) fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let nanos: i64 = format!("{:0<9}", &frac[..frac.len().min(9)]).parse().ok()?;
    Some(match (neg, nanos) {
        (false, _) => Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        (true, 0) => Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        },
    })
}

fn entry_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> Option<Timespec> {
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            if ext.key_bytes() == b"mtime" {
                if let Some(t) = parse_pax_time(ext.value_bytes()) {
                    return Some(t);
                }
            }
        }
    }
    // An unreadable mtime is not worth refusing a layer over; the file keeps "now".
    let secs = i64::try_from(entry.header().mtime().ok()?).ok()?;
    Some(Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    })
}

impl Unpacker<'_> {
    fn invalid(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: self.what.to_owned(),
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    /// Handles one member; returns its name for error context.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<String> {
        let raw = entry.path_bytes().into_owned();
        let shown = show(&raw);
        let ty = entry.header().entry_type();
        if matches!(
            ty,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(shown);
        }
        self.stats.entries += 1;
        let (comps, _) = normalize(&raw);
        let is_dir = match classify(&raw, ty).map_err(|why| self.invalid(&shown, why))? {
            Kind::Header => unreachable!("handled above"),
            Kind::Opaque(d) => {
                self.stats.opaque_dirs.push(d);
                return Ok(shown);
            }
            Kind::Whiteout(w) => {
                self.stats.whiteouts.push(w);
                return Ok(shown);
            }
            Kind::Device => {
                self.stats.skipped_devices += 1;
                return Ok(shown);
            }
            Kind::Other => {
                self.stats.skipped_other += 1;
                return Ok(shown);
            }
            Kind::Dir => true,
            Kind::File | Kind::Symlink | Kind::Link | Kind::Fifo => false,
        };
        let header = entry.header();
        if !matches!((header.uid(), header.gid()), (Ok(0), Ok(0))) {
            self.stats.ignored_ownership += 1;
        }
        // A symlink's or hardlink's mode means nothing, so a blank one is no reason to fail.
        let creates_inode = !matches!(ty, EntryType::Symlink | EntryType::Link);
        let raw_mode = match header.mode() {
            Ok(m) => m,
            Err(_) if !creates_inode => 0,
            Err(e) => return Err(self.invalid(&shown, format!("unreadable mode: {e}"))),
        };
        if creates_inode && raw_mode & 0o6000 != 0 {
            self.stats.dropped_setid += 1;
        }
        let mtime = entry_mtime(entry);
        let key = join(&comps);

        let Some((name, parents)) = comps.split_last() else {
            if is_dir {
                self.stats.dirs += 1;
                self.dirs.insert(
                    Vec::new(),
                    DirMeta {
                        mode: dir_mode(raw_mode),
                        mtime,
                    },
                );
                return Ok(shown);
            }
            return Err(self.invalid(&shown, "names the layer root but is not a directory"));
        };
        let parent = self.parent(parents, &shown)?;

        if is_dir {
            let kept = self.clear_slot(&parent, name, true, &key, &shown)?;
            if !kept {
                rustix::fs::mkdirat(&parent, *name, Mode::from_raw_mode(0o700))
                    .map_err(|e| io_err(self.what, &shown, "create directory", e))?;
            }
            self.stats.dirs += 1;
            self.dirs.insert(
                key,
                DirMeta {
                    mode: dir_mode(raw_mode),
                    mtime,
                },
            );
            return Ok(shown);
        }

        match ty {
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(self.invalid(&shown, "symlink without a target"));
                }
                self.clear_slot(&parent, name, false, &key, &shown)?;
                rustix::fs::symlinkat(target.as_slice(), &parent, *name)
                    .map_err(|e| io_err(self.what, &shown, "create symlink", e))?;
                if let Some(t) = mtime {
                    match rustix::fs::utimensat(
                        &parent,
                        *name,
                        &times(t),
                        AtFlags::SYMLINK_NOFOLLOW,
                    ) {
                        Ok(()) | Err(Errno::OPNOTSUPP) => {}
                        Err(e) => return Err(io_err(self.what, &shown, "set symlink mtime", e)),
                    }
                }
                self.stats.symlinks += 1;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hardlink(&parent, name, &key, &shown, &target_raw)?;
                self.stats.hardlinks += 1;
            }
            EntryType::Fifo => {
                self.clear_slot(&parent, name, false, &key, &shown)?;
                let mode = file_mode(raw_mode);
                match rustix::fs::mknodat(
                    &parent,
                    *name,
                    FileType::Fifo,
                    Mode::from_raw_mode(mode),
                    0,
                ) {
                    Ok(()) => {}
                    Err(Errno::PERM | Errno::ACCESS | Errno::OPNOTSUPP | Errno::NOSYS) => {
                        self.stats.skipped_devices += 1;
                        return Ok(shown);
                    }
                    Err(e) => return Err(io_err(self.what, &shown, "create fifo", e)),
                }
                // The umask applied to mknodat. This name is the FIFO just made, not a symlink.
                rustix::fs::chmodat(&parent, *name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| io_err(self.what, &shown, "set fifo mode", e))?;
                if let Some(t) = mtime {
                    rustix::fs::utimensat(&parent, *name, &times(t), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| io_err(self.what, &shown, "set fifo mtime", e))?;
                }
                self.stats.fifos += 1;
            }
            _ => {
                self.clear_slot(&parent, name, false, &key, &shown)?;
                let fd = rustix::fs::openat(
                    &parent,
                    *name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_err(self.what, &shown, "create file", e))?;
                let mut file = File::from(fd);
                let written = self.copy(entry, &mut file, &shown)?;
                let mode = file_mode(raw_mode);
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(|e| io_err(self.what, &shown, "set file mode", e))?;
                if let Some(t) = mtime {
                    rustix::fs::futimens(&file, &times(t))
                        .map_err(|e| io_err(self.what, &shown, "set file mtime", e))?;
                }
                self.stats.files += 1;
                self.stats.bytes += written;
            }
        }
        self.files.insert(key);
        Ok(shown)
    }

    /// Streams an entry's content; runs of zeros become holes, so a GNU sparse entry
    /// claiming terabytes of holes costs no disk.
    fn copy<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        shown: &str,
    ) -> Result<u64> {
        let expected = entry.size();
        let mut written = 0u64;
        let mut ends_in_hole = false;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Corrupt {
                        what: self.what.to_owned(),
                        after: Some(shown.to_owned()),
                        source,
                    })
                }
            };
            let chunk = &self.buf[..n];
            if chunk.iter().all(|&b| b == 0) {
                file.seek(SeekFrom::Current(n as i64))
                    .map_err(|e| io_err(self.what, shown, "write file", e))?;
                ends_in_hole = true;
            } else {
                file.write_all(chunk)
                    .map_err(|e| io_err(self.what, shown, "write file", e))?;
                ends_in_hole = false;
            }
            written += n as u64;
        }
        if ends_in_hole {
            file.set_len(written)
                .map_err(|e| io_err(self.what, shown, "write file", e))?;
        }
        if written != expected {
            return Err(Error::Truncated {
                what: self.what.to_owned(),
                detail: format!("entry {shown} has {written} of its {expected} bytes"),
            });
        }
        Ok(written)
    }

    fn hardlink(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        key: &[u8],
        shown: &str,
        target_raw: &[u8],
    ) -> Result<()> {
        let target_shown = show(target_raw);
        let what = self.what;
        let fail = |reason: &str, source: Option<io::Error>| Error::Hardlink {
            what: what.to_owned(),
            entry: shown.to_owned(),
            target: target_shown.clone(),
            reason: reason.to_owned(),
            source,
        };
        let (tcomps, _) = normalize(target_raw);
        let tkey = join(&tcomps);
        let Some((tname, tparents)) = tcomps.split_last() else {
            return Err(fail("the target is the layer root", None));
        };
        if self.dirs.contains_key(&tkey) {
            return Err(fail("the target is a directory", None));
        }
        if !self.files.contains(&tkey) {
            return Err(fail(
                "the target is not a file extracted earlier in this layer",
                None,
            ));
        }
        if tkey == key {
            return Ok(());
        }
        self.clear_slot(parent, name, false, key, shown)?;
        let tparent = resolve_dir(self.resolver, self.root.as_fd(), &join(tparents))
            .map_err(|e| fail("cannot resolve the target's directory", Some(e.into())))?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink, never what it points at.
        rustix::fs::linkat(&tparent, *tname, parent, name, AtFlags::empty())
            .map_err(|e| fail("cannot link", Some(e.into())))
    }

    /// Opens the parent directory of an entry, creating missing directories (0755, as tar
    /// does for parents an archive leaves out).
    fn parent(&mut self, parents: &[&[u8]], shown: &str) -> Result<OwnedFd> {
        let what = self.what;
        let resolve_err = |e: Errno| io_err(what, shown, "resolve parent directory", e);
        let root = self.root.as_fd();
        match resolve_dir(self.resolver, root, &join(parents)) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(resolve_err(e)),
        }
        let mut dir = resolve_dir(self.resolver, root, b"").map_err(resolve_err)?;
        for i in 0..parents.len() {
            let prefix = join(&parents[..=i]);
            dir = match resolve_dir(self.resolver, root, &prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, parents[i], Mode::from_raw_mode(0o700)) {
                        Ok(()) => {}
                        // Absent when followed yet present: a dangling symlink.
                        Err(Errno::EXIST) => {
                            return Err(self.invalid(
                                shown,
                                format!("parent {} is a symlink to a missing path", show(&prefix)),
                            ))
                        }
                        Err(e) => {
                            return Err(io_err(self.what, shown, "create parent directory", e))
                        }
                    }
                    let fd = rustix::fs::openat(
                        &dir,
                        parents[i],
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_err(self.what, shown, "open parent directory", e))?;
                    self.dirs.entry(prefix).or_insert(DirMeta {
                        mode: IMPLICIT_DIR_MODE,
                        mtime: None,
                    });
                    fd
                }
                Err(e) => return Err(resolve_err(e)),
            };
        }
        Ok(dir)
    }

    /// Makes room for a new entry named `name` in `parent`. Returns true when an existing
    /// directory is kept because the new entry is a directory too.
    fn clear_slot(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        new_is_dir: bool,
        key: &[u8],
        shown: &str,
    ) -> Result<bool> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io_err(self.what, shown, "inspect existing entry", e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if new_is_dir {
                return Ok(true);
            }
            remove_tree(parent.as_fd(), name)
                .map_err(|e| io_err(self.what, shown, "remove the directory it replaces", e))?;
            self.forget_tree(key);
        } else {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| io_err(self.what, shown, "remove the entry it replaces", e))?;
            self.files.remove(key);
        }
        Ok(false)
    }

    fn forget_tree(&mut self, key: &[u8]) {
        let mut prefix = key.to_vec();
        prefix.push(b'/');
        let under = |k: &Vec<u8>| k.as_slice() == key || k.starts_with(&prefix);
        self.dirs.retain(|k, _| !under(k));
        self.files.retain(|k| !under(k));
    }

    fn finish(mut self) -> Result<LayerStats> {
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        // Deepest first, so no directory loses its owner bits before its children are done.
        dirs.sort_by_key(|(k, _)| std::cmp::Reverse(k.split(|&b| b == b'/').count()));
        let gone = |e: &Errno| matches!(*e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP);
        for (key, meta) in dirs {
            let shown = show(&key);
            let comps: Vec<&[u8]> = if key.is_empty() {
                Vec::new()
            } else {
                key.split(|&b| b == b'/').collect()
            };
            let opened = match comps.split_last() {
                None => rustix::fs::openat(
                    &self.root,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                ),
                Some((name, parents)) => {
                    resolve_dir(self.resolver, self.root.as_fd(), &join(parents)).and_then(|p| {
                        rustix::fs::openat(
                            &p,
                            *name,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                    })
                }
            };
            let fd = match opened {
                Ok(fd) => fd,
                // Replaced by a later non-directory entry, or its path now runs through a
                // symlink that a later entry put in place: the metadata has no owner left.
                Err(e) if gone(&e) => continue,
                Err(e) => {
                    return Err(io_err(
                        self.what,
                        &shown,
                        "open directory to set its mode",
                        e,
                    ))
                }
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode))
                .map_err(|e| io_err(self.what, &shown, "set directory mode", e))?;
            if let Some(t) = meta.mtime {
                rustix::fs::futimens(&fd, &times(t))
                    .map_err(|e| io_err(self.what, &shown, "set directory mtime", e))?;
            }
        }
        Ok(self.stats)
    }
}

/// Deletes the directory `name` in `parent` and everything below it, never following a
/// symlink, at any depth (see [`crate::fswalk`]).
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    crate::fswalk::remove_at(parent, std::ffi::OsStr::from_bytes(name)).map(|_| ())
}
