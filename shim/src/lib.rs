//! lpmx-job's runtime for hosts that deny unprivileged user namespaces (issue 15).
//!
//! The container's processes run on the host as the user, traced: a seccomp filter stops
//! them (`SECCOMP_RET_TRACE`) at each system call that takes a path, and this crate's
//! tracer rewrites the path from the container's view (the image's root at `/`, binds, the
//! task's scratch layer) to the host's before the kernel runs the call; calls that return
//! paths (`getcwd`, `readlink` of `/proc/self/exe`...) are rewritten back on the way out.
//! Every other call runs at native speed.
//!
//! Two halves, with [`view::View`] between them:
//! - `view`: the container's file system as the user sees it: resolution of a guest path
//!   (symlinks followed in guest space, `..` stopping at `/`), binds, and the union of the
//!   read-only image tree with the task's scratch layer (copy-up on first write, whiteouts
//!   for deletions, merged directory listings). Pure path logic over real directories,
//!   unit-tested without ptrace.
//! - `trace`: the mechanics: the filter, the ptrace loop over every process and thread,
//!   reading and writing tracee memory and registers, `execve` through the image's own
//!   dynamic loader and `#!` interpreters, fakeroot's ids, signals and the exit status.

pub mod view;
pub mod trace;

use std::path::PathBuf;

/// What the container is: built by lpmx-job's `run` from the same plan as namespace mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The image tree's root (`tree/root` in the cache): shared by every task, never written.
    pub lower: PathBuf,
    /// The task's scratch layer (`--write`, `--write=DIR`'s `DIR/upper`); `None`: the image's
    /// root is read-only and writes to it fail with EROFS, as in namespace mode.
    pub upper: Option<PathBuf>,
    /// Host paths seen at guest paths (the default binds, `-b`, identity files, `/.lpmx`).
    /// A file may be bound as well as a directory. The longest guest prefix wins; among equal
    /// ones the later.
    pub binds: Vec<Bind>,
    /// A private directory of the task's (mode 0700) for the shim's own files: directory
    /// listings of merged directories, and the like. Removed by the caller at the end.
    pub private: PathBuf,
    /// The working directory the command starts in (a guest path).
    pub workdir: PathBuf,
    /// `--fakeroot`: `getuid()` and friends say 0, files the user owns appear owned by 0,
    /// `chown` succeeds without effect.
    pub fakeroot: bool,
}

/// One bind: `host` seen at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub guest: PathBuf,
    pub host: PathBuf,
    /// Writes through the bind fail with EROFS.
    pub ro: bool,
}

/// What went wrong in the shim itself (not in the traced command).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}
