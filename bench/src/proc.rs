//! What the benchmark reads about a server process from `/proc`, and the one
//! resource limit it raises. The server runs in its own process, so its CPU
//! and memory can be measured apart from the load generator's, even though
//! both share the same cores.

use anyhow::{Context, Result, bail};
use std::time::Duration;

/// Resident set size of `pid` in bytes: the `VmRSS` line of `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .with_context(|| format!("{path} has no VmRSS line: has the server exited?"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parsing VmRSS `{line}` in {path}"))?;
    Ok(kib * 1024)
}

/// CPU time `pid` has used so far, user plus system, over all its threads:
/// fields 14 (utime) and 15 (stime) of `/proc/<pid>/stat`, in clock ticks.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Field 2, the command name, is in parentheses and may hold spaces:
    // count fields from the last ')'. What follows starts at field 3.
    let (_, rest) = text.rsplit_once(')').with_context(|| format!("{path}: no `)` after the command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let raw = fields.get(n - 3).with_context(|| format!("{path}: no field {n}"))?;
        raw.parse().with_context(|| format!("{path}: field {n} `{raw}` is not a number"))
    };
    let ticks = field(14)? + field(15)?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64))
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `/proc/<pid>/stat` times (100 on Linux).
fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf reads a constant and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Kernel memory mappings of `pid` (lines of `/proc/<pid>/maps`). pier's
/// pooled instances each add a few, and `vm.max_map_count` caps the total.
pub fn map_count(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(text.lines().count() as u64)
}

/// `vm.max_map_count`, if readable.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse().ok()
}

/// The open-files limit before and after [`raise_nofile`].
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Nofile {
    pub before: u64,
    pub now: u64,
}

/// Raises the open-files limit as far as this process may: both limits to
/// fs.nr_open where the kernel allows it (a privileged process; the
/// 100,000-connection run needs that), else the soft limit to the hard one.
/// The idle scenario holds 10,000 client sockets here and as many in the
/// server, and the servers are our children, so they inherit the raised
/// limit (the `ulimit -n` of a shell script, without a shell).
pub fn raise_nofile() -> Result<Nofile> {
    let before = soft_nofile()?;
    let nr_open: u64 =
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(1 << 20);
    if before < nr_open {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `lim` is a valid, writable rlimit; then a valid rlimit
        // whose soft value is within the hard one. Refused unless privileged.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_max = lim.rlim_max.max(nr_open);
                lim.rlim_cur = nr_open;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
    // Unprivileged, as `pier serve` does: the soft limit to the hard one.
    pier::raise_open_files_limit();
    Ok(Nofile { before, now: soft_nofile()? })
}

/// The soft `RLIMIT_NOFILE`.
fn soft_nofile() -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}
