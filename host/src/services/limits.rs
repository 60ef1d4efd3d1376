//! The `limits` import: what the listener allows its connections and how
//! much of it they use, read from the services that keep the budgets.

use super::keyvalue;
use crate::bindings::pier::server::limits::{Host, Usage};
use std::sync::Arc;

/// A connection's view of its listener's budgets.
pub(crate) struct Client(pub(crate) Arc<keyvalue::Store>);

impl Host for Client {
    fn keyvalue_usage(&mut self) -> Usage {
        let u = self.0.usage();
        Usage { used_bytes: u.bytes, max_bytes: u.max_bytes, keys: u.keys, max_keys: u.max_keys }
    }
}
