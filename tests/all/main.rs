//! pier's integration suite: the real binary and real components over real
//! loopback sockets. `make build` must have built the guests first.

mod common;

mod budgets;
mod chat;
mod cli;
mod echo;
mod embed;
mod faults;
mod flow;
mod host_fuzz;
mod hostile;
mod http;
mod http_conformance;
mod inetd;
mod layout;
mod limits;
mod operate;
mod options;
mod properties;
mod proxy;
mod python;
mod reload;
mod resp;
mod resp_conformance;
mod server_handler;
mod shared_state;
mod shutdown;
mod smtp;
mod timers;
mod tls;
mod upstream;
