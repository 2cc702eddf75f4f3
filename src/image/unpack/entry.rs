//! What a tar member becomes, and with which mode, from its name and header alone: shared by
//! the extractor and by `cache verify`.

use tar::EntryType;

use super::resolve::MAX_PATH;
use super::LayerPath;

/// What a tar member becomes, decided from its name and type alone. Shared by the unpacker
/// and by `cache verify`, which rebuilds from a blob what unpacking it must have produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// PAX and GNU long-name headers: part of the next member, not members.
    Header,
    /// `.wh..wh..opq`: the directory (relative) hides lower layers' entries.
    Opaque(LayerPath),
    /// `.wh.NAME`: the path (relative) deletes a lower layer's entry.
    Whiteout(LayerPath),
    /// Character and block devices: never created.
    Device,
    /// Unknown entry types and AUFS metadata: skipped.
    Other,
    Dir,
    File,
    Symlink,
    Link,
    Fifo,
}

/// Classifies a member by its raw name and type; `Err` is why the archive is refused.
pub fn classify(raw: &[u8], ty: EntryType) -> std::result::Result<Kind, String> {
    if matches!(
        ty,
        EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink
    ) {
        return Ok(Kind::Header);
    }
    let (comps, escaped) = normalize(raw);
    if comps.iter().any(|c| c.contains(&0)) {
        return Err("NUL byte in name".into());
    }
    if raw.len() > MAX_PATH {
        return Err(format!("name longer than {MAX_PATH} bytes"));
    }
    if let Some((base, dir)) = comps.split_last() {
        if *base == b".wh..wh..opq" {
            if escaped {
                return Err("opaque marker outside the layer root".into());
            }
            return Ok(Kind::Opaque(LayerPath(join(dir))));
        }
        if comps.iter().any(|c| c.starts_with(b".wh..wh.")) {
            return Ok(Kind::Other);
        }
        if let Some(name) = base.strip_prefix(b".wh.") {
            if escaped || matches!(name, b"" | b"." | b"..") {
                return Err("whiteout outside the layer root".into());
            }
            let mut target = dir.to_vec();
            target.push(name);
            return Ok(Kind::Whiteout(LayerPath(join(&target))));
        }
    }
    if ty == EntryType::Directory || (ty == EntryType::Regular && raw.ends_with(b"/")) {
        return Ok(Kind::Dir);
    }
    Ok(match ty {
        EntryType::Char | EntryType::Block => Kind::Device,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
        EntryType::Symlink => Kind::Symlink,
        EntryType::Link => Kind::Link,
        EntryType::Fifo => Kind::Fifo,
        _ => Kind::Other,
    })
}

/// The mode a directory entry gets: setuid and setgid dropped, sticky kept, and the owner
/// always `rwx` so the cache can list and delete the tree.
pub fn dir_mode(raw: u32) -> u32 {
    (raw & 0o1777) | 0o700
}

/// The mode a file or FIFO gets: setuid, setgid and sticky dropped, the owner always `rw`.
pub fn file_mode(raw: u32) -> u32 {
    (raw & 0o777) | 0o600
}

/// The mode of a parent directory the archive leaves out, as tar makes it.
pub const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Splits a member name into components, dropping empty and `.` ones and clamping `..` at
/// the root. The flag says whether a `..` tried to climb above it.
pub fn normalize(raw: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut comps: Vec<&[u8]> = Vec::new();
    let mut escaped = false;
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => escaped |= comps.pop().is_none(),
            c => comps.push(c),
        }
    }
    (comps, escaped)
}

pub(super) fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}
