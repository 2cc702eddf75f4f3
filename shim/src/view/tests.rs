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

fn is_wh(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.file_type().is_char_device() && m.rdev() == 0).unwrap_or(false)
}

#[test]
fn view_union_read_modify_create() {
    let mut t = mk(true, |_| vec![]);
    assert_eq!(t.read("/etc/passwd"), t.h("lower/etc/passwd"));
    let lp = t.root.join("lower/etc/passwd");
    fs::set_permissions(&lp, fs::Permissions::from_mode(0o640)).unwrap();
    let mt = fs::metadata(&lp).unwrap().mtime();
    assert_eq!(t.r("/etc/passwd", true, Op::Modify), t.h("upper/etc/passwd"));
    let md = fs::metadata(t.root.join("upper/etc/passwd")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o640, mt));
    assert_eq!(fs::read(t.root.join("upper/etc/passwd")).unwrap(), b"guest passwd\n");
    assert_eq!(t.read("/etc/passwd"), t.h("upper/etc/passwd"));
    // Create: parents copied up with their modes.
    fs::set_permissions(t.root.join("lower/usr/lib/x"), fs::Permissions::from_mode(0o751)).unwrap();
    assert_eq!(t.r("/usr/lib/x/new", true, Op::Create), t.h("upper/usr/lib/x/new"));
    assert_eq!(fs::metadata(t.root.join("upper/usr/lib/x")).unwrap().mode() & 0o7777, 0o751);
    // O_CREAT on an existing lower file: copied up.
    assert_eq!(t.r("/usr/bin/sh", true, Op::Create), t.h("upper/usr/bin/sh"));
    assert!(t.root.join("upper/usr/bin/sh").is_file());
    assert_eq!(t.r("/usr", true, Op::Create), Outcome::Fail(libc::EEXIST));
    // Modify of a lower dir makes the upper dir; of a symlink (nofollow) copies the link.
    assert_eq!(t.r("/home", true, Op::Modify), t.h("upper/home"));
    assert_eq!(t.r("/bin", false, Op::Modify), t.h("upper/bin"));
    assert_eq!(fs::read_link(t.root.join("upper/bin")).unwrap(), Path::new("usr/bin"));
    // Through the symlink, the file in upper is found.
    assert_eq!(t.read("/bin/sh"), t.h("upper/usr/bin/sh"));
    assert_eq!(t.r("/nope", true, Op::Modify), Outcome::Fail(libc::ENOENT));
}

#[test]
fn view_union_whiteouts() {
    let mut t = mk(true, |_| vec![]);
    assert_eq!(t.r("/etc/passwd", false, Op::Remove { dir: false }), Outcome::Done(0));
    assert!(is_wh(&t.root.join("upper/etc/passwd")));
    assert_eq!(t.read("/etc/passwd"), Outcome::Fail(libc::ENOENT));
    assert_eq!(t.r("/etc/passwd", false, Op::Remove { dir: false }), Outcome::Fail(libc::ENOENT));
    // Recreate over the whiteout.
    assert_eq!(t.r("/etc/passwd", true, Op::Create), t.h("upper/etc/passwd"));
    assert!(!t.root.join("upper/etc/passwd").exists());
    fs::write(t.root.join("upper/etc/passwd"), "new").unwrap();
    assert_eq!(t.read("/etc/passwd"), t.h("upper/etc/passwd"));
    // Remove of a file in both layers: upper copy gone, whiteout made.
    assert_eq!(t.r("/etc/passwd", false, Op::Remove { dir: false }), Outcome::Done(0));
    assert!(is_wh(&t.root.join("upper/etc/passwd")));
    // Upper-only file: the kernel unlinks it.
    assert_eq!(t.r("/etc/mine", true, Op::Create), t.h("upper/etc/mine"));
    fs::write(t.root.join("upper/etc/mine"), "").unwrap();
    assert_eq!(t.r("/etc/mine", false, Op::Remove { dir: false }), t.h("upper/etc/mine"));
    // rmdir: not empty in the merged view, then empty once its lower file is whited out.
    assert_eq!(t.r("/usr/lib/x", false, Op::Remove { dir: true }), Outcome::Fail(libc::ENOTEMPTY));
    assert_eq!(t.r("/usr/lib/x/libc.so", false, Op::Remove { dir: false }), Outcome::Done(0));
    assert_eq!(t.r("/usr/lib/x", false, Op::Remove { dir: true }), Outcome::Done(0));
    assert!(is_wh(&t.root.join("upper/usr/lib/x")));
    assert_eq!(t.read("/usr/lib/x"), Outcome::Fail(libc::ENOENT));
    // mkdir over a whiteout of a lower dir: opaque, the old contents stay hidden.
    assert_eq!(t.r("/usr/lib/x", true, Op::Create), t.h("upper/usr/lib/x"));
    fs::create_dir(t.root.join("upper/usr/lib/x")).unwrap();
    assert_eq!(t.read("/usr/lib/x/libc.so"), Outcome::Fail(libc::ENOENT));
    assert_eq!(
        xattr(&t.root.join("upper/usr/lib/x")),
        Some(b"y".to_vec())
    );
    assert_eq!(t.r("/etc", false, Op::Remove { dir: false }), Outcome::Fail(libc::EISDIR));
    assert_eq!(t.r("/usr/bin/sh", false, Op::Remove { dir: true }), Outcome::Fail(libc::ENOTDIR));
}

fn xattr(p: &Path) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut v = [0u8; 8];
    let n = unsafe { libc::lgetxattr(c.as_ptr(), c"user.overlay.opaque".as_ptr(), v.as_mut_ptr().cast(), 8) };
    (n >= 0).then(|| v[..n as usize].to_vec())
}

#[test]
fn view_union_opaque_and_shadow() {
    let mut t = mk(true, |_| vec![]);
    // An opaque upper dir hides the lower contents.
    fs::create_dir_all(t.root.join("upper/usr/lib/x")).unwrap();
    fs::write(t.root.join("upper/usr/lib/x/only"), "").unwrap();
    assert_eq!(t.read("/usr/lib/x/libc.so"), t.h("lower/usr/lib/x/libc.so"));
    let c = std::ffi::CString::new(t.root.join("upper/usr/lib/x").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::lsetxattr(c.as_ptr(), c"user.overlay.opaque".as_ptr(), b"y".as_ptr().cast(), 1, 0) }, 0);
    // The upper layer changed behind the view's back (its lookups are cached between its own
    // writes): as when a `--write=DIR` layer is used again by a new task.
    t.view = View::new(t.view.layout().clone());
    assert_eq!(t.read("/usr/lib/x/libc.so"), Outcome::Fail(libc::ENOENT));
    assert_eq!(t.read("/usr/lib/x/only"), t.h("upper/usr/lib/x/only"));
    // A symlink in upper shadowing a lower dir.
    symlink("/etc", t.root.join("upper/home")).unwrap();
    t.view = View::new(t.view.layout().clone());
    assert_eq!(t.read("/home/passwd"), t.h("lower/etc/passwd"));
    // A hostile chain in upper stays inside.
    symlink("../../../../../../../../../../etc", t.root.join("upper/esc")).unwrap();
    t.view = View::new(t.view.layout().clone());
    assert_eq!(t.read("/esc/passwd"), t.h("lower/etc/passwd"));
    // guest_path of upper paths.
    assert_eq!(t.view.guest_path(&t.root.join("upper/usr/lib")).unwrap(), Path::new("/usr/lib"));
}

#[test]
fn view_union_rename() {
    let mut t = mk(true, |_| vec![]);
    let b = t.root.join("lower");
    let base = Base { host_dir: &b, tid: 1 };
    // A lower file: copied up, moved, whiteout left.
    assert_eq!(t.view.rename((&base, b"/etc/passwd"), (&base, b"/usr/pw"), 0), (Outcome::Done(0), Outcome::Done(0)));
    assert!(is_wh(&t.root.join("upper/etc/passwd")));
    assert_eq!(fs::read(t.root.join("upper/usr/pw")).unwrap(), b"guest passwd\n");
    // A lower dir: EXDEV.
    assert_eq!(t.view.rename((&base, b"/usr/lib"), (&base, b"/lib2"), 0), (Outcome::Fail(libc::EXDEV), Outcome::Fail(libc::EXDEV)));
    // Upper-only: the kernel renames; over a whiteout, which is cleared.
    fs::write(t.root.join("upper/etc/mine"), "").unwrap();
    assert_eq!(
        t.view.rename((&base, b"/etc/mine"), (&base, b"/etc/passwd"), 0),
        (t.h("upper/etc/mine"), t.h("upper/etc/passwd"))
    );
    assert!(!t.root.join("upper/etc/passwd").exists());
    // NOREPLACE.
    assert_eq!(t.view.rename((&base, b"/usr/pw"), (&base, b"/usr/bin/sh"), 1), (Outcome::Fail(libc::EEXIST), Outcome::Fail(libc::EEXIST)));
    assert_eq!(t.view.rename((&base, b"/usr/pw"), (&base, b"/nope/x"), 0), (Outcome::Fail(libc::ENOENT), Outcome::Fail(libc::ENOENT)));
}

#[test]
fn view_union_listing() {
    let mut t = mk(true, |_| vec![]);
    assert_eq!(t.view.listing(&t.root.join("lower/etc")), None);
    assert_eq!(t.r("/usr/bin/new", true, Op::Create), t.h("upper/usr/bin/new"));
    fs::write(t.root.join("upper/usr/bin/new"), "").unwrap();
    assert_eq!(t.r("/usr/bin/sh", false, Op::Remove { dir: false }), Outcome::Done(0));
    let l = t.view.listing(&t.root.join("upper/usr/bin")).unwrap();
    let mut names: Vec<_> = fs::read_dir(&l).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["new"]);
    assert_eq!(t.view.guest_path(&l).unwrap(), Path::new("/usr/bin"));
    // The same listing while nothing changed; a new one after a change.
    assert_eq!(t.view.listing(&t.root.join("upper/usr/bin")).unwrap(), l);
    let l = t.view.listing(&t.root.join("upper/usr")).unwrap();
    let mut names: Vec<_> = fs::read_dir(&l).unwrap().map(|e| (e.as_ref().unwrap().file_name().into_string().unwrap(), e.unwrap().file_type().unwrap().is_dir())).collect();
    names.sort();
    assert_eq!(names, [("bin".to_string(), true), ("etc-abs".to_string(), false), ("lib".to_string(), true)]);
}

/// cargo test -p lpmx-shim --release view_bench -- --ignored --nocapture
#[test]
#[ignore]
fn view_bench() {
    for upper in [false, true] {
        let mut t = mk(upper, |r| vec![bind("/proc", Path::new("/proc"), false), bind("/data", &r.join("host/data"), false)]);
        if upper {
            fs::create_dir_all(t.root.join("upper/usr/lib")).unwrap();
        }
        let b = t.root.join("lower");
        let base = Base { host_dir: &b, tid: 1 };
        // What one lstat costs here, for scale.
        let c = std::ffi::CString::new(t.root.join("upper/nope").as_os_str().as_encoded_bytes()).unwrap();
        let t0 = std::time::Instant::now();
        for _ in 0..200_000 {
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            std::hint::black_box(unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) });
        }
        println!("one lstat (ENOENT): {:.0} ns", t0.elapsed().as_nanos() as f64 / 200_000.0);
        for (path, _) in [("/usr/lib/x/libc.so", 0), ("/bin/sh", 0), ("/data/sub/../f", 0), ("usr/lib/x/libc.so", 0)] {
            let n = 200_000;
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(t.view.resolve(&base, path.as_bytes(), true, Op::Read));
            }
            let ns = t0.elapsed().as_nanos() as f64 / n as f64;
            println!("upper={upper} {path}: {ns:.0} ns");
        }
    }
}

/// The upper lookups cached across reads must not survive the kernel's own changes to names
/// the view handed it.
#[test]
fn view_union_cache_follows_kernel_writes() {
    let mut t = mk(true, |_| vec![]);
    assert_eq!(t.read("/usr/lib/x/libc.so"), t.h("lower/usr/lib/x/libc.so"));
    // mkdir by the kernel of a name the view handed out, then a file in it.
    assert_eq!(t.r("/usr/d", true, Op::Create), t.h("upper/usr/d"));
    assert_eq!(t.read("/usr/d/f"), Outcome::Fail(libc::ENOENT)); // before the kernel ran
    fs::create_dir(t.root.join("upper/usr/d")).unwrap();
    fs::write(t.root.join("upper/usr/d/f"), "").unwrap();
    assert_eq!(t.read("/usr/d/f"), t.h("upper/usr/d/f"));
    // Renamed by the kernel (upper-only): the old name is gone, the new one is there.
    let b = t.root.join("lower");
    let base = Base { host_dir: &b, tid: 1 };
    assert_eq!(t.view.rename((&base, b"/usr/d"), (&base, b"/usr/e"), 0), (t.h("upper/usr/d"), t.h("upper/usr/e")));
    assert_eq!(t.read("/usr/d/f"), t.h("upper/usr/d/f")); // before the kernel ran
    fs::rename(t.root.join("upper/usr/d"), t.root.join("upper/usr/e")).unwrap();
    assert_eq!(t.read("/usr/d/f"), Outcome::Fail(libc::ENOENT));
    assert_eq!(t.read("/usr/e/f"), t.h("upper/usr/e/f"));
    // Unlinked by the kernel.
    assert_eq!(t.r("/usr/e/f", false, Op::Remove { dir: false }), t.h("upper/usr/e/f"));
    fs::remove_file(t.root.join("upper/usr/e/f")).unwrap();
    assert_eq!(t.read("/usr/e/f"), Outcome::Fail(libc::ENOENT));
}

#[test]
fn view_opaque_on_drop() {
    let mut t = mk(true, |_| vec![]);
    assert_eq!(t.r("/usr/lib/x", true, Op::Remove { dir: true }), Outcome::Fail(libc::ENOTEMPTY));
    assert_eq!(t.r("/usr/lib/x/libc.so", false, Op::Remove { dir: false }), Outcome::Done(0));
    assert_eq!(t.r("/usr/lib/x", false, Op::Remove { dir: true }), Outcome::Done(0));
    assert_eq!(t.r("/usr/lib/x", true, Op::Create), t.h("upper/usr/lib/x"));
    fs::create_dir(t.root.join("upper/usr/lib/x")).unwrap();
    let v = std::mem::replace(&mut t.view, View::new(lay(&t.root, true, vec![])));
    drop(v);
    assert_eq!(xattr(&t.root.join("upper/usr/lib/x")), Some(b"y".to_vec()));
}

#[test]
fn view_rename_dir_over_lower_dir_and_exchange() {
    let mut t = mk(true, |_| vec![]);
    let b = t.root.join("lower");
    let base = Base { host_dir: &b, tid: 1 };
    fs::create_dir_all(t.root.join("lower/opt/e")).unwrap();
    t.view = View::new(t.view.layout().clone());
    assert_eq!(t.r("/newd", true, Op::Create), t.h("upper/newd"));
    fs::create_dir(t.root.join("upper/newd")).unwrap();
    // Over a non-empty lower dir: ENOTEMPTY; over an empty one: the moved dir hides it.
    assert_eq!(t.view.rename((&base, b"/newd"), (&base, b"/usr/lib"), 0), (Outcome::Fail(libc::ENOTEMPTY), Outcome::Fail(libc::ENOTEMPTY)));
    assert_eq!(t.view.rename((&base, b"/newd"), (&base, b"/opt/e"), 0), (t.h("upper/newd"), t.h("upper/opt/e")));
    assert_eq!(xattr(&t.root.join("upper/newd")), Some(b"y".to_vec()));
    assert_eq!(t.view.rename((&base, b"/etc/passwd"), (&base, b"/usr/bin/sh"), 2), (Outcome::Fail(libc::EXDEV), Outcome::Fail(libc::EXDEV)));
    assert_eq!(t.view.rename((&base, b"/usr"), (&base, b"/usr/lib/z"), 0).0, Outcome::Fail(libc::EINVAL));
    assert_eq!(t.view.rename((&base, b"/usr"), (&base, b"/usr2"), 0).0, Outcome::Fail(libc::EXDEV));
}
