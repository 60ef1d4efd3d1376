//! Telling systemd how the service stands (`sd_notify`, for `Type=notify`
//! units): `READY=1` once every listener serves, `RELOADING=1` then
//! `READY=1` around a reload, `STOPPING=1` when draining begins. A datagram
//! to `$NOTIFY_SOCKET`; without it, nothing.

use std::os::unix::net::UnixDatagram;

pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket: its name begins with a NUL byte.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::debug!(error = %e, state, "sd_notify failed");
    }
}
