//! A TCP relay in front of the real registry that can slow it down, cut connections after a
//! number of bytes, or die: the failures a real network produces but a healthy loopback
//! registry does not. The registry behind it is real; only the wire is degraded.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Bytes per second from the registry to the client.
    pub rate: Option<u64>,
    /// Close a connection after this many bytes from the registry.
    pub cut_after: Option<u64>,
    /// Only the first this-many connections that reach `cut_after` are cut.
    pub cut_connections: usize,
    /// After the first cut, refuse everything: the registry is gone.
    pub die_after_cut: bool,
    /// Request lines containing the first string have it replaced by the second: a registry
    /// that answers a request with what belongs to another (a stale mirror, a wrong answer).
    pub rewrite: Option<(&'static str, &'static str)>,
}

pub struct Proxy {
    pub addr: String,
    dead: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.dead.store(true, Ordering::SeqCst);
        // Wake the accept loop so it notices.
        let _ = TcpStream::connect(&self.addr);
    }
}

pub fn start(upstream: &str, faults: Faults) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dead = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicUsize::new(0));
    let upstream = upstream.to_string();
    let d = dead.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if d.load(Ordering::SeqCst) {
                return;
            }
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (d, cuts) = (d.clone(), cuts.clone());
            std::thread::spawn(move || relay(client, server, faults, d, cuts));
        }
    });
    Proxy { addr, dead }
}

fn relay(
    client: TcpStream,
    server: TcpStream,
    f: Faults,
    dead: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let rewrite = f.rewrite;
    std::thread::spawn(move || {
        match rewrite {
            None => {
                let _ = std::io::copy(&mut c_read, &mut s_write);
            }
            // Line by line: the registry client sends GETs, whose only lines are headers.
            Some((from, to)) => {
                let mut r = std::io::BufReader::new(c_read);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match std::io::BufRead::read_until(&mut r, b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line).replace(from, to);
                    if s_write.write_all(text.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut buf = [0u8; 8192];
    loop {
        if dead.load(Ordering::SeqCst) {
            break;
        }
        let chunk = f
            .rate
            .map_or(buf.len(), |r| (r as usize / 20).clamp(1, buf.len()));
        let n = match s_read.read(&mut buf[..chunk]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(limit) = f.cut_after {
            if sent + n as u64 > limit && cuts.load(Ordering::SeqCst) < f.cut_connections {
                cuts.fetch_add(1, Ordering::SeqCst);
                let _ = c_write.write_all(&buf[..(limit - sent) as usize]);
                if f.die_after_cut {
                    dead.store(true, Ordering::SeqCst);
                }
                break;
            }
        }
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(r) = f.rate {
            let due = Duration::from_secs_f64(sent as f64 / r as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = s_read.shutdown(Shutdown::Both);
}
