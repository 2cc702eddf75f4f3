//! From an image reference to layer trees in the cache.

pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod tls;
pub mod unpack;
