//! Telling the user how a pull goes: bars on a terminal, one plain line per event in a batch
//! log (where a bar's carriage returns would turn into a megabyte of noise). Every line names
//! the node, since one job log interleaves many nodes.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use crate::config::Progress as Setting;

pub trait Progress: Sync {
    /// One event, as a line.
    fn note(&self, msg: &str);
    /// A transfer of `total` bytes starts; `label` names the image and the layer.
    fn begin(&self, key: &str, label: &str, total: u64);
    /// `n` more bytes of the transfer arrived.
    fn advance(&self, key: &str, n: u64);
    /// The transfer ended; `msg` says how.
    fn end(&self, key: &str, msg: &str);
}

fn line(msg: &str) {
    eprintln!("lpmx-job[{}]: {msg}", crate::host::hostname());
}

/// Plain lines on stderr.
pub struct Lines;

impl Progress for Lines {
    fn note(&self, msg: &str) {
        line(msg);
    }
    fn begin(&self, _key: &str, label: &str, _total: u64) {
        line(label);
    }
    fn advance(&self, _key: &str, _n: u64) {}
    fn end(&self, _key: &str, msg: &str) {
        line(msg);
    }
}

/// Nothing but errors (`-q`, `progress: none`).
pub struct Silent;

impl Progress for Silent {
    fn note(&self, _: &str) {}
    fn begin(&self, _: &str, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn end(&self, _: &str, _: &str) {}
}

/// indicatif bars, one per layer in flight.
pub struct Bars {
    multi: indicatif::MultiProgress,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            multi: indicatif::MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}

impl Progress for Bars {
    fn note(&self, msg: &str) {
        let _ = self
            .multi
            .println(format!("lpmx-job[{}]: {msg}", crate::host::hostname()));
    }
    fn begin(&self, key: &str, label: &str, total: u64) {
        let bar = self.multi.add(indicatif::ProgressBar::new(total));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
            )
            .expect("a valid template"),
        );
        bar.set_message(label.to_string());
        self.bars.lock().unwrap().insert(key.to_string(), bar);
    }
    fn advance(&self, key: &str, n: u64) {
        if let Some(b) = self.bars.lock().unwrap().get(key) {
            b.inc(n);
        }
    }
    fn end(&self, key: &str, msg: &str) {
        if let Some(b) = self.bars.lock().unwrap().remove(key) {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        self.note(msg);
    }
}

/// The reporter for a setting: `auto` means bars only when stderr is a terminal.
pub fn for_setting(setting: Setting, quiet: bool) -> Box<dyn Progress> {
    match (quiet, setting) {
        (true, _) | (_, Setting::None) => Box::new(Silent),
        (_, Setting::Bar) => Box::new(Bars::new()),
        (_, Setting::Line) => Box::new(Lines),
        (_, Setting::Auto) if std::io::stderr().is_terminal() => Box::new(Bars::new()),
        (_, Setting::Auto) => Box::new(Lines),
    }
}

/// Counts bytes through a reader into a [`Progress`] transfer, in steps small enough to move
/// a bar and large enough to cost nothing.
pub struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
    key: &'a str,
    pending: u64,
}

impl<'a, R> Counting<'a, R> {
    pub fn new(inner: R, progress: &'a dyn Progress, key: &'a str) -> Self {
        Counting {
            inner,
            progress,
            key,
            pending: 0,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending += n as u64;
        if self.pending >= 256 << 10 || n == 0 {
            self.progress.advance(self.key, self.pending);
            self.pending = 0;
        }
        Ok(n)
    }
}
