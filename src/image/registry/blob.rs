//! Reading a blob body, resumed with a Range request where a connection broke.

use std::io::Read;

use reqwest::blocking::Response;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use super::{Client, Result};
use crate::image::reference::Digest;
use crate::image::reference::Remote;

impl Client {
    /// Opens a blob for streaming. The reader resumes with a Range request if the connection
    /// breaks, so the caller sees one uninterrupted stream.
    pub fn blob(&self, r: &Remote, digest: &Digest) -> Result<BlobReader<'_>> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let resp = self.send(r, &url, &|h| h.get(&url))?;
        Ok(BlobReader {
            client: self,
            remote: r.clone(),
            url,
            length: resp.content_length(),
            resp,
            offset: 0,
            resumes: 0,
        })
    }
}

/// A blob body that resumes where it broke off.
pub struct BlobReader<'a> {
    client: &'a Client,
    remote: Remote,
    url: String,
    resp: Response,
    /// The whole blob's length, from the first response (a resumed one is shorter).
    length: Option<u64>,
    offset: u64,
    resumes: u32,
}

impl BlobReader<'_> {
    /// The length of the whole blob, if the registry said.
    pub fn content_length(&self) -> Option<u64> {
        self.length
    }

    fn resume(&mut self) -> std::io::Result<()> {
        let range = format!("bytes={}-", self.offset);
        let url = self.url.clone();
        let resp = self
            .client
            .send(&self.remote, &url, &|h| h.get(&url).header(RANGE, &range))
            .map_err(std::io::Error::other)?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(std::io::Error::other(format!(
                "registry {} cannot resume {} (answered {} to a Range request)",
                self.remote.registry,
                self.url,
                resp.status()
            )));
        }
        // A 206 for some other range would splice the wrong bytes into the blob.
        let content_range = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(start) = range_start(content_range) {
            if start != self.offset {
                return Err(std::io::Error::other(format!(
                    "registry {} cannot resume {} at byte {}: it sent Content-Range {content_range}",
                    self.remote.registry, self.url, self.offset
                )));
            }
        }
        self.resp = resp;
        Ok(())
    }
}

/// The first byte of `bytes 500-999/1000`.
pub(super) fn range_start(content_range: &str) -> Option<u64> {
    let spec = content_range.trim().strip_prefix("bytes")?.trim_start();
    spec.split_once('-')?.0.trim().parse().ok()
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.resp.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if self.resumes < self.client.retry.attempts => {
                    self.resumes += 1;
                    std::thread::sleep(self.client.retry.first_delay * self.resumes);
                    if let Err(again) = self.resume() {
                        return Err(std::io::Error::other(format!(
                            "{e}; resuming failed: {again}"
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
