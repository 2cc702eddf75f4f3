//! The executable's command line: [`args`] (the clap types: the command-line contract),
//! [`dispatch`] (main, the match from verb to function, the short verbs, the error report),
//! one file per verb family ([`run`]; [`images`]: pull, images, rmi; [`registry`]: search,
//! tags, login, logout; [`cache`]; [`expose`]; [`batch`]: prefetch and cleanup), and
//! [`common`] for what every verb does first. Imports go one way: dispatch, then the verbs,
//! then common and args.

pub mod args;
pub mod batch;
pub mod cache;
pub mod common;
pub mod dispatch;
pub mod expose;
pub mod images;
pub mod registry;
pub mod run;
