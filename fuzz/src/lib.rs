//! Shared pieces of pgsplit's fuzz targets: the limits they run under and
//! a generator of grammar-shaped SQL for the classifier.
//!
//! The targets call pgsplit's own pure code (framing, startup negotiation,
//! SCRAM, the reply tracker, the classifier, the config parser) exactly as
//! the proxy does; nothing here re-implements what it checks.

pub mod sql;

/// `limits.max_message_size` in the targets: small enough that no input
/// can be a whole message of that size (inputs are capped by `-max_len`),
/// so every length field that claims more must be refused or waited for,
/// never reserved.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The relay's high-water mark: an unfinished batch this long goes on.
pub use pgsplit::session::relay::HIGH_WATER;
