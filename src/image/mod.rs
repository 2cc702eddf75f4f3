//! From an image reference to layer trees in the cache: [`reference`](mod@reference) parses
//! it, [`registry`] (with [`tls`]) talks to registries, [`pull`] resolves the platform's
//! manifest and fetches every blob under its own lock, verifying each in the pass that
//! [`unpack`]s it; [`progress`] reports on the way.

pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod tls;
pub mod unpack;
