//! The mount plan, checked against the recording double: no privileges needed.

use super::syscall::{Call, Node, Real, Recorder};
use super::*;

const TREE: &str = "/cache/images/abc";
const R: &str = "/cache/images/abc/mnt/root";

/// A host with the usual directories and an image tree holding a small image.
fn host() -> Recorder {
    let r = Recorder::new();
    r.dir("/proc/self")
        .dir("/sys/class")
        .dir("/dev/shm")
        .dir("/tmp")
        .dir("/home/alice/work")
        .dir("/data/in")
        .file("/etc/hosts", "127.0.0.1 localhost\n")
        .file("/etc/resolv.conf", "nameserver 10.0.0.1\n")
        .file("/usr/bin/bash", "")
        .dir(&format!("{TREE}/mnt"))
        .file(&format!("{TREE}/root/bin/sh"), "ELF")
        .file(&format!("{TREE}/root/usr/bin/env"), "ELF")
        .file(
            &format!("{TREE}/root/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n",
        )
        .file(&format!("{TREE}/root/etc/group"), "root:x:0:\n")
        .file(&format!("{TREE}/root/etc/os-release"), "ID=test\n")
        .link(&format!("{TREE}/root/lib64"), "usr/lib64")
        .dir(&format!("{TREE}/root/usr/lib64"))
        .dir(&format!("{TREE}/root/work"));
    r.mount_point_flags(
        "/sys",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME,
    )
    .mount_point_flags("/data", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME)
    .mount_point_flags("/cache", libc::MS_NODEV | libc::MS_STRICTATIME);
    r
}

fn me() -> Identity {
    Identity {
        user: "alice".into(),
        uid: 1234,
        group: "hpc".into(),
        gid: 500,
        home: "/home/alice".into(),
        shell: "/usr/bin/bash".into(),
        gecos: String::new(),
    }
}

fn spec(write: Write, user: &[&str]) -> Spec {
    let view = HostView {
        home: Some("/home/alice".into()),
        cwd: Some("/home/alice/work".into()),
        tmpdir: Some("/scratch/job42".into()),
    };
    Spec {
        image: "reg/img:1".into(),
        tree: TREE.into(),
        ids: IdMap {
            inside_uid: 1234,
            outside_uid: 1234,
            inside_gid: 500,
            outside_gid: 500,
        },
        identity: me(),
        write,
        default_binds: default_binds(&view),
        user_binds: user
            .iter()
            .map(|b| parse_bind(b, Path::new("/home/alice/work")).unwrap())
            .collect(),
        workdir: None,
        image_workdir: None,
        host_cwd: Some("/home/alice/work".into()),
        command_given: false,
        tmpfs_size: None,
        try_overlay: true,
        bridge: None,
        mpi_libs: None,
    }
}

fn quiet(_: &str) {}

/// Mounts as (source, target, flags), binds and remounts alike.
fn mounts(calls: &[Call]) -> Vec<(Option<String>, String, libc::c_ulong)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Mount {
                source,
                target,
                flags,
                ..
            } => Some((
                source.as_ref().map(|s| s.display().to_string()),
                target.display().to_string(),
                *flags,
            )),
            _ => None,
        })
        .collect()
}

fn position(calls: &[Call], f: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("no such call in {calls:#?}"))
}

fn bind_of(calls: &[Call], target: &str) -> usize {
    position(calls, |c| {
        matches!(c, Call::Mount { target: t, flags, .. }
            if t == Path::new(target) && flags & libc::MS_BIND != 0 && flags & libc::MS_REMOUNT == 0)
    })
}

fn remount_of(calls: &[Call], target: &str) -> Option<libc::c_ulong> {
    calls.iter().find_map(|c| match c {
        Call::Mount {
            target: t, flags, ..
        } if t == Path::new(target) && flags & libc::MS_REMOUNT != 0 => Some(*flags),
        _ => None,
    })
}

#[test]
fn namespaces_maps_and_overlay_come_first() {
    let r = host();
    let e = enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap();
    assert!(e.overlay);
    let calls = r.calls();
    assert_eq!(
        calls[0],
        Call::Unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS),
        "a user and a mount namespace, nothing else"
    );
    assert_eq!(
        calls[1..4],
        [
            Call::WriteFile("/proc/self/setgroups".into(), "deny".into()),
            Call::WriteFile("/proc/self/uid_map".into(), "1234 1234 1".into()),
            Call::WriteFile("/proc/self/gid_map".into(), "500 500 1".into()),
        ]
    );
    let m = mounts(&calls);
    assert!(
        !m.iter().any(|x| x.2 & libc::MS_PRIVATE != 0),
        "no propagation change: the new user namespace makes the host's mounts slaves"
    );
    assert_eq!(
        m[0],
        (
            Some("tmpfs".into()),
            format!("{TREE}/mnt"),
            libc::MS_NOSUID | libc::MS_NODEV
        )
    );
    let overlay = calls
        .iter()
        .find_map(|c| match c {
            Call::Mount {
                fstype: Some(t),
                data,
                target,
                ..
            } if t == "overlay" => Some((target.clone(), data.clone().unwrap())),
            _ => None,
        })
        .unwrap();
    assert_eq!(overlay.0, Path::new(R));
    assert_eq!(
        overlay.1,
        format!("lowerdir={TREE}/root,upperdir={TREE}/mnt/upper,workdir={TREE}/mnt/work,userxattr")
    );
}

#[test]
fn default_binds_in_table_order_and_sys_read_only_with_locked_flags() {
    let r = host();
    enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap();
    let calls = r.calls();
    let order: Vec<usize> = ["proc", "sys", "dev", "tmp", "home/alice", "etc/hosts"]
        .iter()
        .map(|p| bind_of(&calls, &format!("{R}/{p}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    // Directories recursively, files plainly.
    let m = mounts(&calls);
    let flags_of = |t: &str| {
        m.iter()
            .find(|x| x.1 == t && x.2 & libc::MS_REMOUNT == 0)
            .unwrap()
            .2
    };
    assert_eq!(flags_of(&format!("{R}/dev")), libc::MS_BIND | libc::MS_REC);
    assert_eq!(flags_of(&format!("{R}/etc/hosts")), libc::MS_BIND);
    // /sys: remounted read-only repeating nosuid, nodev, noexec and relatime.
    assert_eq!(
        remount_of(&calls, &format!("{R}/sys")),
        Some(
            libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | libc::MS_RELATIME
        )
    );
    assert_eq!(remount_of(&calls, &format!("{R}/proc")), None);
    assert!(
        !calls.iter().any(|c| matches!(c, Call::SetReadOnly(..))),
        "tried, ENOSYS, hence the remount"
    );
    // The cwd lies in $HOME, bound already; $TMPDIR does not exist here: both skipped.
    assert!(!m
        .iter()
        .any(|x| x.1.ends_with("/work") || x.1.contains("scratch")));
    // Mount points the image lacks were made in the merged root (the tmpfs upper).
    assert!(calls.contains(&Call::Mkdir(format!("{R}/proc").into())));
    assert!(calls.contains(&Call::Mkdir(format!("{R}/home").into())));
    assert!(calls.contains(&Call::CreateFile(format!("{R}/etc/hosts").into())));
}

#[test]
fn user_binds_follow_defaults_and_identity_files() {
    let r = host();
    enter(
        &r,
        &spec(Write::ReadOnly, &["/data/in:/input:ro", "/data:/mnt/d"]),
        &quiet,
    )
    .unwrap();
    let calls = r.calls();
    let passwd = bind_of(&calls, &format!("{R}/etc/passwd"));
    let input = bind_of(&calls, &format!("{R}/input"));
    let d = bind_of(&calls, &format!("{R}/mnt/d"));
    let last_default = bind_of(&calls, &format!("{R}/etc/resolv.conf"));
    assert!(last_default < passwd && passwd < input && input < d);
    // Read-only: remounted with the source mount's locked flags.
    assert_eq!(
        remount_of(&calls, &format!("{R}/input")),
        Some(
            libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOATIME
        )
    );
    assert_eq!(remount_of(&calls, &format!("{R}/mnt/d")), None);
}

#[test]
fn passwd_and_group_are_new_files_bound_over_the_images() {
    let r = host();
    enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap();
    let calls = r.calls();
    assert!(
        calls.contains(&Call::WriteFile(
            format!("{TREE}/mnt/passwd").into(),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1234:500::/home/alice:/bin/sh\n".into()
        )),
        "the host shell is not in the image, so /bin/sh: {calls:#?}"
    );
    assert!(calls.contains(&Call::WriteFile(
        format!("{TREE}/mnt/group").into(),
        "root:x:0:\nhpc:x:500:\n".into()
    )));
    // The image's own file is untouched; after pivot_root / is the root.
    assert_eq!(r.text("/etc/os-release"), "ID=test\n");
    assert!(r.text("/etc/passwd").contains("alice:x:1234"));
    // Nothing was written under the image tree's root/.
    assert!(!calls.iter().any(|c| match c {
        Call::WriteFile(p, _) | Call::Mkdir(p) | Call::CreateFile(p) | Call::Symlink(_, p) =>
            p.starts_with(format!("{TREE}/root")),
        _ => false,
    }));
}

#[test]
fn root_is_read_only_then_pivot_root_after_every_mount() {
    let r = host();
    let e = enter(&r, &spec(Write::ReadOnly, &["/data:/mnt/d"]), &quiet).unwrap();
    let calls = r.calls();
    let ro = position(&calls, |c| {
        matches!(c, Call::Mount { target, flags, .. }
            if target == Path::new(R) && flags & libc::MS_RDONLY != 0)
    });
    let pivot = position(&calls, |c| matches!(c, Call::PivotRoot(..)));
    let last_mount = calls
        .iter()
        .rposition(|c| matches!(c, Call::Mount { .. }))
        .unwrap();
    assert_eq!(
        last_mount, ro,
        "the read-only remount of the root is the last mount"
    );
    assert!(ro < pivot);
    assert_eq!(calls[pivot - 1], Call::Chdir(R.into()));
    assert_eq!(calls[pivot], Call::PivotRoot(".".into(), ".".into()));
    assert_eq!(
        calls[pivot + 1],
        Call::Umount2(".".into(), libc::MNT_DETACH)
    );
    assert_eq!(
        e.workdir,
        Path::new("/home/alice/work"),
        "the host cwd, bound"
    );
    assert_eq!(calls.last(), Some(&Call::Chdir("/home/alice/work".into())));

    for (w, want) in [
        (Write::Scratch, false),
        (Write::Persistent("/data/keep".into()), false),
    ] {
        let r = host();
        enter(&r, &spec(w, &[]), &quiet).unwrap();
        let calls = r.calls();
        assert_eq!(remount_of(&calls, R).is_some(), want, "{calls:#?}");
    }
}

#[test]
fn persistent_write_dir_is_the_upper_layer() {
    let r = host();
    enter(
        &r,
        &spec(Write::Persistent("/data/keep".into()), &[]),
        &quiet,
    )
    .unwrap();
    let calls = r.calls();
    let data = calls
        .iter()
        .find_map(|c| match c {
            Call::Mount {
                fstype: Some(t),
                data,
                ..
            } if t == "overlay" => data.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        data,
        format!("lowerdir={TREE}/root,upperdir=/data/keep/upper,workdir=/data/keep/work,userxattr")
    );
    assert!(calls.contains(&Call::Mkdir("/data/keep/upper".into())));

    let r = host();
    let r = Recorder {
        overlay_errno: Some(libc::EINVAL),
        ..r
    };
    let e = enter(
        &r,
        &spec(Write::Persistent("/data/keep".into()), &[]),
        &quiet,
    )
    .unwrap_err();
    assert!(matches!(e, Error::PersistentNeedsOverlay { .. }), "{e}");
    assert!(e.to_string().contains("--write=/data/keep"), "{e}");
}

#[test]
fn fallback_binds_top_level_entries_read_only() {
    let r = Recorder {
        overlay_errno: Some(libc::EPERM),
        ..host()
    };
    let logged = std::cell::RefCell::new(String::new());
    let log = |m: &str| logged.borrow_mut().push_str(m);
    let e = enter(&r, &spec(Write::ReadOnly, &["/data:/data"]), &log).unwrap();
    assert!(!e.overlay);
    assert!(logged.borrow().contains("overlayfs unavailable"));
    let calls = r.calls();
    // The root is a directory of the tmpfs made a mount point by a bind onto itself.
    let self_bind = position(
        &calls,
        |c| matches!(c, Call::Mount { source: Some(s), target, .. } if s == Path::new(R) && target == Path::new(R)),
    );
    let locked =
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NODEV | libc::MS_STRICTATIME;
    for d in ["bin", "etc", "usr", "work"] {
        let t = format!("{R}/{d}");
        assert!(bind_of(&calls, &t) > self_bind);
        assert_eq!(remount_of(&calls, &t), Some(locked), "{d}");
        let src = calls.iter().find_map(|c| match c {
            Call::Mount {
                source: Some(s),
                target,
                ..
            } if target == Path::new(&t) => Some(s.clone()),
            _ => None,
        });
        assert_eq!(src, Some(format!("{TREE}/root/{d}").into()));
    }
    assert!(calls.contains(&Call::Symlink(
        "usr/lib64".into(),
        format!("{R}/lib64").into()
    )));
    // A top-level mount point is created in the tmpfs; binds come after the image's entries.
    assert!(calls.contains(&Call::Mkdir(format!("{R}/data").into())));
    assert!(bind_of(&calls, &format!("{R}/data")) > bind_of(&calls, &format!("{R}/work")));
    // /etc/hosts exists nowhere in this image's /etc: it cannot be created there, so skipped.
    assert!(
        logged.borrow().contains("not binding /etc/hosts"),
        "{}",
        logged.borrow()
    );
}

#[test]
fn fallback_cannot_create_mount_points_inside_image_dirs() {
    let r = Recorder {
        overlay_errno: Some(libc::EINVAL),
        ..host()
    };
    let e = enter(
        &r,
        &spec(Write::ReadOnly, &["/data:/usr/local/data"]),
        &quiet,
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::MountPoint { .. }), "{text}");
    assert!(
        text.contains("/usr/local/data") && text.contains("read-only"),
        "{text}"
    );
    assert!(!r.calls().iter().any(|c| matches!(c, Call::PivotRoot(..))));
}

#[test]
fn no_mount_point_is_created_inside_a_host_directory() {
    let r = host();
    let e = enter(&r, &spec(Write::ReadOnly, &["/data:/tmp/new/x"]), &quiet).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("/tmp") && text.contains("host directory"),
        "{text}"
    );
    assert!(r.node("/tmp/new").is_none(), "nothing created on the host");
}

#[test]
fn missing_default_sources_are_skipped_missing_user_sources_are_errors() {
    let r = host();
    r.fs.borrow_mut().retain(|k, _| k != "/etc/resolv.conf");
    enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap();
    let m = mounts(&r.calls());
    assert!(!m.iter().any(|x| x.1.ends_with("/etc/resolv.conf")));

    let r = host();
    let e = enter(&r, &spec(Write::ReadOnly, &["/nowhere:/x"]), &quiet).unwrap_err();
    assert!(matches!(e, Error::BindSource { .. }));
    let text = e.to_string();
    assert!(
        text.contains("reg/img:1")
            && text.contains("/nowhere")
            && text.contains(crate::host::hostname()),
        "{text}"
    );
    assert_eq!(e.exit_code(), crate::exit::OWN_FAILURE);
}

#[test]
fn image_symlinks_lead_mount_points_inside_the_root() {
    let r = host();
    r.link(&format!("{TREE}/root/tmp"), "/var/tmp")
        .dir(&format!("{TREE}/root/var/tmp"));
    enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap();
    let calls = r.calls();
    bind_of(&calls, &format!("{R}/var/tmp"));
    assert!(!mounts(&calls).iter().any(|m| m.1 == "/var/tmp"));
}

#[test]
fn a_kind_mismatch_is_an_error_for_user_binds() {
    let r = host();
    let e = enter(
        &r,
        &spec(Write::ReadOnly, &["/data:/etc/os-release"]),
        &quiet,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("has a file there but the source is a directory"),
        "{e}"
    );
}

#[test]
fn workdir_precedence() {
    let mut s = spec(Write::ReadOnly, &[]);
    s.workdir = Some("/work".into());
    s.image_workdir = Some("/nope".into());
    let r = host();
    assert_eq!(enter(&r, &s, &quiet).unwrap().workdir, Path::new("/work"));

    // The image's WorkingDir, created in the scratch layer when missing.
    s.workdir = None;
    let r = host();
    assert_eq!(enter(&r, &s, &quiet).unwrap().workdir, Path::new("/nope"));
    assert!(r.calls().contains(&Call::Mkdir(format!("{R}/nope").into())));

    // No WorkingDir and a cwd that no bind shows: /.
    s.image_workdir = None;
    s.host_cwd = Some("/opt/elsewhere".into());
    let r = host();
    assert_eq!(enter(&r, &s, &quiet).unwrap().workdir, Path::new("/"));

    s.workdir = Some("relative".into());
    let r = host();
    assert!(enter(&r, &s, &quiet)
        .unwrap_err()
        .to_string()
        .contains("absolute"));
}

#[test]
fn refuses_to_enter_with_threads() {
    let r = Recorder {
        threads: 3,
        ..host()
    };
    let e = enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap_err();
    assert!(matches!(e, Error::Threads { threads: 3, .. }));
    assert!(r.calls().is_empty(), "nothing attempted");

    // The real check, on this (multi-threaded) test process.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let e = ensure_single_threaded(&Real, "img").unwrap_err();
    assert!(e.to_string().contains("single thread"), "{e}");
    drop(tx);
    t.join().unwrap().unwrap_err();
    // A forked child has one thread.
    let out = crate::host::probe::in_child(std::time::Duration::from_secs(10), |_| {
        i32::from(ensure_single_threaded(&Real, "img").is_err())
    })
    .unwrap();
    assert_eq!(out, crate::host::probe::Outcome::Exited(0, String::new()));
}

#[test]
fn denied_user_namespace_names_the_setting() {
    let r = Recorder {
        unshare_errno: Some(libc::EPERM),
        ..host()
    };
    let e = enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap_err();
    assert!(matches!(e, Error::Userns { .. }));
    let t = e.to_string();
    assert!(
        t.contains("refuses an unprivileged user namespace") && t.contains("reg/img:1"),
        "{t}"
    );
}

#[test]
fn fakeroot_maps_zero() {
    let mut s = spec(Write::ReadOnly, &[]);
    s.ids.inside_uid = 0;
    s.ids.inside_gid = 0;
    s.identity = identity::host_identity(true);
    let r = host();
    enter(&r, &s, &quiet).unwrap();
    let calls = r.calls();
    assert!(calls.contains(&Call::WriteFile(
        "/proc/self/uid_map".into(),
        "0 1234 1".into()
    )));
    assert!(calls.contains(&Call::WriteFile(
        format!("{TREE}/mnt/passwd").into(),
        "root:x:0:0:root:/root:/bin/sh\n".into()
    )));
}

fn env(path: &str) -> Vec<(OsString, OsString)> {
    vec![("PATH".into(), path.into()), ("A".into(), "b".into())]
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn exec_searches_the_containers_path() {
    let r = Recorder {
        executables: ["/bin/solver".into()].into(),
        ..Recorder::new()
    };
    r.file("/usr/bin/solver", "ELF")
        .file("/bin/solver", "ELF")
        .dir("/empty");
    let e = exec(
        &r,
        "img",
        &argv(&["solver", "-n", "4"]),
        &env("/empty:/nodir:/usr/bin:/bin"),
    );
    assert!(e.to_string().contains("exec'd"), "{e}");
    // /usr/bin/solver is not executable (EACCES): the search goes on, as execvp's does.
    assert_eq!(
        r.calls(),
        [
            Call::ResetSignals,
            Call::Execve("/bin/solver".into(), argv(&["solver", "-n", "4"]))
        ]
    );
}

#[test]
fn exec_failures_map_to_127_and_126() {
    let r = Recorder::new();
    r.file("/bin/data", "text").dir("/bin/dir");
    let e = exec(&r, "reg/img", &argv(&["nosuch"]), &env("/usr/bin:/bin"));
    assert_eq!(e.exit_code(), 127);
    assert_eq!(
        e.to_string(),
        "reg/img: nosuch: command not found in the container (PATH=/usr/bin:/bin)"
    );
    let e = exec(&r, "reg/img", &argv(&["/no/such"]), &env("/bin"));
    assert_eq!(e.exit_code(), 127);
    let e = exec(&r, "reg/img", &argv(&["data"]), &env("/bin"));
    assert_eq!(e.exit_code(), 126);
    assert!(
        e.to_string().contains("/bin/data: permission denied"),
        "{e}"
    );
    let e = exec(&r, "reg/img", &argv(&["/bin/dir"]), &env("/bin"));
    assert_eq!(e.exit_code(), 126);
    assert_eq!(exec(&r, "reg/img", &[], &env("/bin")).exit_code(), 125);
    assert!(exec(&r, "i", &argv(&["a\0b"]), &env("/bin"))
        .to_string()
        .contains("NUL"));
}

#[test]
fn default_binds_skip_system_and_redundant_dirs() {
    let dsts = |v: HostView| -> Vec<String> {
        default_binds(&v)
            .iter()
            .map(|b| b.dst.display().to_string())
            .collect()
    };
    assert_eq!(
        dsts(HostView {
            home: Some("/home/a".into()),
            cwd: Some("/lustre/proj/run1".into()),
            tmpdir: Some("/tmp/slurm.42".into()),
        }),
        [
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/home/a",
            "/lustre/proj/run1",
            "/etc/hosts",
            "/etc/resolv.conf"
        ]
    );
    for bad in [
        "/",
        "/usr/bin",
        "/etc",
        "relative",
        "/dev/shm/x",
        "/home/a/sub",
    ] {
        let d = dsts(HostView {
            home: Some("/home/a".into()),
            cwd: Some(bad.into()),
            tmpdir: None,
        });
        assert_eq!(d.len(), 7, "{bad}: {d:?}");
    }
    let d = dsts(HostView::default());
    assert_eq!(d.len(), 6, "no home, cwd or TMPDIR: {d:?}");
    let b = default_binds(&HostView::default());
    assert!(b.iter().all(|b| b.spec.is_none()));
    assert!(b.iter().find(|b| b.dst == Path::new("/sys")).unwrap().ro);
}

#[test]
fn bind_specs() {
    let cwd = Path::new("/home/a/run");
    let b = parse_bind("/data", cwd).unwrap();
    assert_eq!(
        (b.src.as_path(), b.dst.as_path(), b.ro),
        (Path::new("/data"), Path::new("/data"), false)
    );
    let b = parse_bind("in:/input:ro", cwd).unwrap();
    assert_eq!(
        (b.src.as_path(), b.dst.as_path(), b.ro),
        (Path::new("/home/a/run/in"), Path::new("/input"), true)
    );
    let b = parse_bind("/x:/y/../z:rw", cwd).unwrap();
    assert_eq!(b.dst, Path::new("/z"));
    assert_eq!(b.spec.as_deref(), Some("/x:/y/../z:rw"));
    for bad in ["", ":/x", "/x:rel", "/x:/y:rx", "/a:/b:ro:z", "/x:/"] {
        let e = parse_bind(bad, cwd).unwrap_err();
        assert!(e.contains("SRC[:DST[:ro]]"), "{bad}: {e}");
    }
}

#[test]
fn command_lines() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (ep, cmd) = (s(&["/entry"]), s(&["--serve"]));
    assert_eq!(
        command_line(&ep, &cmd, &[], false),
        s(&["/entry", "--serve"])
    );
    assert_eq!(
        command_line(&ep, &cmd, &s(&["ls", "-l"]), false),
        s(&["ls", "-l"])
    );
    assert_eq!(
        command_line(&ep, &cmd, &s(&["-v"]), true),
        s(&["/entry", "-v"])
    );
    assert!(command_line(&[], &[], &[], false).is_empty());
}

#[test]
fn locked_flags_from_statvfs() {
    use super::syscall::locked_flags;
    assert_eq!(
        locked_flags(libc::ST_NOSUID | libc::ST_NODEV | libc::ST_RELATIME),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RELATIME
    );
    assert_eq!(
        locked_flags(libc::ST_NOEXEC),
        libc::MS_NOEXEC | libc::MS_STRICTATIME
    );
    assert_eq!(
        locked_flags(libc::ST_RDONLY | libc::ST_NOATIME),
        libc::MS_NOATIME
    );
    assert_eq!(
        super::syscall::threads_in_stat(
            b"42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 7 0 99 0 0\n"
        ),
        Some(7)
    );
    assert_eq!(super::syscall::threads_in_stat(b"42 (x"), None);
    // The real statvfs of /proc agrees with the mount's options in /proc/self/mountinfo.
    let f = Real.mount_flags(Path::new("/proc")).unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let opts = info
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .rfind(|f| f[4] == "/proc")
        .unwrap()[5]
        .to_string();
    for (name, flag) in [
        ("nosuid", libc::MS_NOSUID),
        ("nodev", libc::MS_NODEV),
        ("noexec", libc::MS_NOEXEC),
        ("relatime", libc::MS_RELATIME),
        ("noatime", libc::MS_NOATIME),
    ] {
        assert_eq!(
            opts.split(',').any(|o| o == name),
            f & flag != 0,
            "{name} in {opts}"
        );
    }
    let _ = Node::Dir;
}

#[test]
fn the_bridge_lives_in_the_tasks_tmpfs_bound_read_only() {
    for (loader, write) in [
        (Some("/lib64/ld-linux-x86-64.so.2"), Write::ReadOnly),
        (None, Write::Persistent("/data/keep".into())),
    ] {
        let r = host();
        r.file("/opt/lpmx/lpmx-job", "ELF")
            .file("/lib64/ld-linux-x86-64.so.2", "ELF")
            .file("/lib/x86_64-linux-gnu/libc.so.6", "ELF")
            .dir("/run/user/1234/lpmx-bridge.7.0");
        let mut s = spec(write, &[]);
        s.bridge = Some(BridgeMounts {
            exe: "/opt/lpmx/lpmx-job".into(),
            loader: loader.map(PathBuf::from),
            libs: vec!["/lib/x86_64-linux-gnu/libc.so.6".into()],
            socket_dir: "/run/user/1234/lpmx-bridge.7.0".into(),
            names: vec!["sbatch".into(), "squeue".into()],
        });
        enter(&r, &s, &quiet).unwrap();
        let calls = r.calls();
        let top = format!("{TREE}/mnt/lpmx");
        // Filled in the tmpfs, never in the root (nor in a --write=DIR).
        let created: Vec<String> = calls
            .iter()
            .filter_map(|c| match c {
                Call::CreateFile(p) | Call::Symlink(_, p) => Some(p.display().to_string()),
                _ => None,
            })
            .filter(|p| p.contains("lpmx"))
            .collect();
        assert!(created.iter().all(|p| p.starts_with(&top)), "{created:?}");
        assert!(!calls.iter().any(|c| matches!(c, Call::Mkdir(p)
            if p.starts_with("/data/keep") && p.to_string_lossy().contains(".lpmx/"))));
        match loader {
            Some(_) => assert!(calls.contains(&Call::WriteFile(
                format!("{top}/bin/sbatch").into(),
                "#!/.lpmx/lib/lpmx-job.libs/ld-linux-x86-64.so.2 /.lpmx/lib/lpmx-bridge\n".into()
            ))),
            None => assert!(calls.contains(&Call::Symlink(
                "/.lpmx/lib/lpmx-bridge".into(),
                format!("{top}/bin/squeue").into()
            ))),
        }
        // /.lpmx is bound read-only, then the executable, libraries and socket onto it.
        let at = |p: &str| format!("{R}/.lpmx{p}");
        let dir = bind_of(&calls, &at(""));
        assert!(remount_of(&calls, &at("")).is_some_and(|f| f & libc::MS_RDONLY != 0));
        for (t, ro) in [
            ("/lib/lpmx-bridge", true),
            ("/lib/lpmx-job.libs/libc.so.6", true),
            ("/bridge", true),
        ] {
            assert!(bind_of(&calls, &at(t)) > dir, "{t}");
            assert_eq!(remount_of(&calls, &at(t)).is_some(), ro, "{t}");
        }
        assert_eq!(
            calls.iter().any(|c| matches!(c, Call::Mount { target, .. }
                    if target == Path::new(&at("/lib/lpmx-job.libs/ld-linux-x86-64.so.2")))),
            loader.is_some()
        );
    }
}

#[test]
fn host_mpi_libraries_are_bound_into_lpmx_mpi_alone() {
    let r = host();
    r.file("/usr/lib/x86_64-linux-gnu/libmpich.so.12.3.0", "ELF")
        .file("/usr/lib/x86_64-linux-gnu/libhwloc.so.15", "ELF");
    let mut s = spec(Write::ReadOnly, &[]);
    let libs: std::collections::BTreeMap<String, PathBuf> = [
        (
            "libmpich.so.12",
            "/usr/lib/x86_64-linux-gnu/libmpich.so.12.3.0",
        ),
        (
            "libmpi.so.12",
            "/usr/lib/x86_64-linux-gnu/libmpich.so.12.3.0",
        ),
        ("libhwloc.so.15", "/usr/lib/x86_64-linux-gnu/libhwloc.so.15"),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
    .collect();
    s.mpi_libs = Some(libs);
    enter(&r, &s, &quiet).unwrap();
    let calls = r.calls();
    let at = |p: &str| format!("{R}/.lpmx{p}");
    let dir = bind_of(&calls, &at(""));
    for n in ["libmpich.so.12", "libmpi.so.12", "libhwloc.so.15"] {
        let t = at(&format!("/mpi/{n}"));
        assert!(bind_of(&calls, &t) > dir, "{t} bound after /.lpmx");
        assert!(remount_of(&calls, &t).is_some(), "{t} read-only");
    }
    // No bridge asked for: none of its entries.
    assert!(!calls.iter().any(|c| matches!(c, Call::Mkdir(p)
        if p.to_string_lossy().ends_with("lpmx/bridge"))));
}

/// `host()` plus every mount point of `spec()`'s binds in the image.
fn host_with_mount_points() -> Recorder {
    let r = host();
    for d in ["proc", "sys", "dev", "tmp", "home/alice"] {
        r.dir(&format!("{TREE}/root/{d}"));
    }
    for f in ["etc/hosts", "etc/resolv.conf"] {
        r.file(&format!("{TREE}/root/{f}"), "");
    }
    r
}

#[test]
fn an_image_with_every_mount_point_is_its_own_read_only_root() {
    let r = host_with_mount_points();
    let e = enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap();
    assert!(e.direct && !e.overlay);
    let calls = r.calls();
    let root_bind = bind_of(&calls, R);
    assert!(
        matches!(&calls[root_bind], Call::Mount { source: Some(s), flags, .. }
        if s == Path::new(&format!("{TREE}/root")) && flags & libc::MS_REC != 0)
    );
    // Read-only at once, before anything is mounted on it.
    let ro = calls
        .iter()
        .position(|c| {
            matches!(c, Call::Mount { target, flags, .. }
            if target == Path::new(R) && flags & libc::MS_REMOUNT != 0)
        })
        .unwrap();
    assert!(ro > root_bind && ro < bind_of(&calls, &format!("{R}/proc")));
    assert!(!calls
        .iter()
        .any(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "overlay")));
    // Nothing created in the shared tree.
    assert!(!calls.iter().any(|c| matches!(c,
        Call::Mkdir(p) | Call::CreateFile(p) | Call::Symlink(_, p) | Call::WriteFile(p, _)
            if p != Path::new(R) && p.starts_with(R) || p.starts_with(format!("{TREE}/root")))));
    assert!(calls.contains(&Call::PivotRoot(".".into(), ".".into())));
}

#[test]
fn a_missing_mount_point_a_nested_bind_or_a_writable_root_needs_the_overlay() {
    let cases: [(Write, &[&str]); 3] = [
        (Write::ReadOnly, &["/data/in:/new"]),
        (Write::ReadOnly, &["/data/in:/tmp/in"]),
        (Write::Scratch, &[]),
    ];
    for (write, binds) in cases {
        let r = host_with_mount_points();
        if binds == ["/data/in:/tmp/in"] {
            // In the image and in the host's /tmp alike: still looked for in the wrong one.
            r.dir(&format!("{TREE}/root/tmp/in")).dir("/tmp/in");
        }
        let e = enter(&r, &spec(write.clone(), binds), &quiet).unwrap();
        assert!(e.overlay && !e.direct, "{write:?} {binds:?}");
    }
    let r = host_with_mount_points();
    let mut s = spec(Write::ReadOnly, &[]);
    s.workdir = Some("/nowhere".into());
    assert!(
        enter(&r, &s, &quiet).unwrap().overlay,
        "a -w the image lacks"
    );
}

#[test]
fn a_home_missing_under_an_empty_image_directory_gets_a_scratch_directory_there_not_an_overlay() {
    let r = host();
    for d in ["proc", "sys", "dev", "tmp", "home"] {
        r.dir(&format!("{TREE}/root/{d}"));
    }
    for f in ["etc/hosts", "etc/resolv.conf"] {
        r.file(&format!("{TREE}/root/{f}"), "");
    }
    let e = enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap();
    assert!(e.direct && !e.overlay);
    let calls = r.calls();
    let home = format!("{R}/home");
    let patch = position(&calls, |c| {
        matches!(c, Call::Mount { source: Some(s), target, .. }
        if s == Path::new(&format!("{TREE}/mnt/patch/0")) && target == Path::new(&home))
    });
    let made = position(
        &calls,
        |c| matches!(c, Call::Mkdir(p) if p == Path::new(&format!("{home}/alice"))),
    );
    let bound = bind_of(&calls, &format!("{home}/alice"));
    assert!(patch < made && made < bound, "{patch} {made} {bound}");
    // Not a byte in the shared tree.
    assert!(!calls.iter().any(|c| matches!(c,
        Call::Mkdir(p) | Call::CreateFile(p) | Call::WriteFile(p, _)
            if p.starts_with(format!("{TREE}/root")))));

    // Something in the image's /home: covering it would hide it, so an overlay.
    let r = host();
    for d in ["proc", "sys", "dev", "tmp", "home/bob"] {
        r.dir(&format!("{TREE}/root/{d}"));
    }
    for f in ["etc/hosts", "etc/resolv.conf"] {
        r.file(&format!("{TREE}/root/{f}"), "");
    }
    assert!(
        enter(&r, &spec(Write::ReadOnly, &[]), &quiet)
            .unwrap()
            .overlay
    );
}

#[test]
fn a_patch_goes_where_the_images_symlink_leads() {
    let r = host();
    for d in ["proc", "sys", "dev", "tmp", "var/home"] {
        r.dir(&format!("{TREE}/root/{d}"));
    }
    r.link(&format!("{TREE}/root/home"), "var/home");
    for f in ["etc/hosts", "etc/resolv.conf"] {
        r.file(&format!("{TREE}/root/{f}"), "");
    }
    let e = enter(&r, &spec(Write::ReadOnly, &[]), &quiet).unwrap();
    assert!(e.direct);
    let calls = r.calls();
    // Bound on the real directory, never through the link.
    bind_of(&calls, &format!("{R}/var/home"));
    assert!(!calls.iter().any(|c| matches!(c, Call::Mount { target, .. }
        if target == Path::new(&format!("{R}/home")))));
    bind_of(&calls, &format!("{R}/var/home/alice"));
}

/// Where mount_setattr exists, read-only is one call per tree: /sys with the mounts below
/// it, a `:ro` directory bind likewise, a file bind and the root alone; no remount at all.
#[test]
fn read_only_by_mount_setattr_covers_the_mounts_below() {
    let r = Recorder {
        setattr: true,
        ..host()
    };
    r.dir("/data").file("/host-file", "x");
    let mut s = spec(Write::ReadOnly, &[]);
    s.user_binds = vec![
        parse_bind("/data:/in:ro", Path::new("/")).unwrap(),
        parse_bind("/host-file:/etc/f:ro", Path::new("/")).unwrap(),
    ];
    enter(&r, &s, &quiet).unwrap();
    let calls = r.calls();
    let ro: Vec<(String, bool)> = calls
        .iter()
        .filter_map(|c| match c {
            Call::SetReadOnly(p, rec) => Some((p.display().to_string(), *rec)),
            _ => None,
        })
        .collect();
    assert!(ro.contains(&(format!("{R}/sys"), true)), "{ro:?}");
    assert!(ro.contains(&(format!("{R}/in"), true)), "{ro:?}");
    assert!(ro.contains(&(format!("{R}/etc/f"), false)), "{ro:?}");
    assert!(
        ro.contains(&(R.to_string(), false)),
        "the root, not what is bound in it: {ro:?}"
    );
    assert_eq!(remount_of(&calls, &format!("{R}/sys")), None);
    assert_eq!(remount_of(&calls, R), None);
}
