//! The executable's command line.

pub mod args;
pub mod batch;
pub mod common;
pub mod dispatch;
pub mod run;
