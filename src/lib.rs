//! lpmx-job: run Docker/OCI images rootless inside batch jobs.
//!
//! One module per responsibility; the binary (`src/main.rs`, `src/cli.rs`, `src/commands.rs`)
//! only parses flags, calls these and turns errors into exit codes.

pub mod accounts;
pub mod bridge;
pub mod cache;
pub mod config;
pub mod doctor;
pub mod environ;
pub mod exit;
pub mod expose;
pub mod fswalk;
pub mod host;
pub mod lock;
pub mod mpi;
pub mod probe;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod runtime;
pub mod scheduler;
pub mod stage;
pub mod tls;
pub mod unpack;
pub mod userns;
