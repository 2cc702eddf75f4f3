//! Facts about the node lpmx-job runs on: its name, the user, the kernel and the filesystems.
//! Every message names the node, so these are read once and cheaply.

pub mod accounts;
pub mod doctor;
pub mod probe;
pub mod scheduler;
pub mod userns;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

/// The short host name, as batch logs and `squeue` show it.
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let full = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        full.split('.').next().unwrap_or(&full).to_string()
    })
}

pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

pub fn machine() -> String {
    rustix::system::uname()
        .machine()
        .to_string_lossy()
        .into_owned()
}

/// (major, minor) of a release string such as `6.1.0-18-amd64`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Whether this process already runs in a user namespace other than the host's: the initial
/// namespace maps the whole id range onto itself.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

pub fn gid() -> u32 {
    rustix::process::getgid().as_raw()
}

/// The user's name and home from the password database (HOME may be unset in `env -i` pilots).
fn passwd_entry() -> Option<(String, PathBuf)> {
    crate::host::accounts::user(uid()).map(|u| (u.name, PathBuf::from(u.home)))
}

pub fn passwd_home() -> Option<PathBuf> {
    passwd_entry()
        .map(|(_, h)| h)
        .filter(|h| !h.as_os_str().is_empty())
}

pub fn user_name() -> String {
    passwd_entry()
        .map(|(n, _)| n)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid{}", uid()))
}

/// How a filesystem behaves for a shared cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsClass {
    /// A disk of this node only.
    Local,
    /// Memory of this node only; gone at reboot.
    Memory,
    /// Shared over the network (NFS, SMB, Ceph...).
    Network,
    /// A parallel filesystem (Lustre, GPFS, BeeGFS...).
    Parallel,
    /// Stacked on another filesystem (overlay, FUSE).
    Stacked,
    Unknown,
}

/// statfs `f_type` magic numbers (linux/magic.h and the vendors' own headers).
const FS_MAGIC: &[(u64, &str, FsClass)] = &[
    (0xEF53, "ext4", FsClass::Local),
    (0x5846_5342, "xfs", FsClass::Local),
    (0x9123_683E, "btrfs", FsClass::Local),
    (0x2FC1_2FC1, "zfs", FsClass::Local),
    (0xF2F5_2010, "f2fs", FsClass::Local),
    (0x0102_1994, "tmpfs", FsClass::Memory),
    (0x8584_58F6, "ramfs", FsClass::Memory),
    (0x6969, "nfs", FsClass::Network),
    (0xFF53_4D42, "cifs", FsClass::Network),
    (0xFE53_4D42, "smb2", FsClass::Network),
    (0x00C3_6400, "ceph", FsClass::Network),
    (0x0102_1997, "9p", FsClass::Network),
    (0x0BD0_0BD0, "lustre", FsClass::Parallel),
    (0x4750_4653, "gpfs", FsClass::Parallel),
    (0x1983_0326, "beegfs", FsClass::Parallel),
    (0xAAD7_AAEA, "panfs", FsClass::Parallel),
    (0x794C_7630, "overlay", FsClass::Stacked),
    (0x6573_5546, "fuse", FsClass::Stacked),
];

#[derive(Debug, Clone, Serialize)]
pub struct FsInfo {
    pub path: PathBuf,
    pub name: String,
    pub class: FsClass,
    pub magic: u64,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

pub fn classify_magic(magic: u64) -> (&'static str, FsClass) {
    FS_MAGIC
        .iter()
        .find(|(m, _, _)| *m == magic)
        .map(|(_, n, c)| (*n, *c))
        .unwrap_or(("unknown", FsClass::Unknown))
}

/// statfs of `path`, or of its nearest existing ancestor when it does not exist yet.
pub fn filesystem_of(path: &Path) -> std::io::Result<FsInfo> {
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let st = rustix::fs::statfs(probe)
        .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))?;
    let magic = st.f_type as u64 & 0xFFFF_FFFF;
    let (name, class) = classify_magic(magic);
    let bsize = st.f_bsize as u64;
    Ok(FsInfo {
        path: probe.to_path_buf(),
        name: if class == FsClass::Unknown {
            format!("unknown (magic {magic:#x})")
        } else {
            name.to_string()
        },
        class,
        magic,
        free_bytes: st.f_bavail as u64 * bsize,
        total_bytes: st.f_blocks as u64 * bsize,
    })
}

/// Bytes as a person reads them in a log: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("5.11.22"), Some((5, 11)));
        assert_eq!(
            parse_kernel_version("3.10.0-1160.el7.x86_64"),
            Some((3, 10))
        );
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn magic_numbers() {
        assert_eq!(classify_magic(0x6969), ("nfs", FsClass::Network));
        assert_eq!(classify_magic(0x0BD0_0BD0), ("lustre", FsClass::Parallel));
        assert_eq!(classify_magic(0x4750_4653), ("gpfs", FsClass::Parallel));
        assert_eq!(classify_magic(0x1983_0326), ("beegfs", FsClass::Parallel));
        assert_eq!(classify_magic(0x1234).1, FsClass::Unknown);
    }

    #[test]
    fn statfs_of_missing_path_uses_ancestor() {
        let info = filesystem_of(Path::new("/proc/definitely/not/here")).unwrap();
        assert_eq!(info.path, Path::new("/proc"));
        assert_eq!(info.magic, 0x9fa0, "procfs magic");
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
    }
}
