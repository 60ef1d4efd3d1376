//! The kernel's limits a server meets before its own: open files and
//! memory mappings. pier checks them at start-up against the listeners'
//! max-connections and says which setting to raise.

use tracing::warn;

/// Warns, once at start-up, about each kernel limit that would cap live
/// connections below `connections` (the sum of max-connections), or the
/// pool below its `instances` (fewer: a `server-handler` listener has one
/// for all its connections).
pub(crate) fn warn_if_too_low(connections: u32, instances: u32) {
    warn_if_open_files_too_low(connections);
    warn_if_map_count_too_low(instances);
}

/// Each connection is an open file. Past the soft `RLIMIT_NOFILE`, accept
/// fails (and retries) while max-connections says there is room, so say so
/// at start-up. (`pier serve` raises its soft limit to the hard one first.)
fn warn_if_open_files_too_low(connections: u32) {
    let Some(limit) = open_files_limit() else { return };
    // Listeners, the engine's files, stdio and some slack.
    let needed = u64::from(connections) + 64;
    if needed > limit {
        warn!(
            open_files_limit = limit,
            needed,
            "the open-files limit may cap live connections below max-connections; raise it with `ulimit -n {needed}` (or LimitNOFILE= in a systemd unit)"
        );
    }
}

/// The soft `RLIMIT_NOFILE`, if it is finite.
fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Raises the soft open-files limit to the hard one, as servers do (Go's
/// runtime does it for every program): the default soft limit, often 1024,
/// would cap a server at about a thousand connections. For the `pier`
/// binary; a program that embeds pier keeps its own policy.
pub fn raise_open_files_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= lim.rlim_max {
        return;
    }
    // The kernel refuses an unlimited soft limit for files; fs.nr_open is
    // the most it allows.
    lim.rlim_cur = if lim.rlim_max == libc::RLIM_INFINITY {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|t| t.trim().parse().ok());
        nr_open.unwrap_or(1 << 20)
    } else {
        lim.rlim_max
    };
    // SAFETY: a valid rlimit whose soft value is within the hard one. On
    // failure the limit stays as it was, which the start-up check reports.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

/// Each pool slot costs kernel memory mappings: two per fiber stack at
/// start-up (the stack and its guard page) and about four more per live
/// instance. Past `vm.max_map_count`, new instances fail, so say so at
/// start-up.
fn warn_if_map_count_too_low(instances: u32) {
    let Ok(text) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else { return };
    let Ok(max) = text.trim().parse::<u64>() else { return };
    let needed = u64::from(instances) * 6 + 1024;
    if needed > max {
        warn!(
            max_map_count = max,
            needed,
            "vm.max_map_count may cap live connections below max-connections; raise it with `sysctl -w vm.max_map_count={needed}`"
        );
    }
}
