//! pier-guest-flow: what pier's guest SDKs share, free of any WIT world.
//!
//! `pier-guest` (`connection-handler`) and `pier-server-guest`
//! (`server-handler`) cannot be one crate: wit-component merges every world
//! whose bindings are linked into a binary. So the logic they share lives
//! here, behind [`Wire`], and each SDK supplies its world's host calls.

mod lines;
mod outbox;

#[cfg(any(test, feature = "fake"))]
pub mod fake;

pub use lines::Lines;
pub use outbox::{Outbox, Refused, Wire};
