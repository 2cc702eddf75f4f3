//! Entering a container of an image tree and running its command: [`runtime`] enters (user
//! and mount namespace, root, binds, identity) and execs in place; [`environ`] decides the
//! command's environment and [`mpi`] injects the host's MPI; with bridged host commands,
//! [`bridge`] supervises from the host side. [`expose`] writes host wrappers that run a
//! container's tool.

pub mod bridge;
pub mod environ;
pub mod expose;
pub mod mpi;
pub mod runtime;
