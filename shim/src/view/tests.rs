//! Pure path logic over real temporary trees (no ptrace). Run as root and as an ordinary
//! user: whiteouts and user xattrs must work unprivileged.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Base, Op, Outcome, View};
use crate::{Bind, Layout};

struct T {
    _d: tempfile::TempDir,
    root: PathBuf,
    view: View,
}

fn lay(root: &Path, upper: bool, binds: Vec<Bind>) -> Layout {
    Layout {
        lower: root.join("lower"),
        upper: upper.then(|| root.join("upper")),
        binds,
        private: root.join("private"),
        workdir: "/".into(),
        fakeroot: false,
    }
}

fn mk(upper: bool, binds: impl FnOnce(&Path) -> Vec<Bind>) -> T {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    for x in ["lower/etc", "lower/usr/lib/x", "lower/usr/bin", "lower/home", "upper", "private", "host/data/sub", "host/ro"] {
        fs::create_dir_all(root.join(x)).unwrap();
    }
    fs::write(root.join("lower/etc/passwd"), "guest passwd\n").unwrap();
    fs::write(root.join("lower/usr/lib/x/libc.so"), "libc").unwrap();
    fs::write(root.join("lower/usr/bin/sh"), "sh").unwrap();
    symlink("usr/bin", root.join("lower/bin")).unwrap();
    symlink("../../../../../../../../etc/passwd", root.join("lower/usr/lib/evil")).unwrap();
    symlink("/etc", root.join("lower/usr/etc-abs")).unwrap();
    fs::write(root.join("host/data/f"), "data").unwrap();
    fs::write(root.join("host/file"), "hostfile").unwrap();
    let b = binds(&root);
    let view = View::new(lay(&root, upper, b));
    T { _d: d, root, view }
}

fn bind(g: &str, h: &Path, ro: bool) -> Bind {
    Bind { guest: g.into(), host: h.to_path_buf(), ro }
}

impl T {
    fn r(&mut self, path: &str, follow: bool, op: Op) -> Outcome {
        let base = self.root.join("lower");
        self.view.resolve(&Base { host_dir: &base, tid: 1 }, path.as_bytes(), follow, op)
    }
    fn h(&self, rel: &str) -> Outcome {
        Outcome::Host(self.root.join(rel))
    }
    fn read(&mut self, path: &str) -> Outcome {
        self.r(path, true, Op::Read)
    }
}

#[test]
fn view_lower_and_symlinks() {
    let mut t = mk(false, |_| vec![]);
    assert_eq!(t.read("/etc/passwd"), t.h("lower/etc/passwd"));
    assert_eq!(t.read("/bin/sh"), t.h("lower/usr/bin/sh"));
    assert_eq!(t.r("/bin", false, Op::Read), t.h("lower/bin"));
    assert_eq!(t.read("/bin/"), t.h("lower/usr/bin"));
    // Escapes stay in the guest.
    assert_eq!(t.read("/usr/lib/evil"), t.h("lower/etc/passwd"));
    assert_eq!(t.read("/../../../etc/passwd"), t.h("lower/etc/passwd"));
    assert_eq!(t.read("/usr/etc-abs/passwd"), t.h("lower/etc/passwd"));
    assert_eq!(t.read("usr/lib/x/libc.so"), t.h("lower/usr/lib/x/libc.so"));
    assert_eq!(t.read("/nope/x"), Outcome::Fail(libc::ENOENT));
    assert_eq!(t.read("/etc/passwd/x"), Outcome::Fail(libc::ENOTDIR));
    assert_eq!(t.read("/etc/passwd/"), Outcome::Fail(libc::ENOTDIR));
    assert_eq!(t.read("/"), t.h("lower"));
}

#[test]
fn view_eloop() {
    let mut t = mk(false, |_| vec![]);
    symlink("b", t.root.join("lower/a")).unwrap();
    symlink("a", t.root.join("lower/b")).unwrap();
    assert_eq!(t.read("/a"), Outcome::Fail(libc::ELOOP));
    assert_eq!(t.r("/a", false, Op::Read), t.h("lower/a"));
}

#[test]
fn view_erofs_without_upper() {
    let mut t = mk(false, |_| vec![]);
    assert_eq!(t.r("/etc/passwd", true, Op::Modify), Outcome::Fail(libc::EROFS));
    assert_eq!(t.r("/etc/new", true, Op::Create), Outcome::Fail(libc::EROFS));
    assert_eq!(t.r("/etc", true, Op::Create), Outcome::Fail(libc::EEXIST));
    assert_eq!(t.r("/etc/passwd", false, Op::Remove { dir: false }), Outcome::Fail(libc::EROFS));
    assert_eq!(t.r("/etc/nope", false, Op::Remove { dir: false }), Outcome::Fail(libc::ENOENT));
}

#[test]
fn view_binds() {
    let mut t = mk(false, |r| {
        vec![
            bind("/data", &r.join("host/data"), false),
            bind("/data/sub/ro", &r.join("host/ro"), true),
            bind("/etc/hostfile", &r.join("host/file"), true),
            bind("/.lpmx/bin", &r.join("host"), true),
        ]
    });
    assert_eq!(t.read("/data/f"), t.h("host/data/f"));
    assert_eq!(t.r("/data/new", true, Op::Create), t.h("host/data/new"));
    assert_eq!(t.read("/data/sub/ro"), t.h("host/ro"));
    assert_eq!(t.r("/data/sub/ro/x", true, Op::Create), Outcome::Fail(libc::EROFS));
    assert_eq!(t.read("/etc/hostfile"), t.h("host/file"));
    assert_eq!(t.r("/etc/hostfile", true, Op::Modify), Outcome::Fail(libc::EROFS));
    assert_eq!(t.r("/data", false, Op::Remove { dir: true }), Outcome::Fail(libc::EBUSY));
    // A symlink inside a bind is followed in guest space.
    symlink("/etc/passwd", t.root.join("host/data/l")).unwrap();
    assert_eq!(t.read("/data/l"), t.h("lower/etc/passwd"));
    symlink("../../../../../../../usr", t.root.join("host/data/sub/up")).unwrap();
    assert_eq!(t.read("/data/sub/up/bin/sh"), t.h("lower/usr/bin/sh"));
    // The image lacks /.lpmx: a directory stands for it.
    let o = t.read("/.lpmx");
    let Outcome::Host(h) = o else { panic!("{o:?}") };
    assert!(h.join("bin").is_dir());
    assert_eq!(t.read("/.lpmx/bin/file"), t.h("host/file"));
    // guest_path
    let v = &t.view;
    assert_eq!(v.guest_path(&t.root.join("host/data/f")).unwrap(), Path::new("/data/f"));
    assert_eq!(v.guest_path(&t.root.join("lower/etc")).unwrap(), Path::new("/etc"));
    assert_eq!(v.guest_path(&t.root.join("lower")).unwrap(), Path::new("/"));
    assert_eq!(v.guest_path(&t.root.join("host/ro/z")).unwrap(), Path::new("/data/sub/ro/z"));
    assert_eq!(v.guest_path(Path::new("/nonexistent-host")), None);
    // A base outside the guest: the host path as is.
    let base = t.root.join("elsewhere");
    assert_eq!(
        t.view.resolve(&Base { host_dir: &base, tid: 1 }, b"x", true, Op::Read),
        Outcome::Host(base.join("x"))
    );
    // Relative to a base in a bind.
    let base = t.root.join("host/data/sub");
    assert_eq!(
        t.view.resolve(&Base { host_dir: &base, tid: 1 }, b"../f", true, Op::Read),
        t.h("host/data/f")
    );
}

#[test]
fn view_proc() {
    let mut t = mk(false, |_| vec![bind("/proc", Path::new("/proc"), false)]);
    let me = std::process::id() as i32;
    let base = t.root.join("lower");
    let mut r = |p: &str, f: bool| t.view.resolve(&Base { host_dir: &base, tid: me }, p.as_bytes(), f, Op::Read);
    assert_eq!(r("/proc/self/fd/0", true), Outcome::Host(format!("/proc/{me}/fd/0").into()));
    assert_eq!(r("/proc/thread-self/comm", true), Outcome::Host(format!("/proc/{me}/task/{me}/comm").into()));
    assert_eq!(r("/proc/self/root/etc/passwd", true), Outcome::Host(t.root.join("lower/etc/passwd")));
    assert_eq!(r("/proc/cpuinfo", true), Outcome::Host("/proc/cpuinfo".into()));
}
