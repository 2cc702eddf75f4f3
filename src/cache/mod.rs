//! The image cache: content-addressed, shared between processes and nodes, crash-safe.
//!
//! ```text
//! CACHE/blobs-v1/HEX          manifests and configs, named by their sha256
//! CACHE/layers-v1/HEX/        an extracted layer: root/ and layer.json (stats, whiteouts)
//! CACHE/images-v1/HEX.json    an image (by manifest digest): config, layers, names, last use
//! CACHE/refs-v1/HEX.json      a name (by sha256 of "registry/repo:tag") -> manifest digest
//! CACHE/locks-v1/HEX.lock     one lock file per digest, naming its holder
//! CACHE/tmp-v1/HOST.PID.N/    private work areas, published by one rename
//! ```
//! Entries are immutable once published; a directory or file exists under its final name only
//! when complete. The `-v1` suffixes let a later format live beside this one.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::lock;
use crate::reference::Digest;

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub const BLOBS: &str = "blobs-v1";
pub const LAYERS: &str = "layers-v1";
pub const IMAGES: &str = "images-v1";
pub const REFS: &str = "refs-v1";
pub const LOCKS: &str = "locks-v1";
pub const TMP: &str = "tmp-v1";
/// Flattened image trees, built by `rootfs`.
pub const TREES: &str = "trees-v1";

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
    pub stats: crate::unpack::LayerStats,
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
}

static TMP_SEQ: AtomicU32 = AtomicU32::new(0);

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
        // TREES is made last: once it exists, so do the others (a warm start checks one).
        if !root.join(TREES).is_dir() {
            for d in [BLOBS, LAYERS, IMAGES, REFS, LOCKS, TMP, TREES] {
                let p = root.join(d);
                std::fs::create_dir_all(&p).map_err(|e| Error::Io {
                    path: p.clone(),
                    source: e,
                })?;
            }
        }
        let mut cache = Cache {
            root: root.to_path_buf(),
            group: None,
            lock_timeout,
            lock_mode: lock::Mode::Flock,
            readonly,
        };
        cache.lock_mode = match forced {
            Some(m) => m,
            None => cache.recorded_lock_mode()?,
        };
        Ok(cache)
    }

    /// Shares the cache with a group: its directories become group-owned, group-writable and
    /// setgid (so everything created below inherits the group), and this process creates
    /// files group-writable. Refused when the user is not in the group.
    pub fn share_with_group(&mut self, name: &str) -> Result<()> {
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
        // SAFETY: umask only changes this process's file creation mask.
        unsafe { libc::umask(0o002) };
        let me = crate::host::uid();
        for d in std::iter::once(PathBuf::new())
            .chain([BLOBS, LAYERS, IMAGES, REFS, LOCKS, TMP, TREES].map(PathBuf::from))
        {
            let p = self.root.join(d);
            let meta = std::fs::metadata(&p).map_err(io(&p))?;
            use std::os::unix::fs::MetadataExt;
            if meta.uid() != me {
                continue;
            }
            std::os::unix::fs::chown(&p, None, Some(gid)).map_err(io(&p))?;
            std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode(meta.mode() & 0o7777 | 0o2070),
            )
            .map_err(io(&p))?;
        }
        self.group = Some(gid);
        Ok(())
    }

    /// Gives the group what it needs in a freshly built tree: read on files, and read, write
    /// and search on directories so any member can prune it later. A no-op without a group.
    pub fn share_tree(&self, root: &Path) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        use std::os::unix::fs::MetadataExt;
        for e in walkdir::WalkDir::new(root) {
            let e = e.map_err(|e| Error::Io {
                path: root.to_path_buf(),
                source: e.into(),
            })?;
            if e.file_type().is_symlink() {
                continue;
            }
            let meta = e.metadata().map_err(|e| Error::Io {
                path: e.path().unwrap_or(root).to_path_buf(),
                source: e.into(),
            })?;
            let add = if meta.is_dir() { 0o2070 } else { 0o040 };
            if meta.mode() & add != add {
                std::fs::set_permissions(
                    e.path(),
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777 | add),
                )
                .map_err(io(e.path()))?;
            }
        }
        Ok(())
    }

    fn recorded_lock_mode(&self) -> Result<lock::Mode> {
        let record = self.root.join(LOCKS).join("MODE");
        if let Ok(text) = std::fs::read_to_string(&record) {
            if let Some(m) = text.split_whitespace().next().and_then(|w| w.parse().ok()) {
                return Ok(m);
            }
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
        let tmp = self.root.join(TMP).join(tmp_name());
        std::fs::write(&tmp, note).map_err(io(&tmp))?;
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
        self.readonly
            .iter()
            .chain(std::iter::once(&self.root))
            .map(|r| r.join(kind).join(d.hex()))
            .find(|p| p.join(marker).is_file())
    }

    pub fn layer_dir(&self, d: &Digest) -> PathBuf {
        self.root.join(LAYERS).join(d.hex())
    }

    /// A small blob (manifest, config), checked against its digest on every read so that a
    /// damaged cache is noticed rather than trusted.
    pub fn read_blob(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        for root in self.readonly.iter().chain(std::iter::once(&self.root)) {
            let p = root.join(BLOBS).join(d.hex());
            match std::fs::read(&p) {
                Ok(bytes) => {
                    let actual = sha256(&bytes);
                    if &actual != d {
                        return Err(Error::Damaged {
                            path: p,
                            why: format!("its content hashes to {actual}"),
                        });
                    }
                    return Ok(Some(bytes));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io { path: p, source: e }),
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
        if dest.is_file() {
            return Ok(dest);
        }
        self.write_atomic(&dest, bytes)?;
        Ok(dest)
    }

    /// Writes a file under a temporary name beside `dest`, then renames it over `dest`.
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.root.join(TMP).join(tmp_name());
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_data())
            .map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::Io {
                path: dest.to_path_buf(),
                source: e,
            }
        })
    }

    /// A private work directory, removed when dropped unless published.
    pub fn work_dir(&self) -> Result<WorkDir> {
        let p = self.root.join(TMP).join(tmp_name());
        std::fs::create_dir(&p).map_err(io(&p))?;
        Ok(WorkDir { path: Some(p) })
    }

    /// Publishes a finished work directory under `dest` with one rename. If another process
    /// published the same content first, ours is thrown away: entries are immutable.
    pub fn publish(&self, mut work: WorkDir, dest: &Path) -> Result<()> {
        let src = work.path.take().expect("work dir present until published");
        match std::fs::rename(&src, dest) {
            Ok(()) => Ok(()),
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

    pub fn read_ref(&self, name: &str) -> Result<Option<RefRecord>> {
        read_json(&self.ref_path(name))
    }

    pub fn write_ref(&self, name: &str, manifest: &Digest) -> Result<()> {
        let rec = RefRecord {
            name: name.to_string(),
            manifest: manifest.clone(),
            fetched: now(),
        };
        self.write_atomic(
            &self.ref_path(name),
            &serde_json::to_vec_pretty(&rec).expect("serializes"),
        )
    }

    pub fn image_path(&self, manifest: &Digest) -> PathBuf {
        self.root
            .join(IMAGES)
            .join(format!("{}.json", manifest.hex()))
    }

    pub fn read_image(&self, manifest: &Digest) -> Result<Option<ImageRecord>> {
        read_json(&self.image_path(manifest))
    }

    /// Records an image, merging its names with those of an earlier record. Concurrent
    /// writers of one image each publish a whole record; the last rename wins, which at
    /// worst drops a name that the next pull adds back.
    pub fn write_image(&self, mut rec: ImageRecord) -> Result<ImageRecord> {
        if let Some(old) = self.read_image(&rec.manifest)? {
            // Nothing new to say: a warm pull or run of a known name writes no record.
            if rec.names.iter().all(|n| old.names.contains(n)) {
                self.stamp_used(&rec.manifest);
                return Ok(old);
            }
            for n in old.names {
                if !rec.names.contains(&n) {
                    rec.names.push(n);
                }
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
    pub fn stamp_used(&self, manifest: &Digest) {
        let p = self
            .root
            .join(IMAGES)
            .join(format!("{}.used", manifest.hex()));
        let fresh = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60));
        if !fresh {
            if let Ok(f) = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p)
            {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
        }
    }

    /// When the image was last pulled or run.
    pub fn last_used(&self, rec: &ImageRecord) -> u64 {
        let p = self
            .root
            .join(IMAGES)
            .join(format!("{}.used", rec.manifest.hex()));
        let stamped = std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        rec.last_used.max(stamped)
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join(IMAGES);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let p = entry.map_err(io(&dir))?.path();
            if p.extension().is_some_and(|e| e == "json") {
                if let Some(mut rec) = read_json::<ImageRecord>(&p)? {
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
            let (_seq, pid, host) = (parts.next(), parts.next(), parts.next());
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
    crate::accounts::group_id(name)
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

fn tmp_name() -> String {
    format!(
        "{}.{}.{}",
        crate::host::hostname(),
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<Option<T>> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Damaged {
                path: p.to_path_buf(),
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            path: p.to_path_buf(),
            source: e,
        }),
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
        std::fs::write(c.blob_path(&good), b"tampered").unwrap();
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
        let out = crate::probe::in_child(Duration::from_secs(20), |r| {
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
        let crate::probe::Outcome::Exited(1, text) = out else {
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
