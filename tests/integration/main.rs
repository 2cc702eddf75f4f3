//! Integration tests: one binary, run by tests/run.sh as an ordinary user against real
//! services. Every test starts with `Env::new()`, which refuses to run as root: a container
//! test that passes as root proves nothing about rootlessness.

mod support;

mod batch;
mod bridge;
mod claims;
mod cli;
mod config;
mod doctor;
mod expose;
mod grid;
mod herd;
mod proxy;
mod pull;
mod readme;
mod registry;
mod run;
mod sge;
mod through_proxy;
mod trust;
