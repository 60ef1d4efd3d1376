//! Host services: the only ways out of a sandbox besides the connection
//! itself. Each keeps what a listener shares (a backplane, a key-value store,
//! a `config` table) and gives every connection a client that implements
//! its WIT imports.

pub(crate) mod backplane;
pub(crate) mod config;
pub(crate) mod keyvalue;
pub(crate) mod limits;
pub(crate) mod redis;
pub(crate) mod timers;
pub(crate) mod upstream;
