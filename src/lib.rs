//! lpmx-job: run Docker/OCI images rootless inside batch jobs.
//!
//! The modules follow the path of a job step (`shared/DESIGN.md`; `ARCHITECTURE.md` is the
//! guided tour):
//!
//! - [`image`]: resolve a reference, fetch its blobs, unpack its layers;
//! - [`cache`]: the shared store those land in, its locks, the assembled image trees, their
//!   node-local staging, and its maintenance;
//! - [`container`]: enter a container of a tree and exec the command; the supervisor and the
//!   host command bridge;
//! - [`host`]: facts about the node, the user and the batch system, and `doctor`;
//! - [`configured`]: those, as the settings ([`config`]) configure them, for every entry point;
//! - [`fswalk`] and [`exit`]: walking trees by descriptor, and exit statuses.
//!
//! The binary (`src/main.rs`, `src/cli/`) only parses flags, calls these and turns errors into
//! exit codes.

pub mod cache;
pub mod config;
pub mod configured;
pub mod container;
pub mod exit;
pub mod fswalk;
pub mod host;
pub mod image;
