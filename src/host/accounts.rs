//! Who a uid or gid is. A dynamically linked lpmx-job asks the C library, so every name
//! service the site configured (files, sss, LDAP, systemd) answers. The static build
//! (`contrib/build-static.sh`, for grid pilots) must not: static glibc would load the NSS
//! module, which drags in a second C library and crashes the process. It reads
//! `/etc/passwd` and `/etc/group` instead, and callers fall back on `$USER` and `$HOME`.
//! Both read the files first: on every task start that spares the name-service switch's
//! machinery (an nscd socket tried, its modules) for the common local account.

use std::ffi::{CStr, CString};

/// A password database entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// The primary group.
    pub gid: u32,
    pub home: String,
    pub shell: String,
    pub gecos: String,
}

/// Whether this executable is statically linked (glibc crt-static).
pub const STATIC: bool = cfg!(target_feature = "crt-static");

pub fn user(uid: u32) -> Option<User> {
    let found = passwd_line(&read("/etc/passwd"), uid);
    if found.is_some() || STATIC {
        return found;
    }
    nss_user(uid)
}

pub fn group_name(gid: u32) -> Option<String> {
    let found = group_line(&read("/etc/group"), |_, id| id == gid).map(|(n, _)| n);
    if found.is_some() || STATIC {
        return found;
    }
    nss_group(
        &|grp: &mut libc::group, buf: &mut [u8], out: &mut *mut libc::group| {
            // SAFETY: getgrgid_r writes only into the buffers given.
            unsafe { libc::getgrgid_r(gid, grp, buf.as_mut_ptr().cast(), buf.len(), out) }
        },
    )
    .map(|(n, _)| n)
}

/// A group's id by name (or a number given as such).
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    let found = group_line(&read("/etc/group"), |n, _| n == name).map(|(_, id)| id);
    if found.is_some() || STATIC {
        return found;
    }
    let cname = CString::new(name).ok()?;
    nss_group(
        &|grp: &mut libc::group, buf: &mut [u8], out: &mut *mut libc::group| {
            // SAFETY: getgrnam_r writes only into the buffers given; cname outlives the call.
            unsafe {
                libc::getgrnam_r(cname.as_ptr(), grp, buf.as_mut_ptr().cast(), buf.len(), out)
            }
        },
    )
    .map(|(_, id)| id)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn passwd_line(text: &str, uid: u32) -> Option<User> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let gid = f.get(3)?.parse().ok()?;
        (f.len() >= 7 && f[2].parse() == Ok(uid)).then(|| User {
            name: f[0].into(),
            gid,
            gecos: f[4].into(),
            home: f[5].into(),
            shell: f[6].into(),
        })
    })
}

fn group_line(text: &str, want: impl Fn(&str, u32) -> bool) -> Option<(String, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let id = f.get(2)?.parse().ok()?;
        (f.len() >= 3 && want(f[0], id)).then(|| (f[0].to_string(), id))
    })
}

fn text(p: *const libc::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string inside the buffer the C library filled.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn nss_user(uid: u32) -> Option<User> {
    // SAFETY: getpwuid_r writes only into the buffers given; the pointers read are checked.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0u8; 16384];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out);
        if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(User {
            name: text(pwd.pw_name),
            gid: pwd.pw_gid,
            home: text(pwd.pw_dir),
            shell: text(pwd.pw_shell),
            gecos: text(pwd.pw_gecos),
        })
    }
}

type GroupCall<'a> = dyn Fn(&mut libc::group, &mut [u8], &mut *mut libc::group) -> libc::c_int + 'a;

fn nss_group(call: &GroupCall) -> Option<(String, u32)> {
    // SAFETY: the call writes only into the buffers given; the result pointer is checked.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut buf = vec![0u8; 65536];
        let mut out: *mut libc::group = std::ptr::null_mut();
        let rc = call(&mut grp, &mut buf, &mut out);
        if rc != 0 || out.is_null() || grp.gr_name.is_null() {
            return None;
        }
        Some((text(grp.gr_name), grp.gr_gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_as_the_c_library_would() {
        let pw = "root:x:0:0:root:/root:/bin/bash\n# comment\nbad line\n\
                  ann:x:1001:1001:Ann Lee,,,:/home/ann:/bin/zsh\n";
        let u = passwd_line(pw, 1001).unwrap();
        assert_eq!(u.gid, 1001);
        assert_eq!(
            (
                u.name.as_str(),
                u.home.as_str(),
                u.shell.as_str(),
                u.gecos.as_str()
            ),
            ("ann", "/home/ann", "/bin/zsh", "Ann Lee,,,")
        );
        assert!(passwd_line(pw, 7).is_none());
        let gr = "root:x:0:\nhpc:x:5000:ann,bob\n";
        assert_eq!(
            group_line(gr, |_, id| id == 5000),
            Some(("hpc".into(), 5000))
        );
        assert_eq!(group_line(gr, |n, _| n == "root"), Some(("root".into(), 0)));
        assert!(group_line(gr, |n, _| n == "nobody").is_none());
    }

    #[test]
    fn this_process_is_known() {
        let uid = crate::host::uid();
        // The build the tests run is dynamic; its answer agrees with the files for root.
        if uid == 0 {
            assert_eq!(user(0).unwrap().name, "root");
        }
        assert_eq!(group_id("0"), Some(0));
    }
}
