//! Can this host give an ordinary user a user namespace with a mount namespace, tmpfs and
//! overlayfs inside it? Tried for real in a child process, and when refused, which host
//! setting refused it and what to do about it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::host::probe::{self, Outcome};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result", content = "errno")]
pub enum Step {
    Ok,
    Failed(i32),
    /// Not tried because an earlier step failed.
    Skipped,
}

impl Step {
    fn parse(s: &str) -> Step {
        match s {
            "ok" => Step::Ok,
            "skip" => Step::Skipped,
            n => Step::Failed(n.parse().unwrap_or(0)),
        }
    }
    pub fn ok(&self) -> bool {
        *self == Step::Ok
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NsReport {
    pub userns: Step,
    pub uid_map: Step,
    pub mountns: Step,
    pub tmpfs: Step,
    pub overlay: Step,
}

/// Host settings that decide whether unprivileged user namespaces are allowed, read from
/// /proc so a refusal can be explained.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostFacts {
    pub max_user_namespaces: Option<u64>,
    pub max_mnt_namespaces: Option<u64>,
    /// Debian/Ubuntu's `kernel.unprivileged_userns_clone`.
    pub unprivileged_userns_clone: Option<u64>,
    /// Ubuntu 23.10+'s `kernel.apparmor_restrict_unprivileged_userns`.
    pub apparmor_restrict: Option<u64>,
    /// `Seccomp:` of /proc/self/status: 0 none, 1 strict, 2 filter.
    pub seccomp: Option<u64>,
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl HostFacts {
    pub fn read() -> HostFacts {
        let seccomp = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Seccomp:"))
                    .and_then(|v| v.trim().parse().ok())
            });
        HostFacts {
            max_user_namespaces: read_u64("/proc/sys/user/max_user_namespaces"),
            max_mnt_namespaces: read_u64("/proc/sys/user/max_mnt_namespaces"),
            unprivileged_userns_clone: read_u64("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict: read_u64("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
            seccomp,
        }
    }
}

/// Why a namespace was refused, and the way out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub reason: String,
    pub fix: String,
}

const ADMIN: &str = "ask the site's administrators";

/// Explains a refused `unshare(CLONE_NEWUSER|CLONE_NEWNS)`. Settings are checked from the
/// most specific to the most general, because several can be in force at once.
pub fn explain_denial(errno: i32, f: &HostFacts) -> Denial {
    let d = |reason: String, fix: String| Denial { reason, fix };
    if f.max_user_namespaces == Some(0) {
        return d(
            "the sysctl user.max_user_namespaces is 0, which forbids user namespaces".into(),
            format!("{ADMIN} to run `sysctl -w user.max_user_namespaces=15000` and keep it in /etc/sysctl.d/"),
        );
    }
    if f.unprivileged_userns_clone == Some(0) {
        return d(
            "the sysctl kernel.unprivileged_userns_clone is 0, which forbids user namespaces to ordinary users".into(),
            format!("{ADMIN} to run `sysctl -w kernel.unprivileged_userns_clone=1` and keep it in /etc/sysctl.d/"),
        );
    }
    if f.apparmor_restrict == Some(1) && (errno == libc::EACCES || errno == libc::EPERM) {
        return d(
            "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)".into(),
            format!(
                "{ADMIN} to install an AppArmor profile that allows `userns,` for lpmx-job, \
                 or to set kernel.apparmor_restrict_unprivileged_userns=0"
            ),
        );
    }
    if f.seccomp == Some(2) && errno == libc::EPERM {
        return d(
            "a seccomp filter on this process refuses unshare (as Docker, Podman and systemd's \
             RestrictNamespaces= install)"
                .into(),
            "run lpmx-job outside that container or service, or have its seccomp profile allow unshare \
             with CLONE_NEWUSER"
                .into(),
        );
    }
    if f.max_mnt_namespaces == Some(0) {
        return d(
            "the sysctl user.max_mnt_namespaces is 0, which forbids mount namespaces".into(),
            format!("{ADMIN} to run `sysctl -w user.max_mnt_namespaces=15000`"),
        );
    }
    if errno == libc::ENOSPC || errno == libc::EUSERS {
        return d(
            format!(
                "the per-user limit of user namespaces (user.max_user_namespaces={}) is used up",
                f.max_user_namespaces.map_or("?".into(), |n| n.to_string())
            ),
            format!("end stale processes of yours that hold namespaces, or {ADMIN} to raise user.max_user_namespaces"),
        );
    }
    if errno == libc::EPERM {
        return d(
            "the kernel refused a user namespace (EPERM): common causes are a chroot, a kernel built \
             without CONFIG_USER_NS, or a security module"
                .into(),
            format!("run `unshare -U -r -m true` to confirm, and {ADMIN}; lpmx-job needs unprivileged user namespaces"),
        );
    }
    d(
        format!(
            "unshare(CLONE_NEWUSER|CLONE_NEWNS) failed: {}",
            std::io::Error::from_raw_os_error(errno)
        ),
        format!("{ADMIN}; lpmx-job needs unprivileged user namespaces"),
    )
}

fn errno_of(r: rustix::io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.raw_os_error().to_string(),
    }
}

/// Enters a user and mount namespace in a child, maps our own ids, then mounts a tmpfs on
/// `scratch` and an overlay inside it. `scratch` must be an empty directory.
pub fn probe(scratch: &Path) -> std::io::Result<NsReport> {
    let uid = crate::host::uid();
    let gid = crate::host::gid();
    let scratch: PathBuf = scratch.to_path_buf();
    let outcome = probe::in_child(Duration::from_secs(10), move |report| {
        use rustix::mount::{mount, mount_change, MountFlags, MountPropagationFlags};
        let mut steps = vec![];
        let mut run = |name: &str, r: rustix::io::Result<()>| {
            let s = errno_of(r);
            let ok = s == "ok";
            steps.push(format!("{name}={s}"));
            ok
        };
        let skip_rest = |steps: &mut Vec<String>, names: &[&str]| {
            for n in names {
                steps.push(format!("{n}=skip"));
            }
        };
        let flags = rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS;
        // SAFETY: the probe child is single-threaded; unshare only changes its own namespaces.
        if !run("userns", unsafe { rustix::thread::unshare_unsafe(flags) }) {
            skip_rest(&mut steps, &["uid_map", "mountns", "tmpfs", "overlay"]);
        } else {
            let maps = std::fs::write("/proc/self/setgroups", "deny")
                .and_then(|_| std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")))
                .and_then(|_| std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")));
            let maps = maps.map_err(|e| {
                rustix::io::Errno::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
            });
            run("uid_map", maps);
            // Private propagation first, so nothing we mount leaks back to the host.
            if !run(
                "mountns",
                mount_change(
                    "/",
                    MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
                ),
            ) {
                skip_rest(&mut steps, &["tmpfs", "overlay"]);
            } else if !run(
                "tmpfs",
                mount(
                    "tmpfs",
                    &scratch,
                    "tmpfs",
                    MountFlags::empty(),
                    c"mode=0700",
                ),
            ) {
                skip_rest(&mut steps, &["overlay"]);
            } else {
                let dirs = ["lower", "upper", "work", "merged"];
                let made = dirs
                    .iter()
                    .try_for_each(|d| std::fs::create_dir(scratch.join(d)));
                let data = format!(
                    "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work,userxattr",
                    scratch.display()
                );
                let r = match made {
                    Err(e) => Err(rustix::io::Errno::from_raw_os_error(
                        e.raw_os_error().unwrap_or(libc::EIO),
                    )),
                    Ok(()) => mount(
                        "overlay",
                        scratch.join("merged"),
                        "overlay",
                        MountFlags::empty(),
                        std::ffi::CString::new(data)
                            .expect("no NUL in a path")
                            .as_c_str(),
                    ),
                };
                run("overlay", r);
            }
        }
        report.push_str(&steps.join(" "));
        0
    })?;
    let text = match outcome {
        Outcome::Exited(0, text) => text,
        other => {
            return Err(std::io::Error::other(format!(
                "namespace probe ended abnormally: {other:?}"
            )));
        }
    };
    let get = |name: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .map(Step::parse)
            .unwrap_or(Step::Skipped)
    };
    Ok(NsReport {
        userns: get("userns"),
        uid_map: get("uid_map"),
        mountns: get("mountns"),
        tmpfs: get("tmpfs"),
        overlay: get("overlay"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_setting_that_denies() {
        let base = HostFacts {
            max_user_namespaces: Some(15000),
            max_mnt_namespaces: Some(15000),
            seccomp: Some(0),
            ..HostFacts::default()
        };
        let zero = HostFacts {
            max_user_namespaces: Some(0),
            ..base.clone()
        };
        assert!(explain_denial(libc::ENOSPC, &zero)
            .reason
            .contains("user.max_user_namespaces is 0"));
        let clone = HostFacts {
            unprivileged_userns_clone: Some(0),
            ..base.clone()
        };
        assert!(explain_denial(libc::EPERM, &clone)
            .reason
            .contains("unprivileged_userns_clone"));
        let aa = HostFacts {
            apparmor_restrict: Some(1),
            ..base.clone()
        };
        assert!(explain_denial(libc::EACCES, &aa)
            .reason
            .contains("AppArmor"));
        let sc = HostFacts {
            seccomp: Some(2),
            ..base.clone()
        };
        let d = explain_denial(libc::EPERM, &sc);
        assert!(d.reason.contains("seccomp"), "{d:?}");
        let full = explain_denial(libc::ENOSPC, &base);
        assert!(
            full.reason.contains("used up") && full.reason.contains("15000"),
            "{full:?}"
        );
        assert!(explain_denial(libc::EPERM, &base)
            .fix
            .contains("unshare -U -r -m"));
        assert!(explain_denial(libc::EINVAL, &base)
            .reason
            .contains("Invalid argument"));
    }
}
