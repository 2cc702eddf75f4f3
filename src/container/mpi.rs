//! `run --mpi host`: the host's MPI library (and the libraries it needs, but never the C
//! library's own) bound into the container at [`LIB_DIR`], which is put first on
//! `LD_LIBRARY_PATH`. This is how a site's tuned MPI (its fabric providers, its PMI) is used
//! by an image built against a public MPI of the same ABI, as Sarus and Apptainer's hybrid
//! model do. Only images built against the same ABI qualify; anything else is refused
//! before entering, naming both sides, because a wrong ABI crashes at the first MPI call.
//!
//! ABIs are told apart by library soname, which is what the image's programs link against:
//! `libmpi.so.12` (or `libmpich.so.12`) is the MPICH ABI (MPICH, Intel MPI, Cray MPICH,
//! MVAPICH); `libmpi.so.40` is Open MPI, whose major version is read off
//! `libopen-pal.so.N` (40: Open MPI 3.x and 4.x; 80: Open MPI 5.x).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the injected libraries appear inside the container.
pub const LIB_DIR: &str = "/.lpmx/mpi";

/// Sonames that identify an MPI library, and the ABI family each one means.
const MPI_SONAMES: &[(&str, Family)] = &[
    ("libmpi.so.12", Family::Mpich),
    ("libmpich.so.12", Family::Mpich),
    ("libmpi.so.40", Family::OpenMpi),
];

/// Name prefixes of the libraries that belong to an MPI installation, besides the main one
/// (Fortran and C++ bindings, Open MPI's runtime layers), by family.
const FAMILY_PREFIXES: &[(Family, &[&str])] = &[
    (
        Family::Mpich,
        &["libmpi.so.12", "libmpich", "libmpicxx.", "libmpifort."],
    ),
    (
        Family::OpenMpi,
        &[
            "libmpi.so.40",
            "libmpi_",
            "libopen-pal.",
            "libopen-rte.",
            "liboshmem.",
            "libompitrace.",
        ],
    ),
];

/// The C library's parts: these always come from the image (two C libraries in one process
/// do not work), so they are never injected even when the MPI library needs them.
const NEVER_INJECT: &[&str] = &[
    "linux-vdso.so",
    "linux-gate.so",
    "ld-linux",
    "libc.so.",
    "libm.so.",
    "libmvec.so.",
    "libpthread.so.",
    "libdl.so.",
    "librt.so.",
    "libresolv.so.",
    "libutil.so.",
    "libanl.so.",
    "libnsl.so.",
    "libBrokenLocale.so.",
];

/// Library directories searched in an image, besides its `/etc/ld.so.conf.d` and the
/// `LD_LIBRARY_PATH` of its Env (`{triple}` is the multiarch directory of this host's arch).
const IMAGE_LIB_DIRS: &[&str] = &[
    "/usr/lib/{triple}",
    "/lib/{triple}",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
    "/usr/local/lib",
    "/usr/local/lib64",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{image}: --mpi host: no MPI library on this host ({host}){how}; set mpi.host.libs \
         to the library (e.g. /opt/mpich/lib/libmpi.so.12) or to its directory"
    )]
    NoHostMpi {
        image: String,
        host: String,
        how: String,
    },
    #[error("{image}: --mpi host: reading mpi.host.libs entry {path}: {source}")]
    Read {
        image: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{image}: --mpi host: the image has no MPI library (looked for {wanted} in {dirs}); \
         the host's MPI is only injected into images built against an MPI of the same ABI"
    )]
    NoImageMpi {
        image: String,
        wanted: String,
        dirs: String,
    },
    #[error(
        "{image}: --mpi host: ABI mismatch: the host's MPI is {host_abi} at {host_lib} but the \
         image was built against {image_abi} at {image_lib}; run without --mpi host to use the \
         image's own MPI, or set mpi.host.libs to a host MPI of the image's ABI"
    )]
    Mismatch {
        image: String,
        host_abi: Abi,
        host_lib: PathBuf,
        image_abi: Abi,
        image_lib: PathBuf,
    },
    #[error(
        "{image}: --mpi host: the host's {host_lib} needs glibc {needed}, but the image's C \
         library ({image_libc}) is glibc {provided}: its loader would refuse it; run without \
         --mpi host, or use an image built on a distribution with glibc {needed} or newer"
    )]
    Glibc {
        image: String,
        host_lib: PathBuf,
        needed: GlibcVersion,
        image_libc: PathBuf,
        provided: GlibcVersion,
    },
    #[error(
        "{image}: --mpi host: the image has no glibc (no libc.so.6 in {dirs}); the host's MPI \
         library needs one, so it cannot be injected into this image"
    )]
    NoGlibc { image: String, dirs: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A glibc symbol version, `GLIBC_2.34` as (2, 34).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlibcVersion(pub u32, pub u32);

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl GlibcVersion {
    fn parse(tag: &[u8]) -> Option<GlibcVersion> {
        let v = std::str::from_utf8(tag).ok()?.strip_prefix("GLIBC_")?;
        let mut parts = v.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
        Some(GlibcVersion(major, minor))
    }
}

/// The newest `GLIBC_x.y` an ELF file asks of the C library (`needed`: its
/// `.gnu.version_r`) or defines (a libc's own `.gnu.version_d`); None when it names none.
pub fn glibc_version(path: &Path, needed: bool) -> std::io::Result<Option<GlibcVersion>> {
    use object::read::elf::ElfFile64;
    let bad = |e: object::read::Error| std::io::Error::other(format!("not a 64-bit ELF file: {e}"));
    let data = std::fs::read(path)?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data).map_err(bad)?;
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let mut best = None;
    let mut take = |tag: &[u8]| {
        if let Some(v) = GlibcVersion::parse(tag) {
            best = best.max(Some(v));
        }
    };
    if needed {
        if let Some((mut needs, link)) = sections.gnu_verneed(endian, &*data).map_err(bad)? {
            let strings = sections.strings(endian, &*data, link).map_err(bad)?;
            while let Some((_, mut aux)) = needs.next().map_err(bad)? {
                while let Some(a) = aux.next().map_err(bad)? {
                    take(a.name(endian, strings).map_err(bad)?);
                }
            }
        }
    } else if let Some((mut defs, link)) = sections.gnu_verdef(endian, &*data).map_err(bad)? {
        let strings = sections.strings(endian, &*data, link).map_err(bad)?;
        while let Some((_, mut aux)) = defs.next().map_err(bad)? {
            while let Some(a) = aux.next().map_err(bad)? {
                take(a.name(endian, strings).map_err(bad)?);
            }
        }
    }
    Ok(best)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Mpich,
    OpenMpi,
}

/// An MPI ABI: the family and, for Open MPI, the `libopen-pal` soname version (None when
/// it could not be found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Abi {
    pub family: Family,
    pub pal: Option<u32>,
}

impl Abi {
    /// Whether a program built against `image` runs with this library.
    pub fn serves(&self, image: &Abi) -> bool {
        match (self.family, image.family) {
            (Family::Mpich, Family::Mpich) => true,
            // An unknown runtime version on either side is given the benefit of the doubt:
            // libmpi.so.40 itself matched.
            (Family::OpenMpi, Family::OpenMpi) => {
                self.pal.is_none() || image.pal.is_none() || self.pal == image.pal
            }
            _ => false,
        }
    }
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.family, self.pal) {
            (Family::Mpich, _) => write!(f, "the MPICH ABI (libmpi.so.12, libmpich.so.12)"),
            (Family::OpenMpi, Some(40)) => write!(f, "Open MPI 3.x/4.x (libopen-pal.so.40)"),
            (Family::OpenMpi, Some(80)) => write!(f, "Open MPI 5.x (libopen-pal.so.80)"),
            (Family::OpenMpi, Some(n)) => write!(f, "Open MPI (libopen-pal.so.{n})"),
            (Family::OpenMpi, None) => write!(f, "Open MPI (libmpi.so.40)"),
        }
    }
}

/// The ABI a set of library file names shows, and which name decided it.
pub fn abi_of<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Option<(Abi, &'a str)> {
    abi_preferring(names, None)
}

/// As [`abi_of`], but where the names hold more than one MPI (a host with both MPICH and
/// Open MPI), the one of family `prefer`.
fn abi_preferring<'a>(
    names: impl IntoIterator<Item = &'a str> + Clone,
    prefer: Option<Family>,
) -> Option<(Abi, &'a str)> {
    let all: Vec<(&str, Family)> = names
        .clone()
        .into_iter()
        .filter_map(|n| {
            MPI_SONAMES
                .iter()
                .find(|(s, _)| *s == n)
                .map(|(_, f)| (n, *f))
        })
        .collect();
    let (name, family) = all
        .iter()
        .find(|(_, f)| Some(*f) == prefer)
        .or(all.first())
        .copied()?;
    let pal = match family {
        Family::Mpich => None,
        Family::OpenMpi => names.into_iter().find_map(|n| {
            n.strip_prefix("libopen-pal.so.")
                .and_then(|v| v.split('.').next())
                .and_then(|v| v.parse().ok())
        }),
    };
    Some((Abi { family, pal }, name))
}

/// What `--mpi host` binds: each host file under the name the image's loader will look for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Injection {
    pub abi: Abi,
    /// The library that decided the ABI (a host path).
    pub main: PathBuf,
    /// Name inside [`LIB_DIR`] → host file.
    pub libs: BTreeMap<String, PathBuf>,
    /// Further host paths bound at the same path (`mpi.host.binds`).
    pub binds: Vec<PathBuf>,
}

/// The host side, from `mpi.host.libs` (files, or directories whose `lib*.so*` are taken)
/// or, when that is empty, from the host loader's cache (`ldconfig -p`); then the
/// libraries these need (`ldd`), except the C library's. Where the host has more than one
/// MPI, the one of the image's family (`want`) is taken.
pub fn host_injection(
    image: &str,
    libs: &[PathBuf],
    binds: &[PathBuf],
    want: Option<Family>,
) -> Result<Injection> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let how;
    if libs.is_empty() {
        how = ", none in `ldconfig -p`".to_string();
        for (name, path) in ldconfig_cache() {
            found.entry(name).or_insert(path);
        }
    } else {
        how = format!(" among mpi.host.libs ({})", join_paths(libs));
        for p in libs {
            let meta = std::fs::metadata(p).map_err(|source| Error::Read {
                image: image.into(),
                path: p.clone(),
                source,
            })?;
            if meta.is_dir() {
                let rd = std::fs::read_dir(p).map_err(|source| Error::Read {
                    image: image.into(),
                    path: p.clone(),
                    source,
                })?;
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("lib") && name.contains(".so") {
                        found.insert(name, e.path());
                    }
                }
            } else if let Some(name) = p.file_name() {
                found.insert(name.to_string_lossy().into_owned(), p.clone());
            }
        }
    }
    let Some((abi, main_name)) = abi_preferring(found.keys().map(String::as_str), want) else {
        return Err(Error::NoHostMpi {
            image: image.into(),
            host: crate::host::hostname().into(),
            how,
        });
    };
    let main = found[main_name].clone();
    let prefixes = FAMILY_PREFIXES
        .iter()
        .find(|(f, _)| *f == abi.family)
        .map(|(_, p)| *p)
        .unwrap_or(&[]);
    // From a whole directory or the loader's cache, only the MPI family's own libraries;
    // named files are taken as named.
    let mut inject: BTreeMap<String, PathBuf> = found
        .into_iter()
        .filter(|(n, _)| {
            !libs.is_empty() && libs.iter().any(|l| l.file_name() == Some(n.as_ref()))
                || prefixes.iter().any(|p| n.starts_with(p)) && is_versioned_so(n)
        })
        .collect();
    let mut deps = BTreeMap::new();
    for path in inject.values() {
        for (name, dep) in ldd(path) {
            deps.entry(name).or_insert(dep);
        }
    }
    for (name, dep) in deps {
        if !NEVER_INJECT.iter().any(|p| name.starts_with(p)) {
            inject.entry(name).or_insert(dep);
        }
    }
    // A named libmpi.so.40 alone does not say its Open MPI version; what it needs does.
    let abi = abi_preferring(inject.keys().map(String::as_str), Some(abi.family))
        .map(|(a, _)| a)
        .filter(|a| a.family == abi.family)
        .unwrap_or(abi);
    Ok(Injection {
        abi,
        main,
        libs: inject,
        binds: binds.to_vec(),
    })
}

/// `libfoo.so.N[...]`: what the loader looks up, unlike the `libfoo.so` link for linkers.
fn is_versioned_so(name: &str) -> bool {
    name.split_once(".so.")
        .is_some_and(|(_, v)| v.split('.').all(|p| p.parse::<u32>().is_ok()))
}

fn join_paths(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The host loader's cache: soname → path, for this host's word size.
fn ldconfig_cache() -> Vec<(String, PathBuf)> {
    let out = ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
        .iter()
        .find_map(|c| Command::new(c).arg("-p").output().ok());
    let Some(out) = out else {
        return Vec::new();
    };
    parse_ldconfig(&String::from_utf8_lossy(&out.stdout))
}

fn parse_ldconfig(text: &str) -> Vec<(String, PathBuf)> {
    let ours = if cfg!(target_pointer_width = "64") {
        |t: &str| t.contains("64")
    } else {
        |t: &str| !t.contains("64")
    };
    text.lines()
        .filter_map(|l| {
            let (left, path) = l.trim().split_once(" => ")?;
            let (name, tags) = left.split_once(" (")?;
            ours(tags).then(|| (name.trim().to_string(), PathBuf::from(path.trim())))
        })
        .collect()
}

/// The libraries a host library needs, as the host loader resolves them.
fn ldd(lib: &Path) -> Vec<(String, PathBuf)> {
    match Command::new("ldd").arg(lib).output() {
        Ok(o) if o.status.success() => parse_ldd(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

fn parse_ldd(text: &str) -> Vec<(String, PathBuf)> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = rest.split(" (").next()?.trim();
            path.starts_with('/')
                .then(|| (name.trim().to_string(), PathBuf::from(path)))
        })
        .collect()
}

/// The MPI an image was built against: the ABI and the library (an image path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMpi {
    pub abi: Abi,
    pub lib: PathBuf,
}

/// Looks for an MPI library in an image's root (`root` is the host directory holding it),
/// in the usual library directories, `/etc/ld.so.conf.d/*.conf` and `image_ld_path`.
/// The image's C library (a path inside the image) and the newest glibc version it
/// defines; None when the image has no `libc.so.6` (static, or musl).
pub fn image_glibc(root: &Path, image_ld_path: Option<&str>) -> Option<(PathBuf, GlibcVersion)> {
    for d in image_lib_dirs(root, image_ld_path) {
        let inside = d.join("libc.so.6");
        let Ok(host) = crate::container::runtime::paths::resolve_in_root(
            &crate::container::runtime::syscall::Real,
            root,
            &inside,
        ) else {
            continue;
        };
        if let Ok(Some(v)) = glibc_version(&host, false) {
            return Some((inside, v));
        }
    }
    None
}

/// Refuses host libraries that need a newer glibc than the image has: inside, the image's
/// C library serves them (two cannot share a process), and its loader would stop the
/// program with "version `GLIBC_2.xx' not found".
pub fn check_glibc(
    image: &str,
    host: &Injection,
    root: &Path,
    image_ld_path: Option<&str>,
) -> Result<()> {
    let mut needs: Option<(GlibcVersion, &PathBuf)> = None;
    for path in host.libs.values() {
        if let Ok(Some(v)) = glibc_version(path, true) {
            if needs.is_none_or(|(n, _)| v > n) {
                needs = Some((v, path));
            }
        }
    }
    let Some((needed, host_lib)) = needs else {
        return Ok(());
    };
    let Some((image_libc, provided)) = image_glibc(root, image_ld_path) else {
        return Err(Error::NoGlibc {
            image: image.into(),
            dirs: join_paths(&image_lib_dirs(root, image_ld_path)),
        });
    };
    if needed > provided {
        return Err(Error::Glibc {
            image: image.into(),
            host_lib: host_lib.clone(),
            needed,
            image_libc,
            provided,
        });
    }
    Ok(())
}

pub fn image_mpi(image: &str, root: &Path, image_ld_path: Option<&str>) -> Result<ImageMpi> {
    let dirs = image_lib_dirs(root, image_ld_path);
    for d in &dirs {
        let Ok(host_dir) = crate::container::runtime::paths::resolve_in_root(
            &crate::container::runtime::syscall::Real,
            root,
            d,
        ) else {
            continue;
        };
        let Ok(rd) = std::fs::read_dir(&host_dir) else {
            continue;
        };
        let names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if let Some((abi, name)) = abi_of(names.iter().map(String::as_str)) {
            return Ok(ImageMpi {
                abi,
                lib: d.join(name),
            });
        }
    }
    Err(Error::NoImageMpi {
        image: image.into(),
        wanted: MPI_SONAMES
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(", "),
        dirs: join_paths(&dirs),
    })
}

fn image_lib_dirs(root: &Path, image_ld_path: Option<&str>) -> Vec<PathBuf> {
    let triple = format!("{}-linux-gnu", std::env::consts::ARCH);
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add = |p: PathBuf| {
        if p.is_absolute() && !dirs.contains(&p) {
            dirs.push(p);
        }
    };
    for d in image_ld_path
        .unwrap_or("")
        .split(':')
        .filter(|s| !s.is_empty())
    {
        add(PathBuf::from(d));
    }
    // Only the image's own files are read, through resolve_in_root, never the host's.
    let conf = crate::container::runtime::paths::resolve_in_root(
        &crate::container::runtime::syscall::Real,
        root,
        Path::new("/etc/ld.so.conf.d"),
    );
    if let Ok(rd) = conf.and_then(std::fs::read_dir) {
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        for f in files {
            if std::fs::symlink_metadata(&f).is_ok_and(|m| m.is_file()) {
                for l in std::fs::read_to_string(&f).unwrap_or_default().lines() {
                    let l = l.trim();
                    if !l.is_empty() && !l.starts_with('#') && !l.starts_with("include") {
                        add(PathBuf::from(l));
                    }
                }
            }
        }
    }
    for d in IMAGE_LIB_DIRS {
        add(PathBuf::from(d.replace("{triple}", &triple)));
    }
    dirs
}

/// Refuses an injection the image's programs cannot use.
pub fn check(image: &str, host: &Injection, img: &ImageMpi) -> Result<()> {
    if host.abi.serves(&img.abi) {
        return Ok(());
    }
    Err(Error::Mismatch {
        image: image.into(),
        host_abi: host.abi,
        host_lib: host.main.clone(),
        image_abi: img.abi,
        image_lib: img.lib.clone(),
    })
}

/// `LD_LIBRARY_PATH` with [`LIB_DIR`] first.
pub fn library_path(current: Option<&std::ffi::OsStr>) -> std::ffi::OsString {
    let mut v = std::ffi::OsString::from(LIB_DIR);
    if let Some(c) = current.filter(|c| !c.is_empty()) {
        v.push(":");
        v.push(c);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_by_soname() {
        let (a, n) = abi_of(["libfoo.so.1", "libmpich.so.12"]).unwrap();
        assert_eq!(a.family, Family::Mpich);
        assert_eq!(n, "libmpich.so.12");
        let (a, _) = abi_of(["libopen-pal.so.40", "libmpi.so.40"]).unwrap();
        assert_eq!(
            a,
            Abi {
                family: Family::OpenMpi,
                pal: Some(40)
            }
        );
        assert!(abi_of(["libc.so.6", "libmpi.so"]).is_none());
    }

    #[test]
    fn compatibility() {
        let mpich = Abi {
            family: Family::Mpich,
            pal: None,
        };
        let ompi4 = Abi {
            family: Family::OpenMpi,
            pal: Some(40),
        };
        let ompi5 = Abi {
            family: Family::OpenMpi,
            pal: Some(80),
        };
        assert!(mpich.serves(&mpich));
        assert!(ompi4.serves(&ompi4));
        assert!(!ompi5.serves(&ompi4), "Open MPI 5 does not serve 4");
        assert!(!mpich.serves(&ompi4) && !ompi4.serves(&mpich));
        let msg = check(
            "img",
            &Injection {
                abi: ompi4,
                main: "/usr/lib/libmpi.so.40".into(),
                libs: BTreeMap::new(),
                binds: vec![],
            },
            &ImageMpi {
                abi: mpich,
                lib: "/usr/lib/x86_64-linux-gnu/libmpi.so.12".into(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("Open MPI 3.x/4.x") && msg.contains("MPICH ABI"),
            "{msg}"
        );
        assert!(
            msg.contains("/usr/lib/libmpi.so.40") && msg.contains("libmpi.so.12"),
            "{msg}"
        );
    }

    #[test]
    fn parses_loader_output() {
        let l = parse_ldconfig(
            "3 libs found in cache `/etc/ld.so.cache'\n\
             \tlibmpich.so.12 (libc6,x86-64) => /lib/x86_64-linux-gnu/libmpich.so.12\n\
             \tlibmpich.so.12 (libc6) => /lib/i386-linux-gnu/libmpich.so.12\n",
        );
        assert_eq!(
            l,
            vec![(
                "libmpich.so.12".to_string(),
                PathBuf::from("/lib/x86_64-linux-gnu/libmpich.so.12")
            )]
        );
        let d = parse_ldd(
            "\tlinux-vdso.so.1 (0x00007ffd)\n\
             \tlibhwloc.so.15 => /lib/x86_64-linux-gnu/libhwloc.so.15 (0x00007f)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0, "libhwloc.so.15");
    }

    #[test]
    fn versioned_names_only() {
        assert!(is_versioned_so("libmpi.so.12"));
        assert!(is_versioned_so("libmpich.so.12.3.0"));
        assert!(!is_versioned_so("libmpich.so"));
        assert!(!is_versioned_so("libmpi.so.12.py"));
    }

    #[test]
    fn directory_of_libraries_takes_only_the_family_and_its_needs() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "libmpi.so.12",
            "libmpich.so.12.3.0",
            "libunrelated.so.3",
            "libmpich.so",
        ] {
            std::fs::write(d.path().join(n), b"not elf").unwrap();
        }
        let inj = host_injection("img", &[d.path().to_path_buf()], &[], None).unwrap();
        assert_eq!(inj.abi.family, Family::Mpich);
        let names: Vec<&str> = inj.libs.keys().map(String::as_str).collect();
        assert_eq!(names, ["libmpi.so.12", "libmpich.so.12.3.0"]);
    }

    #[test]
    fn image_mpi_found_through_ld_so_conf() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        std::fs::create_dir_all(r.join("opt/mpich/lib")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf.d/mpich.conf"),
            "# MPICH\n/opt/mpich/lib\n",
        )
        .unwrap();
        std::fs::write(r.join("opt/mpich/lib/libmpi.so.12"), b"").unwrap();
        let m = image_mpi("img", r, None).unwrap();
        assert_eq!(m.lib, PathBuf::from("/opt/mpich/lib/libmpi.so.12"));
        let none = tempfile::tempdir().unwrap();
        let e = image_mpi("img", none.path(), Some("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no MPI library") && e.contains("/x, "), "{e}");
    }

    /// A C library of an older glibc, made for real: a shared object named libc.so.6
    /// whose version script defines only GLIBC_2.2.5 (what glibc 2.2.5 defined last).
    fn old_libc(root: &Path) {
        let dir = root.join("lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&dir).unwrap();
        let src = root.join("c.c");
        let map = root.join("v.map");
        std::fs::write(&src, "int old_glibc_symbol(void) { return 0; }\n").unwrap();
        std::fs::write(
            &map,
            "GLIBC_2.2.5 { global: old_glibc_symbol; local: *; };\n",
        )
        .unwrap();
        let ok = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-nostdlib", "-o"])
            .arg(dir.join("libc.so.6"))
            .arg(&src)
            .arg(format!("-Wl,--version-script={}", map.display()))
            .status()
            .expect("cc");
        assert!(ok.success());
    }

    #[test]
    fn host_libraries_needing_a_newer_glibc_than_the_images_are_refused() {
        // What this host's programs need is at most what its own C library defines.
        let host_libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !host_libc.exists() {
            // Not an x86_64 glibc host: nothing to compare against. CI is one.
            assert!(std::env::var_os("CI").is_none(), "CI runs on x86_64 glibc");
            return;
        }
        let defines = glibc_version(host_libc, false).unwrap().unwrap();
        let ls_needs = glibc_version(Path::new("/bin/ls"), true).unwrap().unwrap();
        assert!(
            ls_needs <= defines && ls_needs >= GlibcVersion(2, 3),
            "{ls_needs} {defines}"
        );
        assert_eq!(
            GlibcVersion::parse(b"GLIBC_2.34"),
            Some(GlibcVersion(2, 34))
        );
        assert_eq!(GlibcVersion::parse(b"GLIBC_PRIVATE"), None);

        let inj = Injection {
            abi: Abi {
                family: Family::Mpich,
                pal: None,
            },
            main: "/bin/ls".into(),
            libs: [("libfake.so.1".to_string(), PathBuf::from("/bin/ls"))].into(),
            binds: vec![],
        };
        let t = tempfile::tempdir().unwrap();
        let e = check_glibc("img", &inj, t.path(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the image has no glibc"), "{e}");

        old_libc(t.path());
        let (at, v) = image_glibc(t.path(), None).unwrap();
        assert_eq!(
            (at, v),
            (
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                GlibcVersion(2, 2)
            )
        );
        let e = check_glibc("img", &inj, t.path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("/bin/ls needs glibc {ls_needs}"))
                && e.contains("(/lib/x86_64-linux-gnu/libc.so.6) is glibc 2.2"),
            "{e}"
        );

        // The image's libc a link to one as new as the host's: accepted.
        let t2 = tempfile::tempdir().unwrap();
        let dir = t2.path().join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(host_libc, dir.join("libc.so.6")).unwrap();
        check_glibc("img", &inj, t2.path(), None).unwrap();
    }
}
