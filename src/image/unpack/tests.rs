use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::compress::*;
use super::entry::*;
use super::extract::*;
use super::resolve::*;
use super::*;

const WHAT: &str = "layer sha256:feed of example.org/test:1";
const MTIME: u64 = 1_600_000_000;

/// Every hostile-archive test runs against each resolver this kernel can offer.
fn resolvers() -> Vec<Resolver> {
    let mut v = vec![Resolver::Userspace];
    if openat2_works() {
        v.push(Resolver::Openat2);
    } else if std::env::var("LPMX_TEST_ALLOW_SKIP")
        .is_ok_and(|v| v.split(',').any(|s| s.trim() == "openat2"))
    {
        eprintln!("openat2 unavailable here: only the userspace resolver is tested");
    } else {
        panic!("openat2 unavailable here: half the hostile-archive checks cannot run; LPMX_TEST_ALLOW_SKIP=openat2 skips them");
    }
    v
}

struct Sandbox {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(tmp.path().join("sentinel"), b"sentinel\n").unwrap();
        Sandbox { tmp, root }
    }

    fn outside(&self) -> &Path {
        self.tmp.path()
    }

    fn unpack(&self, tar: &[u8], r: Resolver) -> Result<LayerStats> {
        unpack_layer_with(tar, &self.root, WHAT, r)
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Nothing but `root` appeared next to the sentinel, and the sentinel was neither
    /// written, replaced nor hardlinked.
    fn assert_contained(&self) {
        let mut names: Vec<String> = fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["root", "sentinel"]);
        let s = self.outside().join("sentinel");
        let md = fs::symlink_metadata(&s).unwrap();
        assert!(md.file_type().is_file());
        assert_eq!(md.nlink(), 1);
        assert_eq!(fs::read(&s).unwrap(), b"sentinel\n");
    }
}

fn noop(_: &mut Header) {}

/// Archives written header by header, so names can say what `Builder` refuses to.
#[derive(Default)]
struct Raw {
    buf: Vec<u8>,
}

impl Raw {
    fn record(
        &mut self,
        name: &[u8],
        ty: EntryType,
        link: &[u8],
        data: &[u8],
        edit: impl FnOnce(&mut Header),
    ) -> &mut Self {
        if name.len() > 100 {
            let mut v = name.to_vec();
            v.push(0);
            self.record(b"././@LongLink", EntryType::GNULongName, b"", &v, noop);
        }
        if link.len() > 100 {
            let mut v = link.to_vec();
            v.push(0);
            self.record(b"././@LongLink", EntryType::GNULongLink, b"", &v, noop);
        }
        let mut h = Header::new_gnu();
        let n = name.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(if ty == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        edit(&mut h);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(512), 0);
        self
    }

    fn file(&mut self, name: impl AsRef<[u8]>, data: &[u8]) -> &mut Self {
        self.record(name.as_ref(), EntryType::Regular, b"", data, |_| {})
    }

    fn file_mode(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.record(name.as_bytes(), EntryType::Regular, b"", data, |h| {
            h.set_mode(mode)
        })
    }

    fn dir(&mut self, name: impl AsRef<[u8]>) -> &mut Self {
        self.record(name.as_ref(), EntryType::Directory, b"", b"", |_| {})
    }

    fn dir_meta(&mut self, name: &str, mode: u32, mtime: u64) -> &mut Self {
        self.record(name.as_bytes(), EntryType::Directory, b"", b"", |h| {
            h.set_mode(mode);
            h.set_mtime(mtime);
        })
    }

    fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        self.record(
            name.as_ref(),
            EntryType::Symlink,
            target.as_ref(),
            b"",
            |_| {},
        )
    }

    fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        self.record(name.as_ref(), EntryType::Link, target.as_ref(), b"", |_| {})
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let rest = 1 + k.len() + 1 + v.len() + 1;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.record(b"PaxHeaders/x", EntryType::XHeader, b"", &data, |_| {})
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = self.buf.clone();
        v.extend_from_slice(&[0; 1024]);
        v
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn mtime(p: &Path) -> i64 {
    fs::symlink_metadata(p).unwrap().mtime()
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn ordinary_layer_round_trips() {
    for r in resolvers() {
        let sb = Sandbox::new();
        let tar = Raw::default()
            .dir("usr/")
            .dir("usr/bin/")
            .file_mode("usr/bin/tool", 0o755, b"#!/bin/sh\n")
            .symlink("usr/bin/abs", "/bin/busybox")
            .symlink("usr/bin/rel", "../lib/x")
            .hardlink("usr/bin/tool2", "usr/bin/tool")
            .file("etc/hostname", b"box\n")
            .bytes();
        let st = sb.unpack(&tar, r).unwrap();
        assert_eq!(fs::read(sb.p("usr/bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(mode(&sb.p("usr/bin/tool")), 0o755);
        assert_eq!(mtime(&sb.p("usr/bin/tool")), MTIME as i64);
        assert_eq!(
            fs::read_link(sb.p("usr/bin/abs")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::read_link(sb.p("usr/bin/rel")).unwrap(),
            Path::new("../lib/x")
        );
        assert_eq!(mtime(&sb.p("usr/bin/abs")), MTIME as i64);
        assert_eq!(ino(&sb.p("usr/bin/tool2")), ino(&sb.p("usr/bin/tool")));
        assert_eq!(fs::metadata(sb.p("usr/bin/tool")).unwrap().nlink(), 2);
        // `etc` had no entry of its own.
        assert_eq!(mode(&sb.p("etc")), 0o755);
        assert_eq!(fs::read(sb.p("etc/hostname")).unwrap(), b"box\n");
        assert_eq!(
            (
                st.entries,
                st.files,
                st.dirs,
                st.symlinks,
                st.hardlinks,
                st.bytes
            ),
            (7, 2, 2, 2, 1, 14)
        );
        sb.assert_contained();
    }
}

#[test]
fn dotdot_and_absolute_names_are_clamped_to_the_root() {
    for r in resolvers() {
        let sb = Sandbox::new();
        let tar = Raw::default()
            .file("../../escape", b"1")
            .file("/abs/file", b"2")
            .file("a/../../b", b"3")
            .file("./c", b"4")
            .file("../sentinel", b"pwned")
            .bytes();
        sb.unpack(&tar, r).unwrap();
        assert_eq!(fs::read(sb.p("escape")).unwrap(), b"1");
        assert_eq!(fs::read(sb.p("abs/file")).unwrap(), b"2");
        assert_eq!(fs::read(sb.p("b")).unwrap(), b"3");
        assert_eq!(fs::read(sb.p("c")).unwrap(), b"4");
        assert_eq!(fs::read(sb.p("sentinel")).unwrap(), b"pwned");
        sb.assert_contained();
    }
}

#[test]
fn entries_below_the_layers_own_symlinks_stay_inside() {
    for r in resolvers() {
        let sb = Sandbox::new();
        let outside = sb.outside().to_str().unwrap().to_owned();
        let tar = Raw::default()
            .symlink("evil", "/")
            .file("evil/etc/x", b"x")
            .symlink("up", "../../..")
            .file("up/y", b"y")
            .symlink("abs", &outside)
            // Where `abs` leads inside the root; without it `abs` dangles, which is an error.
            .dir(format!("{outside}/"))
            .file("abs/pwned", b"p")
            .symlink("rel", "../")
            .file("rel/sentinel", b"pwned")
            .symlink("chain", "up/abs")
            .dir("chain/newdir/")
            .bytes();
        sb.unpack(&tar, r).unwrap();
        // Kept exactly as written, resolved as if the root were `/`.
        assert_eq!(fs::read_link(sb.p("evil")).unwrap(), Path::new("/"));
        assert_eq!(fs::read_link(sb.p("abs")).unwrap(), Path::new(&outside));
        assert_eq!(fs::read(sb.p("etc/x")).unwrap(), b"x");
        assert_eq!(fs::read(sb.p("y")).unwrap(), b"y");
        let inner = sb.root.join(outside.trim_start_matches('/'));
        assert_eq!(fs::read(inner.join("pwned")).unwrap(), b"p");
        assert!(inner.join("newdir").is_dir());
        assert_eq!(fs::read(sb.p("sentinel")).unwrap(), b"pwned");
        sb.assert_contained();
    }
}

#[test]
fn later_entries_replace_earlier_ones_without_writing_through_symlinks() {
    for r in resolvers() {
        let sb = Sandbox::new();
        let sentinel = sb.outside().join("sentinel");
        let sentinel = sentinel.to_str().unwrap();
        let tar = Raw::default()
            // symlink, then a file of the same name
            .symlink("s", sentinel)
            .file("s", b"new")
            // symlink, then a directory
            .symlink("r", "../sentinel")
            .dir("r/")
            // file, then a directory with content
            .file("f", b"old")
            .dir("f/")
            .file("f/inner", b"inner")
            // a full directory, then a symlink leading out, then an entry below it
            .dir("d/")
            .file("d/child", b"c")
            .dir("d/sub/")
            .file("d/sub/deep", b"c")
            .symlink("d", "../..")
            .file("d/g", b"g")
            // directory, then a file
            .dir("e/")
            .file("e", b"e")
            // symlink, then a hardlink, then a fifo
            .symlink("x", sentinel)
            .hardlink("x", "s")
            .symlink("q", sentinel)
            .record(b"q", EntryType::Fifo, b"", b"", |_| {})
            .bytes();
        let st = sb.unpack(&tar, r).unwrap();
        assert_eq!(fs::read(sb.p("s")).unwrap(), b"new");
        assert!(fs::symlink_metadata(sb.p("s")).unwrap().is_file());
        assert!(fs::symlink_metadata(sb.p("r")).unwrap().is_dir());
        assert_eq!(fs::read(sb.p("f/inner")).unwrap(), b"inner");
        assert_eq!(fs::read_link(sb.p("d")).unwrap(), Path::new("../.."));
        assert_eq!(fs::read(sb.p("g")).unwrap(), b"g");
        assert!(!sb.p("child").exists());
        assert_eq!(fs::read(sb.p("e")).unwrap(), b"e");
        assert_eq!(ino(&sb.p("x")), ino(&sb.p("s")));
        let q = fs::symlink_metadata(sb.p("q")).unwrap().file_type();
        assert!(if st.fifos == 1 {
            q.is_fifo()
        } else {
            q.is_symlink()
        });
        sb.assert_contained();
    }
}

#[test]
fn hardlinks_only_reach_files_of_this_layer() {
    for r in resolvers() {
        let refused = |tar: Vec<u8>, target: &str, reason: &str| {
            let sb = Sandbox::new();
            let err = sb.unpack(&tar, r).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Hardlink { .. }), "{msg}");
            assert!(
                msg.contains(WHAT) && msg.contains("h -> ") && msg.contains(target),
                "{msg}"
            );
            assert!(msg.contains(reason), "{msg}");
            sb.assert_contained();
        };
        let outside = Sandbox::new().outside().to_str().unwrap().to_owned();
        refused(
            Raw::default().hardlink("h", "../../sentinel").bytes(),
            "../../sentinel",
            "not a file",
        );
        refused(
            Raw::default().hardlink("h", "nope").bytes(),
            "nope",
            "not a file",
        );
        refused(
            Raw::default().dir("d/").hardlink("h", "d").bytes(),
            "d",
            "directory",
        );
        refused(
            Raw::default()
                .symlink("out", "../")
                .hardlink("h", "out/sentinel")
                .bytes(),
            "out/sentinel",
            "not a file",
        );
        refused(
            Raw::default()
                .symlink("out", &outside)
                .hardlink("h", "out/sentinel")
                .bytes(),
            "out/sentinel",
            "not a file",
        );
        // A target replaced after extraction is no longer this layer's file.
        refused(
            Raw::default()
                .dir("d/")
                .file("d/f", b"f")
                .symlink("d", &outside)
                .hardlink("h", "d/f")
                .bytes(),
            "d/f",
            "not a file",
        );

        // `..` in a target is clamped like any name: this links the layer's own file.
        let sb = Sandbox::new();
        let tar = Raw::default()
            .file("sentinel", b"mine")
            .hardlink("h", "../../sentinel")
            .symlink("x", "../..")
            .file("x/f", b"f")
            .hardlink("h2", "x/f")
            .hardlink("h3", "x")
            .bytes();
        let st = sb.unpack(&tar, r).unwrap();
        assert_eq!(ino(&sb.p("h")), ino(&sb.p("sentinel")));
        assert_eq!(ino(&sb.p("h2")), ino(&sb.p("f")));
        // A link to a symlink is a link to the symlink, not to what it points at.
        assert_eq!(ino(&sb.p("h3")), ino(&sb.p("x")));
        assert_eq!(st.hardlinks, 3);
        sb.assert_contained();
    }
}

#[test]
fn modes_are_rootless_and_directories_are_fixed_last() {
    for r in resolvers() {
        let sb = Sandbox::new();
        let tar = Raw::default()
            .dir_meta("ro/", 0o555, 1000)
            .file_mode("ro/f", 0o444, b"f")
            .dir_meta("ro/sub/", 0o500, 2000)
            .file_mode("ro/sub/suid", 0o4755, b"s")
            .dir_meta("tmp/", 0o1777, 3000)
            .dir_meta("sgid/", 0o2755, 3000)
            .record(b"owned", EntryType::Regular, b"", b"o", |h| {
                h.set_mode(0o640);
                h.set_uid(1000);
            })
            .record(b"grouped", EntryType::Regular, b"", b"o", |h| h.set_gid(50))
            .bytes();
        let st = sb.unpack(&tar, r).unwrap();
        assert_eq!(mode(&sb.p("ro")), 0o755);
        assert_eq!(mtime(&sb.p("ro")), 1000);
        assert_eq!(mode(&sb.p("ro/f")), 0o644);
        assert_eq!(mode(&sb.p("ro/sub")), 0o700);
        assert_eq!(mtime(&sb.p("ro/sub")), 2000);
        assert_eq!(mode(&sb.p("ro/sub/suid")), 0o755);
        assert_eq!(mode(&sb.p("tmp")), 0o1777);
        assert_eq!(mode(&sb.p("sgid")), 0o755);
        assert_eq!(mode(&sb.p("owned")), 0o640);
        assert_eq!(st.dropped_setid, 2);
        assert_eq!(st.ignored_ownership, 2);
        sb.assert_contained();
    }
}

#[test]
fn the_root_entry_sets_the_destinations_mode_and_nothing_else_may_name_it() {
    for r in resolvers() {
        let sb = Sandbox::new();
        sb.unpack(
            &Raw::default()
                .dir_meta("./", 0o750, 1234)
                .file("a", b"a")
                .bytes(),
            r,
        )
        .unwrap();
        assert_eq!(mode(&sb.root), 0o750);
        assert_eq!(mtime(&sb.root), 1234);

        let sb = Sandbox::new();
        let err = sb
            .unpack(&Raw::default().file(".", b"x").bytes(), r)
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        sb.assert_contained();
    }
}

#[test]
fn devices_are_skipped_and_fifos_created_when_allowed() {
    for r in resolvers() {
        let sb = Sandbox::new();
        let tar = Raw::default()
            .record(b"dev/null", EntryType::Char, b"", b"", |h| {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            })
            .record(b"dev/sda", EntryType::Block, b"", b"", |h| {
                h.set_device_major(8).unwrap()
            })
            .record(b"run/fifo", EntryType::Fifo, b"", b"", |h| {
                h.set_mode(0o620)
            })
            .record(b"vol", EntryType::new(b'V'), b"", b"", |_| {})
            .bytes();
        let st = sb.unpack(&tar, r).unwrap();
        assert!(!sb.p("dev/null").exists() && !sb.p("dev/sda").exists());
        assert!(!sb.p("vol").exists());
        assert_eq!(st.skipped_other, 1);
        if st.fifos == 1 {
            assert_eq!(st.skipped_devices, 2);
            assert!(fs::symlink_metadata(sb.p("run/fifo"))
                .unwrap()
                .file_type()
                .is_fifo());
            assert_eq!(mode(&sb.p("run/fifo")), 0o620);
        } else {
            assert_eq!(st.skipped_devices, 3);
        }
        sb.assert_contained();
    }
}

fn all_names(dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            all_names(&e.path(), out);
        }
    }
}

#[test]
fn whiteouts_are_reported_not_extracted() {
    for r in resolvers() {
        let sb = Sandbox::new();
        let tar = Raw::default()
            .file("a/keep", b"k")
            .file(".wh.top", b"")
            .file("a/.wh.gone", b"")
            .file("a/b/.wh..wh..opq", b"")
            .file(".wh..wh..opq", b"")
            .dir(".wh..wh.plnk/")
            .file(".wh..wh.plnk/123.456", b"aufs")
            .file(".wh..wh.aufs", b"")
            .bytes();
        let st = sb.unpack(&tar, r).unwrap();
        assert_eq!(st.whiteouts, ["top", "a/gone"]);
        assert_eq!(st.opaque_dirs, ["a/b", ""]);
        assert_eq!(st.skipped_other, 3);
        let mut names = Vec::new();
        all_names(&sb.root, &mut names);
        names.sort();
        assert_eq!(names, ["a", "keep"]);
        sb.assert_contained();
    }
}

#[test]
fn a_whiteout_of_a_name_that_is_not_utf8_is_kept_as_bytes() {
    let k = classify(b"nu/.wh.gone-\xff", EntryType::Regular).unwrap();
    assert_eq!(k, Kind::Whiteout(LayerPath(b"nu/gone-\xff".to_vec())));
    let k = classify(b"nu-\xfe/.wh..wh..opq", EntryType::Regular).unwrap();
    assert_eq!(k, Kind::Opaque(LayerPath(b"nu-\xfe".to_vec())));
    // Recorded as a string when UTF-8, as hex when not; both read back as they were.
    let stats = LayerStats {
        whiteouts: vec![LayerPath(b"nu/gone-\xff".to_vec()), "plain".into()],
        ..LayerStats::default()
    };
    let text = serde_json::to_string(&stats).unwrap();
    assert!(
        text.contains(r#""whiteouts":[{"hex":"6e752f676f6e652dff"},"plain"]"#),
        "{text}"
    );
    let back: LayerStats = serde_json::from_str(&text).unwrap();
    assert_eq!(back, stats);
}

#[test]
fn whiteouts_that_escape_are_errors() {
    for r in resolvers() {
        for name in [
            "../.wh.x",
            "a/.wh...",
            "/.wh..",
            "../../.wh..wh..opq",
            "a/../../.wh.b",
        ] {
            let sb = Sandbox::new();
            let err = sb
                .unpack(&Raw::default().file(name, b"").bytes(), r)
                .unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{name}: {err}");
            assert!(err.to_string().contains(WHAT), "{err}");
            sb.assert_contained();
        }
    }
}

#[test]
fn an_entry_below_a_dangling_symlink_is_an_error_naming_it() {
    for r in resolvers() {
        let sb = Sandbox::new();
        let tar = Raw::default()
            .symlink("dang", "/nowhere")
            .file("dang/x", b"x")
            .bytes();
        let err = sb.unpack(&tar, r).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(WHAT) && msg.contains("dang/x"), "{msg}");
        assert!(!sb.p("nowhere").exists());
        sb.assert_contained();
    }
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn long_names_and_large_files_via_builder() {
    let long_dir = format!("{}/{}", "d".repeat(120), "e".repeat(90));
    let long_file = format!("{long_dir}/{}", "f".repeat(100));
    let long_target = format!("../{}", "t".repeat(150));
    let big = pseudo_random(5 << 20);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    b.append_data(&mut h, &long_file, &b"abc"[..]).unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, format!("{long_dir}/link"), &long_target)
        .unwrap();
    let mut h = Header::new_gnu();
    h.set_size(big.len() as u64);
    h.set_mode(0o600);
    b.append_data(&mut h, "big", big.as_slice()).unwrap();
    let tar = b.into_inner().unwrap();
    for r in resolvers() {
        let sb = Sandbox::new();
        let st = sb.unpack(&tar, r).unwrap();
        assert_eq!(fs::read(sb.p(&long_file)).unwrap(), b"abc");
        assert_eq!(
            fs::read_link(sb.p(&format!("{long_dir}/link"))).unwrap(),
            Path::new(&long_target)
        );
        assert_eq!(fs::read(sb.p("big")).unwrap(), big);
        assert_eq!(st.bytes, 3 + big.len() as u64);
        sb.assert_contained();
    }
}

#[test]
fn pax_names_and_times_and_gnu_sparse_files() {
    let pax_name = format!("p/{}", "x".repeat(200));
    let mut raw = Raw::default();
    raw.pax(&[
        ("path", pax_name.as_bytes()),
        ("mtime", b"1234567890.5"),
        ("uid", b"4242"),
    ])
    .file("short-name-ignored", b"pax")
    .pax(&[("linkpath", "/".repeat(3).as_bytes())])
    .symlink("pl", "ignored");
    // 3 MiB with 512 bytes of data at 1 MiB; the trailing hole is an empty block.
    raw.record(b"sparse", EntryType::GNUSparse, b"", &[b'S'; 512], |h| {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(1 << 20);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(3 << 20);
        g.sparse[1].set_length(0);
        g.set_real_size(3 << 20);
    });
    let tar = raw.bytes();
    for r in resolvers() {
        let sb = Sandbox::new();
        let st = sb.unpack(&tar, r).unwrap();
        let f = sb.p(&pax_name);
        assert_eq!(fs::read(&f).unwrap(), b"pax");
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_890, 500_000_000));
        assert_eq!(st.ignored_ownership, 1);
        assert_eq!(fs::read_link(sb.p("pl")).unwrap(), Path::new("///"));
        let data = fs::read(sb.p("sparse")).unwrap();
        assert_eq!(data.len(), 3 << 20);
        assert!(data[..1 << 20].iter().all(|&b| b == 0));
        assert!(data[1 << 20..(1 << 20) + 512].iter().all(|&b| b == b'S'));
        assert!(data[(1 << 20) + 512..].iter().all(|&b| b == 0));
        sb.assert_contained();
    }
}

#[test]
fn capped_reads_stop_at_the_declared_size() {
    let over = std::cell::Cell::new(None);
    let data = vec![7u8; 10_000];
    let mut out = Vec::new();
    Capped::new(&data[..], 10_000, &over)
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(
        (out.len(), over.get()),
        (10_000, None),
        "exactly the size: fine"
    );

    // An endless source: nothing past the declared size is handed on, and it says so.
    let mut c = Capped::new(io::repeat(1), 1000, &over);
    let (mut handed, mut buf) = (0, [0u8; 300]);
    let err = loop {
        match c.read(&mut buf) {
            Ok(n) => handed += n,
            Err(e) => break e,
        }
    };
    assert!(handed <= 1000, "{handed}");
    let received = over.get().expect("records the overrun");
    assert!(received > 1000 && received <= 1200, "{received}");
    assert!(err.to_string().contains("1000 bytes"), "{err}");
    assert!(c.read(&mut buf).is_err(), "and keeps failing");

    // Through the decompressor and the unpacker: the layer fails, the cap is recorded.
    let big = Raw::default().file("big", &pseudo_random(3 << 20)).bytes();
    let over = std::cell::Cell::new(None);
    let sb = Sandbox::new();
    let rd = decompress_layer(Capped::new(&big[..], 1000, &over), "", WHAT).unwrap();
    assert!(unpack_layer_with(rd, &sb.root, WHAT, resolver()).is_err());
    assert!(over.get().is_some());
    let written = fs::metadata(sb.p("big")).map(|m| m.len()).unwrap_or(0);
    assert!(written <= 1000, "{written} bytes written");
}

#[test]
fn pax_time_parsing() {
    let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
    assert_eq!(t("12"), Some((12, 0)));
    assert_eq!(t("12.25"), Some((12, 250_000_000)));
    assert_eq!(t("12.1234567891234"), Some((12, 123_456_789)));
    assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
    assert_eq!(t("-3"), Some((-3, 0)));
    assert_eq!(t(""), None);
    assert_eq!(t("1e9"), None);
    assert_eq!(t(".5"), None);
}

fn two_files() -> Vec<u8> {
    Raw::default()
        .file("a", &[b'a'; 1000])
        .file("b", b"0123456789")
        .bytes()
}

#[test]
fn truncated_and_corrupt_archives_are_errors_naming_the_layer() {
    let full = two_files();
    let r = resolver();
    let expect_err = |bytes: &[u8], needle: &str| {
        let sb = Sandbox::new();
        let err = sb.unpack(bytes, r).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(WHAT) && msg.contains(needle), "{msg}");
        sb.assert_contained();
        err
    };
    // Inside a's data: the entry comes up short.
    let e = expect_err(&full[..512 + 700], "entry a has 700 of its 1000 bytes");
    assert!(matches!(e, Error::Truncated { .. }));
    // Exactly after a complete entry: only the missing end marker tells.
    let e = expect_err(
        &full[..512 + 1024],
        "after entry a without the end-of-archive",
    );
    assert!(matches!(e, Error::Truncated { .. }));
    // Inside b's header.
    let e = expect_err(&full[..512 + 1024 + 100], "after entry a");
    assert!(matches!(e, Error::Corrupt { .. }));
    // A damaged header fails its checksum.
    let mut bad = full.clone();
    bad[512 + 1024] ^= 0x40;
    assert!(matches!(
        expect_err(&bad, "checksum"),
        Error::Corrupt { .. }
    ));
    expect_err(&pseudo_random(4096), "");

    let sb = Sandbox::new();
    assert_eq!(sb.unpack(b"", r).unwrap().entries, 0);
    assert_eq!(sb.unpack(&full, r).unwrap().files, 2);

    // Damage below the tar layer surfaces the same way.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&full).unwrap();
    let gz = gz.finish().unwrap();
    for bytes in [&gz[..gz.len() / 2], &gz[..gz.len() - 4]] {
        let sb = Sandbox::new();
        let rd =
            decompress_layer(bytes, "application/vnd.oci.image.layer.v1.tar+gzip", WHAT).unwrap();
        let err = unpack_layer_with(rd, &sb.root, WHAT, r).unwrap_err();
        assert!(err.to_string().contains(WHAT), "{err}");
        sb.assert_contained();
    }
}

#[test]
fn trailing_data_after_the_archive_is_read_to_the_end() {
    struct Count<'a>(&'a [u8], usize);
    impl Read for Count<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n;
            Ok(n)
        }
    }
    let mut tar = two_files();
    tar.extend_from_slice(&[0; 9000]);
    let sb = Sandbox::new();
    let mut c = Count(&tar, 0);
    unpack_layer_with(&mut c, &sb.root, WHAT, resolver()).unwrap();
    assert_eq!(c.1, tar.len());
}

#[test]
fn destination_must_be_empty() {
    let sb = Sandbox::new();
    fs::write(sb.p("x"), b"").unwrap();
    let err = sb.unpack(&two_files(), resolver()).unwrap_err();
    assert!(matches!(err, Error::DestNotEmpty { .. }), "{err}");
}

#[test]
fn resolvers_agree_on_hostile_paths() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.p("a/b/c")).unwrap();
    fs::write(sb.p("f"), b"").unwrap();
    let links = [
        ("l1", "a/b"),
        ("abs", "/a/b"),
        ("up", "../../.."),
        ("loop1", "loop2"),
        ("loop2", "loop1"),
        ("via_file", "f"),
        ("chain", "l1/c"),
        ("self", "."),
        ("dangling", "nowhere"),
        ("a/b/c/back", "../../../.."),
        ("out", sb.outside().to_str().unwrap()),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(target, sb.p(name)).unwrap();
    }
    let root = rustix::fs::open(&sb.root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let outcome = |r: Resolver, p: &str| -> std::result::Result<u64, Errno> {
        resolve_dir(r, root.as_fd(), p.as_bytes()).map(|fd| rustix::fs::fstat(&fd).unwrap().st_ino)
    };
    let at = |rel: &str| Ok(ino(&sb.p(rel)));
    let expected: Vec<(String, std::result::Result<u64, Errno>)> = vec![
        ("".into(), at(".")),
        ("a/b/c".into(), at("a/b/c")),
        ("l1".into(), at("a/b")),
        ("abs/c".into(), at("a/b/c")),
        ("up".into(), at(".")),
        ("up/a".into(), at("a")),
        ("a/../..".into(), at(".")),
        ("/../a/b".into(), at("a/b")),
        ("chain".into(), at("a/b/c")),
        ("a/b/c/back/a".into(), at("a")),
        ("l1/../..".into(), at(".")),
        ("out".into(), Err(Errno::NOENT)),
        ("loop1".into(), Err(Errno::LOOP)),
        ("f".into(), Err(Errno::NOTDIR)),
        ("via_file".into(), Err(Errno::NOTDIR)),
        ("missing".into(), Err(Errno::NOENT)),
        ("dangling".into(), Err(Errno::NOENT)),
        (format!("{}a", "self/".repeat(40)), at("a")),
        (format!("{}a", "self/".repeat(41)), Err(Errno::LOOP)),
    ];
    for r in resolvers() {
        for (p, want) in &expected {
            assert_eq!(&outcome(r, p), want, "{r:?} {p:?}");
        }
    }
}

#[test]
fn decompression_by_media_type_then_magic() {
    let tar = two_files();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar[..1000]).unwrap();
    let mut gz = gz.finish().unwrap();
    // A second member, as pigz may write.
    let mut gz2 = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz2.write_all(&tar[1000..]).unwrap();
    gz.extend(gz2.finish().unwrap());
    let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
    let read = |bytes: &[u8], mt: &str| -> Vec<u8> {
        let mut out = Vec::new();
        decompress(bytes, mt)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    assert_eq!(
        read(&gz, "application/vnd.oci.image.layer.v1.tar+gzip"),
        tar
    );
    assert_eq!(
        read(&gz, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        tar
    );
    assert_eq!(
        read(
            &gz,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        ),
        tar
    );
    assert_eq!(
        read(&zst, "application/vnd.oci.image.layer.v1.tar+zstd"),
        tar
    );
    assert_eq!(read(&tar, "application/vnd.oci.image.layer.v1.tar"), tar);
    // The media type wins when it speaks...
    assert_eq!(read(&gz, "application/vnd.oci.image.layer.v1.tar"), gz);
    // ...and the bytes decide when it does not.
    for mt in [
        "",
        "application/octet-stream",
        "application/vnd.example.whatever",
    ] {
        assert_eq!(read(&gz, mt), tar);
        assert_eq!(read(&zst, mt), tar);
        assert_eq!(read(&tar, mt), tar);
        assert_eq!(read(&tar[..3], mt), &tar[..3]);
    }
    // Only a peek: an endless stream is not drained.
    let mut endless = decompress(io::repeat(7), "").unwrap();
    let mut four = [0; 4];
    endless.read_exact(&mut four).unwrap();
    assert_eq!(four, [7; 4]);

    let unsupported = |bytes: &[u8], mt: &str| {
        let err = decompress_layer(bytes, mt, WHAT)
            .err()
            .expect("should refuse");
        assert!(matches!(err, Error::UnsupportedCompression { .. }), "{err}");
        assert!(err.to_string().contains(WHAT), "{err}");
    };
    unsupported(&tar, "application/vnd.oci.image.layer.v1.tar+bzip2");
    unsupported(b"\xfd7zXZ\0rest", "");
    unsupported(b"BZh91AY&SYrest", "application/octet-stream");
    // A tar whose first file is named like bzip2's magic is still a tar.
    let named = Raw::default().file("BZh9", b"x").bytes();
    assert_eq!(read(&named, ""), named);
}

/// Every damaged variant of an archive full of traps aimed at the root's parents, with
/// the root four directories down: each outcome is an archive unpacked or an error naming
/// the layer, and no ancestor gained, lost or had changed a single entry.
#[test]
fn damaged_hostile_archives_leave_every_ancestor_untouched() {
    let base = Raw::default()
        .dir("d/")
        .symlink("d/up", "../../../../..")
        .file("d/up/x", b"x")
        .file("d/up/a/b/c/x", b"x")
        .symlink("abs", "/")
        .file("abs/a/y", b"y")
        .hardlink("h", "d/up/x")
        .hardlink("h2", "../sentinel")
        .hardlink("h3", "../../../sentinel")
        .file("../y", b"y")
        .file("../../../../y", b"y")
        .symlink("s", "../../sentinel")
        .file("s", b"s")
        .file("../c/sentinel", b"overwritten")
        .bytes();
    let headers: Vec<usize> = (0..base.len())
        .step_by(512)
        .filter(|&o| base[o] != 0 && base[o + 257..o + 262] == *b"ustar")
        .collect();
    let mut cases: Vec<Vec<u8>> = (0..=base.len())
        .step_by(97)
        .map(|n| base[..n].to_vec())
        .collect();
    cases.push(base.clone());
    for &o in &headers {
        // Every type flag tar knows, and some it does not.
        for ty in *b"0123456LKxgSV\0" {
            let mut v = base.clone();
            let mut h = Header::new_old();
            h.as_mut_bytes().copy_from_slice(&v[o..o + 512]);
            h.set_entry_type(EntryType::new(ty));
            h.set_size(if ty == b'0' { 700 } else { 0 });
            h.set_cksum();
            v[o..o + 512].copy_from_slice(h.as_bytes());
            cases.push(v);
        }
    }
    let levels = ["", "a", "a/b", "a/b/c"];
    // Every ancestor's entries, each with its kind, size, link count and content.
    let snapshot = |top: &Path| -> Vec<(String, String, u64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        for l in levels {
            let d = top.join(l);
            let mut names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap()).collect();
            names.sort_by_key(|e| e.file_name());
            for e in names {
                let md = fs::symlink_metadata(e.path()).unwrap();
                let body = if md.is_file() {
                    fs::read(e.path()).unwrap()
                } else {
                    vec![]
                };
                let kind = format!("{:?}", md.file_type());
                out.push((
                    format!("{l}/{}", e.file_name().to_string_lossy()),
                    kind,
                    if md.is_dir() { 0 } else { md.len() },
                    // A directory's link count follows its subdirectories: the root's
                    // is the unpack's own business.
                    if md.is_dir() { 0 } else { md.nlink() },
                    body,
                ));
            }
        }
        out
    };
    let mut unpacked = 0;
    for r in resolvers() {
        for case in &cases {
            let top = tempfile::tempdir().unwrap();
            for l in levels {
                fs::create_dir_all(top.path().join(l)).unwrap();
                fs::write(top.path().join(l).join("sentinel"), b"sentinel\n").unwrap();
            }
            let root = top.path().join("a/b/c/root");
            fs::create_dir(&root).unwrap();
            let before = snapshot(top.path());
            match unpack_layer_with(&case[..], &root, WHAT, r) {
                Ok(_) => unpacked += 1,
                Err(e) => assert!(e.to_string().contains(WHAT), "{r:?}: {e}"),
            }
            assert_eq!(snapshot(top.path()), before, "{r:?}: an ancestor changed");
        }
    }
    assert!(
        unpacked > 0,
        "some variants unpack: the traps were met, not refused at once"
    );
}
