//! The executable's command line: [`args`] (the clap types: the command-line contract),
//! [`dispatch`] (main, the short verbs, the error report), one file per longer verb family
//! ([`run`]; [`batch`]: prefetch and cleanup), and [`common`] for what every verb does first.
//! Imports go one way: dispatch, then the verbs, then common and args.

pub mod args;
pub mod batch;
pub mod common;
pub mod dispatch;
pub mod run;
