//! Listening sockets handed from one process to the next, so that a restart
//! or an upgrade never closes them and no client is refused:
//!
//! - from systemd (socket activation): `LISTEN_PID`, `LISTEN_FDS` and
//!   `LISTEN_FDNAMES` (`FileDescriptorName=` of each socket, matched to the
//!   listener of that name; otherwise by order);
//! - to a successor on SIGUSR2, as nginx does: the running pier starts the
//!   binary now on disk with the same arguments, handing it its sockets
//!   (`PIER_LISTEN_FDS`, `PIER_LISTEN_FDNAMES`), and waits for it to say it
//!   serves (a line on the pipe `PIER_READY_FD`) before it drains and exits.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// systemd's first passed descriptor.
const SD_LISTEN_FDS_START: RawFd = 3;
/// How long a successor may take to load its handlers and bind.
const SUCCESSOR_TIMEOUT: Duration = Duration::from_secs(60);

const VARS: [&str; 6] =
    ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "PIER_LISTEN_FDS", "PIER_LISTEN_FDNAMES", "PIER_READY_FD"];

/// What this process was handed, read once at start-up (the variables are
/// then removed, so nothing it starts sees them).
pub struct Handed {
    pub sockets: pier::Inherited,
    /// Where to say "ready" once serving (a successor's pipe).
    ready: Option<std::fs::File>,
}

/// Reads the handed sockets. Call before any thread is started.
pub fn take() -> anyhow::Result<Handed> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let mut sockets = pier::Inherited::default();
    let systemd = var("LISTEN_PID").is_some_and(|pid| pid == std::process::id().to_string());
    let fds: Vec<RawFd> = match (var("PIER_LISTEN_FDS"), var("LISTEN_FDS")) {
        (Some(list), _) => list.split(':').map(|fd| fd.parse().context("PIER_LISTEN_FDS")).collect::<Result<_, _>>()?,
        (None, Some(n)) if systemd => {
            let n: RawFd = n.parse().context("LISTEN_FDS: not a number")?;
            (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n).collect()
        }
        _ => Vec::new(),
    };
    let names = var("PIER_LISTEN_FDNAMES").or_else(|| var("LISTEN_FDNAMES").filter(|_| systemd)).unwrap_or_default();
    let mut names = names.split(':').map(|n| (!n.is_empty() && n != "unknown").then(|| n.to_string()));
    for fd in fds {
        sockets.add(names.next().flatten(), listening_socket(fd)?);
    }
    let ready = match var("PIER_READY_FD") {
        Some(fd) => Some(std::fs::File::from(owned(fd.parse().context("PIER_READY_FD")?)?)),
        None => None,
    };
    for name in VARS {
        // SAFETY: called at start-up, before the runtime or any other thread
        // exists, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    Ok(Handed { sockets, ready })
}

impl Handed {
    /// Tells the predecessor (if any) that this process serves now.
    pub fn ready(&mut self) {
        if let Some(mut pipe) = self.ready.take() {
            let _ = pipe.write_all(b"ready\n");
        }
    }
}

/// Takes ownership of a descriptor this process was handed.
fn owned(fd: RawFd) -> anyhow::Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!("handed descriptor {fd} is not open");
    }
    // SAFETY: the descriptor is open, was handed to this process to own,
    // and nothing else in the process knows it (it is read once, here).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A handed descriptor, checked to be a listening TCP socket.
fn listening_socket(fd: RawFd) -> anyhow::Result<std::net::TcpListener> {
    let fd = owned(fd)?;
    let socket = socket2::Socket::from(fd);
    let listening = socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM) && socket.local_addr().is_ok();
    if !listening {
        bail!("handed descriptor {} is not a TCP socket", socket.as_raw_fd());
    }
    Ok(socket.into())
}

/// Sets or clears close-on-exec on `fd`.
fn set_cloexec(fd: RawFd, cloexec: bool) -> std::io::Result<()> {
    let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on a descriptor this process holds open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts `exe` with this process's arguments and `sockets`, and waits until
/// it says it serves. Returns its pid; on failure the successor is gone and
/// this process goes on as it was.
pub fn start_successor(exe: &Path, sockets: &[(String, RawFd)]) -> anyhow::Result<u32> {
    let (read, write) = std::io::pipe()?;
    let fds: Vec<RawFd> = sockets.iter().map(|(_, fd)| *fd).chain([write.as_raw_fd()]).collect();
    let list = |it: &mut dyn Iterator<Item = String>| it.collect::<Vec<_>>().join(":");
    let mut command = std::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env("PIER_LISTEN_FDS", list(&mut sockets.iter().map(|(_, fd)| fd.to_string())))
        .env("PIER_LISTEN_FDNAMES", list(&mut sockets.iter().map(|(name, _)| name.clone())))
        .env("PIER_READY_FD", write.as_raw_fd().to_string());
    // The sockets and the pipe stay open across exec in the child only: the
    // flag is restored at once (pier starts no other process meanwhile).
    fds.iter().try_for_each(|&fd| set_cloexec(fd, false))?;
    let spawned = command.spawn();
    fds.iter().try_for_each(|&fd| set_cloexec(fd, true))?;
    let mut child = spawned.with_context(|| format!("starting `{}`", exe.display()))?;
    drop(write);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(read).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(SUCCESSOR_TIMEOUT) {
        Ok(line) if line == "ready\n" => Ok(child.id()),
        outcome => {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            match outcome {
                Ok(_) => bail!("the successor ended before it served ({status}); see its log above"),
                Err(_) => bail!("the successor did not serve within {SUCCESSOR_TIMEOUT:?}; it was stopped"),
            }
        }
    }
}
