//! The `config` import: a listener's `config` table, read-only, shared by
//! all its connections.

use crate::bindings::pier::server::config::Host;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A connection's view of its listener's `config` table.
pub(crate) struct Client(pub(crate) Arc<BTreeMap<String, String>>);

impl Host for Client {
    fn get(&mut self, key: String) -> Option<String> {
        self.0.get(&key).cloned()
    }
}
