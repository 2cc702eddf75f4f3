//! Layer compression: what the media type declares, what the first bytes show, and a reader
//! that stops at the size the manifest declares.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use super::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

enum Declared {
    Known(Compression),
    Unsupported(String),
    Unknown,
}

fn declared(media_type: &str) -> Declared {
    let mt = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // OCI spells it `…tar+gzip`, Docker `…tar.gzip`; the non-distributable and foreign
    // variants of both keep the same suffixes.
    for (suffix, c) in [
        ("tar", Compression::None),
        ("tar+gzip", Compression::Gzip),
        ("tar.gzip", Compression::Gzip),
        ("tar+gz", Compression::Gzip),
        ("tar.gz", Compression::Gzip),
        ("tar+zstd", Compression::Zstd),
        ("tar.zstd", Compression::Zstd),
        ("application/gzip", Compression::Gzip),
        ("application/x-gzip", Compression::Gzip),
        ("application/zstd", Compression::Zstd),
    ] {
        if mt.ends_with(suffix) {
            return Declared::Known(c);
        }
    }
    // `…tar+bzip2`, `…tar+xz` were in early OCI drafts; saying so beats a tar parse error.
    for sep in ["tar+", "tar."] {
        if let Some(pos) = mt.rfind(sep) {
            return Declared::Unsupported(mt[pos + sep.len()..].to_owned());
        }
    }
    Declared::Unknown
}

enum Magic {
    Known(Compression),
    Unsupported(&'static str),
    Plain,
}

fn sniff(b: &[u8]) -> Magic {
    if b.starts_with(&[0x1f, 0x8b]) {
        Magic::Known(Compression::Gzip)
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        // zstd skippable frames (0x184D2A50..5F) may precede the data, and the decoder skips them.
        || (b.len() >= 4 && b[0] & 0xf0 == 0x50 && b[1..4] == [0x2a, 0x4d, 0x18])
    {
        Magic::Known(Compression::Zstd)
    } else if b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Magic::Unsupported("xz")
    } else if b.len() >= 10
        && b.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&b[3])
        // The block magic too: a plain tar may well start with a file named "BZh…".
        && b[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
    {
        Magic::Unsupported("bzip2")
    } else {
        Magic::Plain
    }
}

/// Wraps a layer blob in the decompressor its media type names (`…tar`, `…tar+gzip`,
/// `…tar.gzip` from Docker, `…tar+zstd`). When the media type is unknown or says nothing
/// (empty, `application/octet-stream`), the first bytes decide; only those few bytes are
/// read here.
pub fn decompress<'a>(r: impl Read + 'a, media_type: &str) -> Result<Box<dyn Read + 'a>> {
    decompress_layer(r, media_type, &format!("layer ({media_type:?})"))
}

/// [`decompress`] with a description of the layer for error messages.
pub fn decompress_layer<'a>(
    mut r: impl Read + 'a,
    media_type: &str,
    what: &str,
) -> Result<Box<dyn Read + 'a>> {
    let unsupported = |compression: &str| Error::UnsupportedCompression {
        what: what.to_owned(),
        media_type: media_type.to_owned(),
        compression: compression.to_owned(),
    };
    match declared(media_type) {
        Declared::Known(c) => return wrap(Box::new(r), c, what),
        Declared::Unsupported(c) => return Err(unsupported(&c)),
        Declared::Unknown => {}
    }
    let mut peek = [0u8; 10];
    let mut n = 0;
    while n < peek.len() {
        match r.read(&mut peek[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Peek {
                    what: what.to_owned(),
                    source,
                })
            }
        }
    }
    let c = match sniff(&peek[..n]) {
        Magic::Known(c) => c,
        Magic::Unsupported(name) => return Err(unsupported(name)),
        Magic::Plain => Compression::None,
    };
    let replay = io::Cursor::new(peek).take(n as u64);
    wrap(Box::new(replay.chain(r)), c, what)
}

fn wrap<'a>(r: Box<dyn Read + 'a>, c: Compression, what: &str) -> Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => r,
        // Multi-member: pigz and some registries' recompressors emit concatenated members.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(
                zstd::stream::read::Decoder::new(r).map_err(|source| Error::Decompressor {
                    what: what.to_owned(),
                    compression: "zstd",
                    source,
                })?,
            )
        }
    })
}

/// Stops a blob at the size its manifest declares. The size is checked while reading rather
/// than once the blob is in: a 3 MB blob declared as 1,000 bytes otherwise decompresses (and
/// unpacks) hundreds of megabytes before its digest can fail. No byte past the declared size
/// reaches the decompressor: the read that crosses it fails instead, and records in `over`
/// how many bytes had arrived by then, so the caller can name both sizes whatever layer of
/// the decompressor and tar parser reports the failure.
pub struct Capped<'c, R> {
    inner: R,
    declared: u64,
    got: u64,
    over: &'c std::cell::Cell<Option<u64>>,
}

impl<'c, R: Read> Capped<'c, R> {
    pub fn new(inner: R, declared: u64, over: &'c std::cell::Cell<Option<u64>>) -> Self {
        Capped {
            inner,
            declared,
            got: 0,
            over,
        }
    }
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(received) = self.over.get() {
            return Err(too_large(self.declared, received));
        }
        let n = self.inner.read(buf)?;
        let received = self.got + n as u64;
        if received > self.declared {
            self.over.set(Some(received));
            return Err(too_large(self.declared, received));
        }
        self.got = received;
        Ok(n)
    }
}

fn too_large(declared: u64, received: u64) -> io::Error {
    io::Error::other(format!(
        "the blob is larger than the {declared} bytes its manifest declares \
         ({received} received when reading stopped)"
    ))
}
