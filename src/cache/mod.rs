//! The image cache: content-addressed, shared between processes and nodes, crash-safe.
//!
//! ```text
//! CACHE/blobs-v1/HEX          manifests and configs, named by their sha256
//! CACHE/layers-v1/HEX/        an extracted layer: root/ and layer.json (stats, whiteouts)
//! CACHE/images-v1/HEX.json    an image (by manifest digest): config, layers, names, last use
//! CACHE/refs-v1/HEX.json      a name (by sha256 of "registry/repo:tag") -> manifest digest
//! CACHE/locks-v1/HEX.lock     one lock file per digest, naming its holder
//! CACHE/tmp-v1/HOST.PID.RAND/ private work areas, published by one rename
//! CACHE/users-v1/UID/         with `cache.trust: self`, a user's own entries (same layout)
//! ```
//! Entries are immutable once published; a directory or file exists under its final name only
//! when complete. The `-v1` suffixes let a later format live beside this one.
//!
//! A group cache (`cache.group`) is written by several users, so nothing in it is trusted to
//! be what its name says (issue 11): every open goes through [`safe`] (no symlinks followed,
//! nothing but a regular file or directory opened, FIFOs never waited on); temporary names are
//! random and created exclusively; published entries are read-only (no group or other write);
//! the top-level directories are setgid and sticky, so a member can neither rename nor remove
//! another member's entries. Whose entries a user takes is `cache.trust`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::image::reference::Digest;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "gave up waiting {waited:?} for the lock on {what} ({path}), held by {holder}; \
         raise cache.lock_timeout (LPMX_LOCK_TIMEOUT, seconds) if that holder is still working"
    )]
    LockTimeout {
        what: String,
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("{what}: content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cache.group {group}: {why}")]
    Group { group: String, why: String },
    #[error("cache record {path} is damaged: {why}; `lpmx-job cache verify --repair` rebuilds it")]
    Damaged { path: PathBuf, why: String },
    /// A name in the cache that is not what lpmx-job makes there (a symlink, a FIFO...).
    #[error("cache entry {}", .0)]
    Unexpected(safe::Unexpected),
    /// An entry another user published, which this user cannot remove (sticky directories).
    #[error(
        "{path} was published by {owner}; only they (or the owner of the cache directory) can \
         remove it"
    )]
    NotYours { path: PathBuf, owner: String },
    #[error(
        "{path} should be your own private area of the group cache (cache.trust: self) but \
         belongs to {owner}; ask them or the site's administrators to remove it, or set \
         cache.trust: group"
    )]
    Squatted { path: PathBuf, owner: String },
}

impl Error {
    /// The error an io call on `path` gave, keeping a refused name's own description.
    pub fn at(path: &Path, source: std::io::Error) -> Error {
        if safe::as_unexpected(&source).is_some() {
            if let Some(inner) = source.into_inner() {
                if let Ok(u) = inner.downcast::<safe::Unexpected>() {
                    return Error::Unexpected(*u);
                }
            }
            unreachable!("checked above");
        }
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::at(path, source)
}

pub mod lock;
pub mod rootfs;
pub mod safe;
pub mod stage;
use safe::{Access, Expect};

/// Modes of what the cache publishes: no one but the publisher may change an entry. Records
/// and blobs are read-only even to their owner. An entry's directories keep the owner's write
/// bit: the owner could chmod it back anyway, so 0555 would protect against no one, and it
/// made `rm -rf` of one's own cache fail (contrib/examples/hello.sh does that).
pub const FILE_MODE: u32 = 0o444;
pub const DIR_MODE: u32 = 0o755;
/// Added to the top-level directories of a group cache: setgid (entries take the group) and
/// sticky (members cannot rename or remove each other's entries), group rwx.
const TOP_GROUP_BITS: u32 = 0o3070;

pub const BLOBS: &str = "blobs-v1";
pub const LAYERS: &str = "layers-v1";
pub const IMAGES: &str = "images-v1";
pub const REFS: &str = "refs-v1";
pub const LOCKS: &str = "locks-v1";
pub const TMP: &str = "tmp-v1";
/// Flattened image trees, built by `rootfs`.
pub const TREES: &str = "trees-v1";
/// Per-user areas of a group cache under `cache.trust: self`.
pub const USERS: &str = "users-v1";
const TOP: [&str; 7] = [BLOBS, LAYERS, IMAGES, REFS, LOCKS, TMP, TREES];

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `layer.json` records about an extracted layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    /// sha256 of the uncompressed tar, as the image config lists it.
    pub diff_id: Digest,
    pub media_type: String,
    pub compressed_size: u64,
    pub stats: crate::image::unpack::LayerStats,
    /// Entries and regular-file bytes of `root/` right after unpacking, so `cache verify`
    /// can tell a complete tree from one something has eaten into.
    pub tree: TreeSummary,
    pub source: String,
    pub created: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: Digest,
    pub diff_id: Option<Digest>,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Names this image was pulled as, newest first.
    pub names: Vec<String>,
    pub manifest: Digest,
    pub config: Digest,
    pub platform: String,
    pub layers: Vec<LayerRef>,
    /// Sum of the compressed layer sizes.
    pub size: u64,
    pub pulled: u64,
    pub last_used: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefRecord {
    pub name: String,
    pub manifest: Digest,
    pub fetched: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSummary {
    pub entries: u64,
    pub bytes: u64,
}

/// Counts a tree without following symlinks.
pub fn tree_summary(root: &Path) -> Result<TreeSummary> {
    let mut t = TreeSummary::default();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            Error::Io {
                path,
                source: e.into(),
            }
        })?;
        t.entries += 1;
        if e.file_type().is_file() {
            t.bytes += e
                .metadata()
                .map_err(|e| Error::Io {
                    path: root.to_path_buf(),
                    source: e.into(),
                })?
                .len();
        }
    }
    Ok(t)
}

pub struct Cache {
    root: PathBuf,
    /// The group sharing this cache (`cache.group`), when one is set.
    group: Option<u32>,
    lock_timeout: Duration,
    lock_mode: lock::Mode,
    /// Searched for layers before `root`; never written.
    readonly: Vec<PathBuf>,
    /// Under `cache.trust: self`, the group cache, read for entries the user or root owns;
    /// `root` is then the user's own area of it.
    shared: Option<PathBuf>,
    uid: u32,
}

/// `cache.trust`: whose entries of a group cache to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Every member's, as one's own.
    Group,
    /// Only one's own and root's (the site's); the rest is pulled again into `users-v1/UID`.
    Own,
}

impl Cache {
    /// Opens (creating) a cache. The lock mode is `forced` when configured; otherwise the
    /// one recorded in the cache, or else probed here and recorded, so that every node of a
    /// shared cache uses the same kind of lock: a lock directory and a flock do not exclude
    /// each other.
    pub fn open(
        root: &Path,
        lock_timeout: Duration,
        readonly: Vec<PathBuf>,
        forced: Option<lock::Mode>,
    ) -> Result<Cache> {
        make_tops(root)?;
        let mut cache = Cache {
            root: root.to_path_buf(),
            group: None,
            lock_timeout,
            lock_mode: lock::Mode::Flock,
            readonly,
            shared: None,
            uid: crate::host::uid(),
        };
        cache.lock_mode = match forced {
            Some(m) => m,
            None => cache.recorded_lock_mode()?,
        };
        Ok(cache)
    }

    /// Shares the cache with a group. Its top-level directories that this user owns become
    /// group-owned, group-writable, setgid and sticky (see the module's doc); those of another
    /// member or of the site are left as their owner made them. Every one is opened without
    /// following a symlink and changed through its descriptor: a member who replaced one with
    /// a symlink to a victim's home would otherwise have it chowned and made group-writable
    /// (issue 11 D2). A top-level name that is not a directory is refused, naming its owner.
    /// Refused when the user is not in the group. The process umask is left alone: modes are
    /// set explicitly where the cache writes, so the task's own files keep the user's umask.
    pub fn share_with_group(&mut self, name: &str, trust: Trust) -> Result<()> {
        let err = |why: String| Error::Group {
            group: name.to_string(),
            why,
        };
        let gid = group_id(name).ok_or_else(|| err("no such group on this host".into()))?;
        // SAFETY: getgroups with a zero size only counts; then fills a buffer of that size.
        let groups: Vec<u32> = unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut());
            let mut v = vec![0; n.max(0) as usize];
            let n = libc::getgroups(n, v.as_mut_ptr());
            v.truncate(n.max(0) as usize);
            v
        };
        if !groups.contains(&gid) && crate::host::gid() != gid {
            return Err(err(format!(
                "you ({}) are not a member; ask the site's administrators to add you, or unset cache.group",
                crate::host::user_name()
            )));
        }
        // The root itself is the configured path, which may be a site's symlink: followed.
        let root = std::fs::File::open(&self.root).map_err(io(&self.root))?;
        self.share_dir(&root, &self.root, gid)?;
        for d in TOP {
            let p = self.root.join(d);
            let f = open_top(&p)?;
            self.share_dir(&f, &p, gid)?;
        }
        self.group = Some(gid);
        if trust == Trust::Own {
            self.own_area()?;
        }
        Ok(())
    }

    fn share_dir(&self, f: &File, p: &Path, gid: u32) -> Result<()> {
        use std::os::fd::AsRawFd;
        let (uid, fgid, mode) = safe::owner_and_mode(f).map_err(io(p))?;
        if uid != self.uid {
            return Ok(());
        }
        if fgid != gid {
            // SAFETY: fchown on a descriptor we hold; -1 keeps the owner.
            if unsafe { libc::fchown(f.as_raw_fd(), u32::MAX, gid) } != 0 {
                return Err(Error::at(p, std::io::Error::last_os_error()));
            }
        }
        let want = (mode & 0o7777) | TOP_GROUP_BITS;
        // Only when it differs: a metadata write per directory per task on a shared
        // filesystem is not free, and after the first it is always the same.
        if fgid != gid || mode & 0o7777 != want {
            safe::fchmod(f, want).map_err(io(p))?;
        }
        Ok(())
    }

    /// `cache.trust: self`: this user's entries go to `users-v1/UID` of the group cache, and
    /// the group cache is read only for entries this user or root owns.
    ///
    /// Why an area inside the group cache rather than the user's private cache or per-user
    /// names beside the shared entries: it is on the same filesystem, so trees still hard-link
    /// the trusted shared layers and quotas fall where the site put the cache; it keeps the
    /// layout of a cache, so every reader and `prune` work on it unchanged; and no shared name
    /// is ever contested, since nothing this user writes lands where another member's entry
    /// may already sit. A member can create `users-v1/UID` first to deny it: that is refused
    /// loudly (naming them), never used.
    fn own_area(&mut self) -> Result<()> {
        let users = self.root.join(USERS);
        match std::fs::create_dir(&users) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::at(&users, e)),
        }
        let f = safe::open(&users, Expect::Dir, Access::Read).map_err(io(&users))?;
        if let Some(gid) = self.group {
            self.share_dir(&f, &users, gid)?;
        }
        let mine = users.join(self.uid.to_string());
        match std::fs::create_dir(&mine) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::at(&mine, e)),
        }
        let f = safe::open(&mine, Expect::Dir, Access::Read).map_err(io(&mine))?;
        let (uid, _, _) = safe::owner_and_mode(&f).map_err(io(&mine))?;
        if uid != self.uid {
            return Err(Error::Squatted {
                path: mine,
                owner: safe::owner_name(uid),
            });
        }
        safe::fchmod(&f, 0o700).map_err(io(&mine))?;
        make_tops(&mine)?;
        self.shared = Some(std::mem::replace(&mut self.root, mine));
        self.group = None;
        Ok(())
    }

    /// Whether an entry owned by `uid` in the group cache is used (see [`Trust`]).
    fn trusted(&self, uid: u32) -> bool {
        uid == self.uid || uid == 0
    }

    /// Where readers look, in order: read-only site caches, the group cache (only entries of
    /// trusted owners, under `cache.trust: self`), this cache.
    fn sources(&self) -> impl Iterator<Item = (&Path, bool)> {
        self.readonly
            .iter()
            .map(|p| (p.as_path(), false))
            .chain(self.shared.iter().map(|p| (p.as_path(), true)))
            .chain(std::iter::once((self.root.as_path(), false)))
    }

    /// Readies a freshly built tree for publishing: no one but its owner may write anything in
    /// it (a layer's 1777 /tmp would otherwise be a directory every user can write in the
    /// cache), and with a group the group may read everything. Symlinks are left alone:
    /// their mode means nothing and chmod would follow them.
    pub fn share_tree(&self, root: &Path) -> Result<()> {
        use std::os::fd::AsFd;
        // By descriptor: an image may nest directories past PATH_MAX (fswalk says why).
        let want = |mode: u32, dir: bool| {
            let mode = mode & 0o7777;
            let add = match self.group {
                None => 0,
                Some(_) if dir => 0o050,
                Some(_) => 0o040 | (mode & 0o100) >> 3,
            };
            (mode & !0o022) | add
        };
        let top = safe::open(root, safe::Expect::Dir, safe::Access::Read).map_err(io(root))?;
        let meta = top.metadata().map_err(io(root))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode != want(mode, true) {
            top.set_permissions(std::fs::Permissions::from_mode(want(mode, true)))
                .map_err(io(root))?;
        }
        crate::fswalk::walk(
            top.as_fd(),
            &mut |e| {
                let ft = e.file_type();
                if ft != rustix::fs::FileType::Symlink {
                    let mode = e.stat.st_mode & 0o7777;
                    let new = want(mode, ft == rustix::fs::FileType::Directory);
                    if mode != new {
                        crate::fswalk::chmod_at(e.dir, e.name, e.stat, new)?;
                    }
                }
                Ok(crate::fswalk::Step::Descend)
            },
            &mut |_| Ok(()),
        )
        .map_err(io(root))
    }

    fn recorded_lock_mode(&self) -> Result<lock::Mode> {
        let record = self.root.join(LOCKS).join("MODE");
        if let Some(text) = safe::read(&record).map_err(io(&record))? {
            let text = String::from_utf8_lossy(&text);
            if let Some(m) = text.split_whitespace().next().and_then(|w| w.parse().ok()) {
                return Ok(m);
            }
        }
        // The first use of a cache writes in tmp-v1 and locks-v1: in a group cache another
        // member may have made either a symlink to somewhere of the user's (issue 11 D2).
        for d in [TMP, LOCKS] {
            open_top(&self.root.join(d))?;
        }
        let probe =
            lock::probe(&self.root.join(TMP), Duration::from_secs(10)).map_err(|e| Error::Io {
                path: self.root.join(TMP),
                source: std::io::Error::other(e.to_string()),
            })?;
        let note = format!(
            "{} probed by host {} pid {} at {} (flock: {}; fcntl OFD: {})\n",
            probe.mode.as_str(),
            crate::host::hostname(),
            std::process::id(),
            now(),
            lock::describe(probe.flock),
            lock::describe(probe.fcntl_ofd)
        );
        // First writer wins: a hard link fails if another process recorded a mode already.
        let tmp_dir = self.root.join(TMP);
        let (tmp, mut f) = safe::create_file_random(&tmp_dir, FILE_MODE).map_err(io(&tmp_dir))?;
        f.write_all(note.as_bytes()).map_err(io(&tmp))?;
        drop(f);
        let linked = std::fs::hard_link(&tmp, &record);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(probe.mode),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.recorded_lock_mode(),
            Err(e) => Err(Error::Io {
                path: record,
                source: e,
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The read-only site caches searched before this one.
    pub fn readonly_roots(&self) -> &[PathBuf] {
        &self.readonly
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join(BLOBS).join(d.hex())
    }

    /// The published directory of a layer, in a read-only site cache or this one.
    pub fn find_layer(&self, d: &Digest) -> Option<PathBuf> {
        self.find_entry(LAYERS, d, "layer.json")
    }

    /// `KIND/HEX/` in a read-only site cache or this one, if complete (holds `marker`).
    pub fn find_entry(&self, kind: &str, d: &Digest, marker: &str) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        self.sources()
            .map(|(r, check)| (r.join(kind).join(d.hex()), check))
            .find(|(p, check)| {
                // Only a real directory: a symlink here would lead anywhere.
                std::fs::symlink_metadata(p)
                    .is_ok_and(|m| m.is_dir() && (!check || self.trusted(m.uid())))
                    && std::fs::symlink_metadata(p.join(marker)).is_ok_and(|m| m.is_file())
            })
            .map(|(p, _)| p)
    }

    pub fn layer_dir(&self, d: &Digest) -> PathBuf {
        self.root.join(LAYERS).join(d.hex())
    }

    /// A small blob (manifest, config), checked against its digest on every read so that a
    /// damaged cache is noticed rather than trusted.
    pub fn read_blob(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        for (root, check) in self.sources() {
            let p = root.join(BLOBS).join(d.hex());
            match safe::read_owned(&p) {
                Ok(None) => continue,
                Ok(Some((_, uid))) if check && !self.trusted(uid) => continue,
                Ok(Some((bytes, _))) => {
                    let actual = sha256(&bytes);
                    if &actual != d {
                        return Err(Error::Damaged {
                            path: p,
                            why: format!("its content hashes to {actual}"),
                        });
                    }
                    return Ok(Some(bytes));
                }
                Err(e) => return Err(Error::at(&p, e)),
            }
        }
        Ok(None)
    }

    /// Stores a small blob after checking it against its digest.
    pub fn put_blob(&self, d: &Digest, bytes: &[u8], what: &str) -> Result<PathBuf> {
        let actual = sha256(bytes);
        if &actual != d {
            return Err(Error::DigestMismatch {
                what: what.into(),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        let dest = self.blob_path(d);
        if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file()) {
            return Ok(dest);
        }
        self.write_atomic(&dest, bytes)?;
        Ok(dest)
    }

    /// Writes a file under a temporary name beside `dest`, then renames it over `dest`.
    /// The file is read-only (`FILE_MODE`) whatever the umask. In a group cache, a file of
    /// another member's under `dest` cannot be replaced (the directory is sticky): EPERM.
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let tmp_dir = self.root.join(TMP);
        let (tmp, mut f) = safe::create_file_random(&tmp_dir, FILE_MODE).map_err(io(&tmp_dir))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_data())
            .map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            // Most likely another member's file in a sticky directory: say what it is.
            use std::os::unix::fs::MetadataExt;
            match std::fs::symlink_metadata(dest) {
                Ok(m) if !m.is_file() => Error::Unexpected(safe::Unexpected {
                    path: dest.to_path_buf(),
                    found: safe::kind_name(m.mode()),
                    owner: safe::owner_name(m.uid()),
                    expected: "a regular file",
                }),
                Ok(m) if m.uid() != self.uid => Error::NotYours {
                    path: dest.to_path_buf(),
                    owner: safe::owner_name(m.uid()),
                },
                _ => Error::at(dest, e),
            }
        })
    }

    /// A private work directory, removed when dropped unless published.
    pub fn work_dir(&self) -> Result<WorkDir> {
        let tmp = self.root.join(TMP);
        let p = safe::create_dir_random(&tmp).map_err(io(&tmp))?;
        Ok(WorkDir { path: Some(p) })
    }

    /// Publishes a finished work directory under `dest` with one rename. If another process
    /// published the same content first, ours is thrown away: entries are immutable.
    pub fn publish(&self, mut work: WorkDir, dest: &Path) -> Result<()> {
        let src = work.path.take().expect("work dir present until published");
        // Held across the rename, to make the published entry read-only through the same
        // inode: a directory moved to another parent must stay writable until it has moved.
        let held = safe::open(&src, Expect::Dir, Access::Read).map_err(io(&src));
        let held = match held {
            Ok(f) => f,
            Err(e) => {
                remove_tree(&src);
                return Err(e);
            }
        };
        if let Err(e) = seal_top(&held, &src) {
            remove_tree(&src);
            return Err(e);
        }
        match std::fs::rename(&src, dest) {
            Ok(()) => safe::fchmod(&held, DIR_MODE).map_err(io(dest)),
            Err(e)
                if dest.join("layer.json").is_file()
                    || matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) =>
            {
                remove_tree(&src);
                Ok(())
            }
            Err(e) => {
                remove_tree(&src);
                Err(Error::Io {
                    path: dest.to_path_buf(),
                    source: e,
                })
            }
        }
    }

    /// Takes a published entry out of the cache into a work area (which removes it when
    /// dropped), so a reader never sees half of it; gives the area and the entry's owner, or
    /// None if the entry is gone. Only this user's own entries: another member's cannot be
    /// moved out of a sticky directory, nor emptied (read-only, theirs), so they are refused
    /// as [`Error::NotYours`], naming the owner, before anything is tried.
    pub fn unpublish(&self, path: &Path) -> Result<Option<(WorkDir, String)>> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::at(path, e)),
        };
        let owner = safe::owner_name(meta.uid());
        if meta.uid() != self.uid {
            return Err(Error::NotYours {
                path: path.to_path_buf(),
                owner,
            });
        }
        if meta.is_dir() {
            // A directory moved to another parent must be writable (its `..` changes).
            let f = safe::open(path, Expect::Dir, Access::Read).map_err(io(path))?;
            safe::fchmod(&f, 0o700).map_err(io(path))?;
        }
        let work = self.work_dir()?;
        match std::fs::rename(path, work.path().join("removed")) {
            Ok(()) => Ok(Some((work, owner))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::at(path, e)),
        }
    }

    /// Takes the lock for one digest, waiting for another holder as long as the configured
    /// timeout allows. `waiting` is told once, after a second, who holds it.
    pub fn lock(&self, d: &Digest, what: &str, waiting: &dyn Fn(&str)) -> Result<LockGuard> {
        let base = self.root.join(LOCKS).join(d.hex());
        let start = Instant::now();
        let mut told = false;
        loop {
            match lock::try_acquire(self.lock_mode, &base) {
                Ok(Some(held)) => {
                    return Ok(LockGuard {
                        _held: held,
                        path: base,
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Io {
                        path: base,
                        source: e,
                    })
                }
            }
            let waited = start.elapsed();
            if !told && waited >= Duration::from_secs(1) {
                told = true;
                waiting(&format!(
                    "waiting for {what}: locked by {} ({}, {} mode)",
                    lock::holder(self.lock_mode, &base),
                    base.display(),
                    self.lock_mode.as_str()
                ));
            }
            if waited >= self.lock_timeout {
                return Err(Error::LockTimeout {
                    what: what.into(),
                    holder: lock::holder(self.lock_mode, &base),
                    path: base,
                    waited,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn lock_mode(&self) -> lock::Mode {
        self.lock_mode
    }

    pub fn ref_path(&self, name: &str) -> PathBuf {
        self.root
            .join(REFS)
            .join(format!("{}.json", sha256(name.as_bytes()).hex()))
    }

    /// This user's own record of a name whose shared record belongs to another member (who
    /// alone can replace it in the sticky directory): `refs-v1/HEX.UID.json`.
    fn ref_override_path(&self, name: &str) -> PathBuf {
        self.root.join(REFS).join(format!(
            "{}.{}.json",
            sha256(name.as_bytes()).hex(),
            self.uid
        ))
    }

    /// What a name stands for: the newest of this cache's record, this user's own override
    /// of it, and (under `cache.trust: self`) a record of the group cache this user or root
    /// wrote.
    pub fn read_ref(&self, name: &str) -> Result<Option<RefRecord>> {
        let mut found: Option<RefRecord> = None;
        let file = format!("{}.json", sha256(name.as_bytes()).hex());
        let mut candidates = vec![
            (self.ref_path(name), false),
            (self.ref_override_path(name), false),
        ];
        if let Some(s) = &self.shared {
            candidates.push((s.join(REFS).join(&file), true));
        }
        for (p, check) in candidates {
            if let Some((rec, uid)) = read_json_owned::<RefRecord>(&p)? {
                if check && !self.trusted(uid) {
                    continue;
                }
                if found.as_ref().is_none_or(|f| rec.fetched > f.fetched) {
                    found = Some(rec);
                }
            }
        }
        Ok(found)
    }

    pub fn write_ref(&self, name: &str, manifest: &Digest) -> Result<()> {
        let rec = RefRecord {
            name: name.to_string(),
            manifest: manifest.clone(),
            fetched: now(),
        };
        let bytes = serde_json::to_vec_pretty(&rec).expect("serializes");
        let p = self.ref_path(name);
        match self.foreign_owner(&p) {
            None => self.write_atomic(&p, &bytes),
            Some(_) => {
                // Another member's record: theirs to replace. Nothing to say if it agrees;
                // otherwise this user keeps its own record of the name beside it.
                let theirs = read_json::<RefRecord>(&p).ok().flatten();
                if theirs.is_some_and(|t| &t.manifest == manifest) {
                    let _ = std::fs::remove_file(self.ref_override_path(name));
                    return Ok(());
                }
                self.write_atomic(&self.ref_override_path(name), &bytes)
            }
        }
    }

    /// The owner of `p` if it exists and is not this user.
    fn foreign_owner(&self, p: &Path) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(p)
            .ok()
            .map(|m| m.uid())
            .filter(|&u| u != self.uid)
    }

    pub fn image_path(&self, manifest: &Digest) -> PathBuf {
        self.root
            .join(IMAGES)
            .join(format!("{}.json", manifest.hex()))
    }

    /// An image's record: this cache's, or (under `cache.trust: self`) the group cache's if
    /// this user or root wrote it.
    pub fn read_image(&self, manifest: &Digest) -> Result<Option<ImageRecord>> {
        if let Some(rec) = read_json(&self.image_path(manifest))? {
            return Ok(Some(rec));
        }
        if let Some(s) = &self.shared {
            let p = s.join(IMAGES).join(format!("{}.json", manifest.hex()));
            if let Some((rec, uid)) = read_json_owned(&p)? {
                if self.trusted(uid) {
                    return Ok(Some(rec));
                }
            }
        }
        Ok(None)
    }

    /// Records an image, merging its names with those of an earlier record. Concurrent
    /// writers of one image each publish a whole record; the last rename wins, which at
    /// worst drops a name that the next pull adds back.
    pub fn write_image(&self, mut rec: ImageRecord) -> Result<ImageRecord> {
        if let Some(old) = self.read_image(&rec.manifest)? {
            // Nothing new to say: a warm pull or run of a known name writes no record.
            if rec.names.iter().all(|n| old.names.contains(n)) {
                let _ = self.stamp_used(&rec.manifest);
                return Ok(old);
            }
            for n in old.names {
                if !rec.names.contains(&n) {
                    rec.names.push(n);
                }
            }
            // Another member's record cannot be replaced (sticky directory); the new name is
            // still found through its ref.
            if self
                .foreign_owner(&self.image_path(&rec.manifest))
                .is_some()
            {
                let _ = self.stamp_used(&rec.manifest);
                return Ok(rec);
            }
        }
        self.write_atomic(
            &self.image_path(&rec.manifest),
            &serde_json::to_vec_pretty(&rec).expect("serializes"),
        )?;
        Ok(rec)
    }

    /// Records that an image was just used, as the mtime of `images-v1/HEX.used`: a stamp
    /// per run, not a rewrite of the record, and skipped when stamped in the last minute, so
    /// 512 tasks starting at once cost the shared filesystem a few stats.
    ///
    /// The stamp is group-writable (any member's run moves it), so it is opened as
    /// [`safe::open`] does: a FIFO planted there is refused, not waited on (issue 11 D5).
    pub fn stamp_used(&self, manifest: &Digest) -> Result<()> {
        let p = self
            .root
            .join(IMAGES)
            .join(format!("{}.used", manifest.hex()));
        let fresh = std::fs::symlink_metadata(&p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60));
        if !fresh {
            let f =
                safe::open_or_create(&p, Access::Write, safe::SHARED_FILE_MODE).map_err(io(&p))?;
            safe::touch(&f).map_err(io(&p))?;
        }
        Ok(())
    }

    /// When the image was last pulled or run.
    pub fn last_used(&self, rec: &ImageRecord) -> u64 {
        let p = self
            .root
            .join(IMAGES)
            .join(format!("{}.used", rec.manifest.hex()));
        let stamped = std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        rec.last_used.max(stamped)
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut out: Vec<ImageRecord> = Vec::new();
        let dirs = std::iter::once((self.root.join(IMAGES), false))
            .chain(self.shared.iter().map(|s| (s.join(IMAGES), true)));
        for (dir, check) in dirs {
            for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let p = entry.map_err(io(&dir))?.path();
                if p.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                if let Some((mut rec, uid)) = read_json_owned::<ImageRecord>(&p)? {
                    if (check && !self.trusted(uid))
                        || out.iter().any(|o| o.manifest == rec.manifest)
                    {
                        continue;
                    }
                    rec.last_used = self.last_used(&rec);
                    out.push(rec);
                }
            }
        }
        out.sort_by(|a, b| a.names.first().cmp(&b.names.first()));
        Ok(out)
    }

    /// Removes work areas left by processes of this host that no longer exist, those of
    /// other hosts older than a day (their owner cannot be asked), and any work area,
    /// whatever its name says, untouched for [`STALE_WORK_SECS`]: no pull or tree build
    /// keeps one that long, and a pid can be reused by a live process meanwhile.
    pub fn reclaim(&self) -> usize {
        let dir = self.root.join(TMP);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let me = crate::host::hostname();
        let mut n = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.rsplitn(3, '.');
            let (_random, pid, host) = (parts.next(), parts.next(), parts.next());
            let old = work_age(&e.path()) > Duration::from_secs(STALE_WORK_SECS);
            let stale = match (pid.and_then(|p| p.parse::<i32>().ok()), host) {
                (Some(pid), Some(host)) if host == me => {
                    old || (pid != std::process::id() as i32 && !process_alive(pid))
                }
                _ => old,
            };
            if stale {
                remove_tree(&e.path());
                n += 1;
            }
        }
        n
    }
}

/// Age after which `reclaim` removes any work area in `tmp-v1`, whoever made it.
pub const STALE_WORK_SECS: u64 = 86400;

/// How long since a work area last changed: the newest mtime of it and its direct entries,
/// as the first thing a pull or build does is create `root/` (or write the file) in it.
fn work_age(p: &Path) -> Duration {
    use std::os::unix::fs::MetadataExt;
    let newest = |m: &std::fs::Metadata| m.mtime();
    let mut t = match std::fs::symlink_metadata(p) {
        Ok(m) => newest(&m),
        Err(_) => return Duration::ZERO,
    };
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten().take(64) {
            if let Ok(m) = e.path().symlink_metadata() {
                t = t.max(newest(&m));
            }
        }
    }
    Duration::from_secs((now() as i64 - t).max(0) as u64)
}

fn group_id(name: &str) -> Option<u32> {
    crate::host::accounts::group_id(name)
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// A top-level directory, opened as [`safe::open`] does; made again if it went missing (a
/// warm start checks only that `trees-v1` exists).
fn open_top(p: &Path) -> Result<File> {
    match safe::open(p, Expect::Dir, Access::Read) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::create_dir(p) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::at(p, e))
                }
                _ => {}
            }
            safe::open(p, Expect::Dir, Access::Read).map_err(io(p))
        }
        r => r.map_err(io(p)),
    }
}

/// Creates the top-level directories a cache lacks. TREES is made last: once it exists, so
/// do the others (a warm start checks one).
fn make_tops(root: &Path) -> Result<()> {
    if !std::fs::symlink_metadata(root.join(TREES)).is_ok_and(|m| m.is_dir()) {
        for d in TOP {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// Makes what a work area holds beside its tree read-only before it is published: records
/// (`layer.json`, `tree.json`) are files of [`FILE_MODE`] and other directories (a tree's
/// `mnt`) of [`DIR_MODE`]. `root/` had [`Cache::share_tree`].
fn seal_top(dir: &File, path: &Path) -> Result<()> {
    for e in std::fs::read_dir(path).map_err(io(path))? {
        let e = e.map_err(io(path))?;
        let p = e.path();
        let t = e.file_type().map_err(io(&p))?;
        if t.is_file() {
            let f = safe::open(&p, Expect::File, Access::Read).map_err(io(&p))?;
            safe::fchmod(&f, FILE_MODE).map_err(io(&p))?;
        } else if t.is_dir() && e.file_name() != "root" {
            let f = safe::open(&p, Expect::Dir, Access::Read).map_err(io(&p))?;
            safe::fchmod(&f, DIR_MODE).map_err(io(&p))?;
        }
    }
    let _ = dir;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<Option<T>> {
    Ok(read_json_owned(p)?.map(|(t, _)| t))
}

/// A JSON record and its owner, read as [`safe::open`] does.
fn read_json_owned<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<Option<(T, u32)>> {
    match safe::read_owned(p).map_err(io(p))? {
        Some((b, uid)) => serde_json::from_slice(&b)
            .map(|t| Some((t, uid)))
            .map_err(|e| Error::Damaged {
                path: p.to_path_buf(),
                why: e.to_string(),
            }),
        None => Ok(None),
    }
}

/// Removes a tree that may contain read-only directories (image layers often do), by
/// descriptor: a hostile image's tree may be deeper than PATH_MAX or the descriptor limit
/// allow a path-based removal to go (see [`crate::fswalk`]).
pub fn remove_tree(p: &Path) {
    let _ = crate::fswalk::remove(p);
}

pub struct WorkDir {
    path: Option<PathBuf>,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("work dir present until published")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            remove_tree(&p);
        }
    }
}

pub struct LockGuard {
    _held: lock::Held,
    path: PathBuf,
}

impl LockGuard {
    /// The lock's name, without the mode's extension.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub mod maintain;

pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::from_sha256(&Sha256::digest(bytes))
}

/// Hashes and counts what passes through it, so a blob is verified in the same pass that
/// unpacks it.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    pub bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads to the end (the tar reader stops at its end marker; the digest covers it all).
    pub fn finish(mut self) -> std::io::Result<(Digest, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((Digest::from_sha256(&self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, Cache) {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), Duration::from_secs(2), vec![], None).unwrap();
        (d, c)
    }

    #[test]
    fn blobs_are_checked_on_write_and_read() {
        let (_d, c) = cache();
        let good = sha256(b"hello");
        assert!(c
            .put_blob(&good, b"hellO", "test blob")
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        assert!(
            !c.blob_path(&good).exists(),
            "nothing published on mismatch"
        );
        c.put_blob(&good, b"hello", "test blob").unwrap();
        assert_eq!(c.read_blob(&good).unwrap().unwrap(), b"hello");
        // Published blobs are read-only; their owner can still make one writable.
        let p = c.blob_path(&good);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&p, b"tampered").unwrap();
        assert!(c
            .read_blob(&good)
            .unwrap_err()
            .to_string()
            .contains("damaged"));
    }

    #[test]
    fn lock_excludes_and_times_out_naming_the_setting() {
        let (_d, c) = cache();
        let dg = sha256(b"x");
        let g = c.lock(&dg, "layer x", &|_| {}).unwrap();
        // A second process, since flock is per open file description and we want the real case.
        let out = crate::host::probe::in_child(Duration::from_secs(20), |r| {
            let told = std::cell::RefCell::new(String::new());
            match c.lock(&dg, "layer x", &|m| told.borrow_mut().push_str(m)) {
                Ok(_) => 0,
                Err(e) => {
                    r.push_str(&format!("{e}\n{}", told.borrow()));
                    1
                }
            }
        })
        .unwrap();
        let crate::host::probe::Outcome::Exited(1, text) = out else {
            panic!("{out:?}")
        };
        assert!(
            text.contains("LPMX_LOCK_TIMEOUT") && text.contains("layer x"),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "names the holder: {text}"
        );
        assert!(
            text.contains("waiting for layer x"),
            "says it waits: {text}"
        );
        drop(g);
        let g2 = c.lock(&dg, "layer x", &|_| {}).unwrap();
        assert!(g2.path().ends_with(dg.hex()));
        assert_eq!(c.lock_mode(), lock::Mode::Flock, "probed on a local disk");
        let recorded = std::fs::read_to_string(c.root().join(LOCKS).join("MODE")).unwrap();
        assert!(recorded.starts_with("flock probed by host"), "{recorded}");
    }

    #[test]
    fn work_dirs_vanish_unless_published() {
        let (_d, c) = cache();
        let w = c.work_dir().unwrap();
        let p = w.path().to_path_buf();
        std::fs::create_dir(p.join("ro")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.join("ro"), std::fs::Permissions::from_mode(0o500)).unwrap();
        drop(w);
        assert!(!p.exists());
        let w = c.work_dir().unwrap();
        std::fs::write(w.path().join("layer.json"), "{}").unwrap();
        let dest = c.layer_dir(&sha256(b"l"));
        c.publish(w, &dest).unwrap();
        assert!(dest.join("layer.json").is_file());
        // A second publisher of the same content loses quietly.
        let w = c.work_dir().unwrap();
        let p = w.path().to_path_buf();
        std::fs::write(p.join("layer.json"), "{}").unwrap();
        c.publish(w, &dest).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn reclaim_removes_dead_owners_only() {
        let (d, c) = cache();
        let host = crate::host::hostname();
        let dead = d.path().join(TMP).join(format!("{host}.999999999.0"));
        let dead_file = d.path().join(TMP).join(format!("{host}.999999999.1"));
        let mine = c.work_dir().unwrap();
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(&dead_file, "half a record").unwrap();
        assert_eq!(c.reclaim(), 2);
        assert!(!dead.exists() && !dead_file.exists() && mine.path().exists());
        // Past the age limit, any name goes: a reused pid, or a name of another scheme.
        let alive = d.path().join(TMP).join(format!("{host}.1.0"));
        let other = d.path().join(TMP).join("Xq3vTzLr");
        let fresh = d.path().join(TMP).join("fresh-unknown");
        for p in [&alive, &other, &fresh] {
            std::fs::create_dir_all(p.join("root/a")).unwrap();
        }
        let old = SystemTime::now() - Duration::from_secs(STALE_WORK_SECS + 60);
        for p in [&alive, &other] {
            for q in [p.join("root"), p.clone()] {
                File::open(&q).unwrap().set_modified(old).unwrap();
            }
        }
        assert_eq!(c.reclaim(), 2);
        assert!(!alive.exists() && !other.exists() && fresh.exists() && mine.path().exists());
    }
}
