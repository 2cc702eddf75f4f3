//! Entering a container and supervising it.

pub mod bridge;
pub mod environ;
pub mod expose;
pub mod mpi;
pub mod runtime;
