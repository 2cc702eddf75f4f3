//! lpmx-job: run Docker/OCI images rootless inside batch jobs.
//!
//! One module per responsibility; the binary (`src/main.rs`, `src/cli/`) only parses flags,
//! calls these and turns errors into exit codes.

pub mod cache;
pub mod config;
pub mod configured;
pub mod container;
pub mod exit;
pub mod fswalk;
pub mod host;
pub mod image;
