//! Unpacking one image layer into a directory, rootless, without trusting the archive.
//!
//! A layer is input from whoever published the image, and the directory it lands in sits in
//! the user's cache next to everything else they own. So nothing here writes by path: each
//! entry's parent directory is resolved *inside* the destination, the way a chroot would see
//! it, and the last component is created with `*at` calls relative to that directory fd that
//! never follow a symlink. The tar crate's own `unpack` is not used at all: it applies
//! ownership and follows symlinks on some paths.
//!
//! Resolution uses `openat2(RESOLVE_IN_ROOT)` where the kernel has it (5.6+), and a userspace
//! walk with the same semantics where it does not: RHEL 8's 4.18 is still common on clusters.
//!
//! Policy an image author may notice:
//! - `..` and a leading `/` in member names are clamped at the layer root (containerd does the
//!   same), so `../../x` lands at `x`; symlinks met while resolving a parent are followed as if
//!   the layer root were `/`. Symlinks themselves are stored exactly as written.
//! - The later of two entries with the same name wins, as with tar, except that a directory
//!   entry over an existing directory only updates its metadata.
//! - An entry below a *dangling* symlink created by the layer is an error rather than a
//!   reason to create the symlink's target.
//! - Character and block devices are never created; FIFOs are, unless the filesystem refuses.
//!   Ownership, xattrs and setuid/setgid are dropped; the owner always keeps `rw` on files and
//!   `rwx` on directories so the cache can later read and delete the tree.
//! - Entry types tar does not define for files (GNU volume labels, multi-volume parts, vendor
//!   letters) and AUFS metadata (`.wh..wh.*`) are skipped and counted in `skipped_other`.
//! - Whiteouts are reported, not applied: they delete files of *lower* layers, which are not
//!   here. They are reported as bytes ([`LayerPath`]): a name that is not UTF-8 deletes
//!   exactly that name, never a lossy one that would delete the wrong file.
//! - An archive without its end-of-archive marker is treated as truncated, though Go's tar
//!   reader (Docker, containerd) accepts one: a stream cut at a block boundary looks the same.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: unsupported layer compression {compression} (media type {media_type:?})")]
    UnsupportedCompression {
        what: String,
        media_type: String,
        compression: String,
    },
    #[error("{what}: cannot read the start of the layer stream: {source}")]
    Peek {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: cannot set up {compression} decompression: {source}")]
    Decompressor {
        what: String,
        compression: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{what}: cannot open destination {}: {source}", dest.display())]
    Dest {
        what: String,
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}: destination {} is not an empty directory", dest.display())]
    DestNotEmpty { what: String, dest: PathBuf },
    /// The tar stream (or the decompressor below it) failed to parse.
    #[error(
        "{what}: corrupt or truncated layer archive{}: {source}",
        after_entry(after)
    )]
    Corrupt {
        what: String,
        /// The last entry read successfully, to locate the damage.
        after: Option<String>,
        #[source]
        source: io::Error,
    },
    #[error("{what}: layer archive is truncated: {detail}")]
    Truncated { what: String, detail: String },
    /// The archive asks for something this module refuses to do.
    #[error("{what}: entry {entry}: {reason}")]
    Invalid {
        what: String,
        entry: String,
        reason: String,
    },
    #[error(
        "{what}: hardlink {entry} -> {target}: {reason}{}",
        source_suffix(source)
    )]
    Hardlink {
        what: String,
        entry: String,
        target: String,
        reason: String,
        #[source]
        source: Option<io::Error>,
    },
    #[error("{what}: entry {entry}: cannot {op}: {source}")]
    Io {
        what: String,
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn after_entry(after: &Option<String>) -> String {
    match after {
        Some(e) => format!(" after entry {e}"),
        None => String::new(),
    }
}

fn source_suffix(source: &Option<io::Error>) -> String {
    match source {
        Some(e) => format!(": {e}"),
        None => String::new(),
    }
}

fn io_err(what: &str, entry: &str, op: &'static str, e: impl Into<io::Error>) -> Error {
    Error::Io {
        what: what.to_owned(),
        entry: entry.to_owned(),
        op,
        source: e.into(),
    }
}

/// A path inside a layer (relative, no leading slash), as bytes: Linux names need not be
/// UTF-8, and an image built by podman may delete `gone-\xff` in a later layer. Recorded in
/// `layer.json` as a string when it is UTF-8 (every record written before this type), else
/// as `{"hex": "..."}`; both are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerPath(pub Vec<u8>);

impl LayerPath {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }
}

impl From<&str> for LayerPath {
    fn from(s: &str) -> LayerPath {
        LayerPath(s.as_bytes().to_vec())
    }
}

impl PartialEq<&str> for LayerPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl std::fmt::Display for LayerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for LayerPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hex", &hex::encode(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for LayerPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Hex { hex: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(LayerPath(t.into_bytes())),
            Repr::Hex { hex } => hex::decode(&hex)
                .map(LayerPath)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Archive members, not counting PAX and GNU long-name headers.
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub fifos: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Character and block devices, and FIFOs the filesystem refused.
    pub skipped_devices: u64,
    /// Unknown entry types and AUFS metadata (`.wh..wh.*` other than the opaque marker).
    pub skipped_other: u64,
    pub dropped_setid: u64,
    /// Entries whose uid or gid is not 0: that ownership is lost, everything belongs to the
    /// user who unpacked.
    pub ignored_ownership: u64,
    /// paths (relative to the layer root, no leading slash) deleted by `.wh.NAME` entries
    pub whiteouts: Vec<LayerPath>,
    /// directories (relative) marked opaque by `.wh..wh..opq`
    pub opaque_dirs: Vec<LayerPath>,
}

pub mod compress;
pub mod entry;
pub mod extract;
pub mod resolve;
#[cfg(test)]
mod tests;
