//! Who the user is inside: the one uid and gid the user namespace maps, and the lines of
//! /etc/passwd and /etc/group that make `id`, `whoami` and `ls -l` name them.

use std::path::PathBuf;

/// The user as the container sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
    pub gecos: String,
}

/// The host's entry for this user (the password database, then the environment), or root's
/// with `--fakeroot`. The ids are the ones seen inside; the host ids are `host::uid/gid`.
pub fn host_identity(fakeroot: bool) -> Identity {
    if fakeroot {
        return Identity {
            user: "root".into(),
            uid: 0,
            group: "root".into(),
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
            gecos: "root".into(),
        };
    }
    let uid = crate::host::uid();
    let gid = crate::host::gid();
    let pw = passwd(uid);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Identity {
        user: pw
            .as_ref()
            .map(|p| p.0.clone())
            .or_else(|| env("USER"))
            .unwrap_or_else(|| format!("uid{uid}")),
        uid,
        group: group_name(gid).unwrap_or_else(|| format!("gid{gid}")),
        gid,
        home: pw
            .as_ref()
            .map(|p| PathBuf::from(&p.1))
            .filter(|h| h.is_absolute())
            .or_else(|| env("HOME").map(PathBuf::from))
            .unwrap_or_else(|| "/".into()),
        shell: pw
            .as_ref()
            .map(|p| p.2.clone())
            .filter(|s| s.starts_with('/'))
            .unwrap_or_else(|| "/bin/sh".into()),
        gecos: pw.map(|p| p.3).unwrap_or_default(),
    }
}

/// (name, home, shell, gecos) of a uid.
fn passwd(uid: u32) -> Option<(String, String, String, String)> {
    crate::host::accounts::user(uid).map(|u| (u.name, u.home, u.shell, u.gecos))
}

fn group_name(gid: u32) -> Option<String> {
    crate::host::accounts::group_name(gid)
}

/// A field of a passwd/group line, or "".
fn field(line: &str, n: usize) -> &str {
    line.split(':').nth(n).unwrap_or("")
}

fn with_newline(mut s: String) -> String {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The image's /etc/passwd with the user's line: an image line of the same name or uid is
/// replaced, except that an image's own root line is kept as it is under `--fakeroot`.
pub fn passwd_with(image: &str, id: &Identity) -> String {
    let uid = id.uid.to_string();
    if id.uid == 0 && image.lines().any(|l| field(l, 2) == "0") {
        return with_newline(image.to_string());
    }
    let mut out: String = image
        .lines()
        .filter(|l| field(l, 0) != id.user && field(l, 2) != uid)
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!(
        "{}:x:{}:{}:{}:{}:{}\n",
        id.user,
        id.uid,
        id.gid,
        id.gecos.replace([':', '\n'], " "),
        id.home.display(),
        id.shell
    ));
    out
}

/// The image's /etc/group with the user's group added when its gid is missing.
pub fn group_with(image: &str, id: &Identity) -> String {
    let gid = id.gid.to_string();
    let mut out = with_newline(image.to_string());
    if !image.lines().any(|l| field(l, 2) == gid) {
        out.push_str(&format!("{}:x:{}:\n", id.group, id.gid));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        Identity {
            user: "alice".into(),
            uid: 1234,
            group: "hpc".into(),
            gid: 500,
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
            gecos: "Alice: A".into(),
        }
    }

    #[test]
    fn passwd_gains_the_user() {
        let image = "root:x:0:0:root:/root:/bin/sh\nalice:x:1:1::/nonexistent:/bin/false\nold:x:1234:1::/:/bin/sh";
        let p = passwd_with(image, &me());
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1234:500:Alice  A:/home/alice:/bin/bash\n"
        );
        assert_eq!(
            passwd_with("", &me()),
            "alice:x:1234:500:Alice  A:/home/alice:/bin/bash\n"
        );
    }

    #[test]
    fn fakeroot_keeps_the_images_root() {
        let root = host_identity(true);
        let image = "root:x:0:0:Super:/root:/bin/ash\n";
        assert_eq!(passwd_with(image, &root), image);
        assert_eq!(passwd_with("", &root), "root:x:0:0:root:/root:/bin/sh\n");
        assert_eq!(group_with("root:x:0:", &root), "root:x:0:\n");
    }

    #[test]
    fn group_added_when_missing() {
        assert_eq!(group_with("root:x:0:\n", &me()), "root:x:0:\nhpc:x:500:\n");
        assert_eq!(group_with("users:x:500:\n", &me()), "users:x:500:\n");
    }

    #[test]
    fn host_identity_is_ours() {
        let id = host_identity(false);
        assert_eq!(id.uid, crate::host::uid());
        assert_eq!(id.gid, crate::host::gid());
        assert!(id.home.is_absolute() && id.shell.starts_with('/'));
    }
}
