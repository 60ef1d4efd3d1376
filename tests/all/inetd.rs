//! inetd mode: plain `wasi:cli` programs (tests/guests/commands), which know
//! nothing of pier, serve connections with stdin and stdout as the socket.

use crate::common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn serve(program: &str, extra: &[&str]) -> Pier {
    let plugin = target_dir().join(format!("wasm32-wasip2/release/{program}.wasm"));
    let mut args = vec!["--listen", "127.0.0.1:0", "--plugin", plugin.to_str().unwrap()];
    args.extend_from_slice(extra);
    Pier::start(&args, 1)
}

#[test]
fn check_names_the_command_world() {
    let plugin = target_dir().join("wasm32-wasip2/release/cmd-cat.wasm");
    let out = run_pier(&["check", plugin.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("world: wasi:cli/command (served inetd-style)\n"));
}

/// `nc -N` sends its input, then FIN: the filter reads EOF, answers, exits.
#[test]
fn a_line_filter_answers_nc() {
    let pier = serve("cmd-rev", &[]);
    let mut nc = Command::new("timeout")
        .args(["10", "nc", "-N", "127.0.0.1", &pier.addr().port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nc (`make setup`)");
    nc.stdin.take().unwrap().write_all("hello\nwörld\n".as_bytes()).unwrap();
    let out = nc.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "olleh\ndlröw\n");
    pier.wait_for_log("reason=finished");
}

/// 4 MiB through `cat`, the client half-closing after its last byte.
#[test]
fn four_mebibytes_through_cat() {
    let pier = serve("cmd-cat", &[]);
    let data = pattern(11, 4 << 20);
    let got = exchange(pier.addr(), &data);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "cat changed the bytes");
}

/// The environment of ucspi-tcp's `tcpserver`, the listener's own `env`,
/// argv[0] only; the exit status (success or failure) in the log.
#[test]
fn the_program_sees_tcpserver_s_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        &format!(
            "[[listener]]\nname = \"env\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{}\"\nenv = {{ GREETING = \"hi\" }}\n",
            target_dir().join("wasm32-wasip2/release/cmd-env.wasm").display()
        ),
    );
    let pier = Pier::start(&["--config", &cfg], 1);
    let mut s = connect(pier.addr());
    let client = s.local_addr().unwrap();
    let text = String::from_utf8(read_to_eof(&mut s)).unwrap();
    let port = pier.addr().port();
    let expected = format!(
        "argv [\"cmd-env.wasm\"]\nGREETING=hi\nPROTO=TCP\nTCPLOCALIP=127.0.0.1\nTCPLOCALPORT={port}\n\
         TCPREMOTEIP=127.0.0.1\nTCPREMOTEPORT={}\n",
        client.port()
    );
    assert_eq!(text, expected);
    let log = pier.wait_for_log("command exited");
    assert!(log.contains("status=1"), "{log}");
}

/// A program that panics ends its own connection (a trap, in the log with
/// its message); the next connection is served.
#[test]
fn a_panic_ends_only_its_connection() {
    let pier = serve("cmd-panic", &[]);
    let mut s = connect(pier.addr());
    s.write_all(b"please\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"");
    let log = pier.wait_for_log("reason=trapped");
    assert!(log.contains("giving up on \\\"please\\\"") || log.contains("giving up on \"please\""), "{log}");
    let mut again = connect(pier.addr());
    again.write_all(b"again\n").unwrap();
    assert_eq!(read_to_eof(&mut again), b"");
    pier.wait_for_logs("reason=trapped", 2);
}

/// A program blocked reading stdin is waiting, not running: a 100 ms
/// `cpu-limit` does not cut a client that thinks for half a second.
#[test]
fn waiting_for_input_is_not_cut_by_the_cpu_limit() {
    let pier = serve("cmd-rev", &["--cpu-limit", "100ms"]);
    let mut s = connect(pier.addr());
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(b"abc\n").unwrap();
    assert_eq!(read_n(&mut s, 4), b"cba\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"");
}

/// A client that writes and never reads: `cat` blocks on its stdout, the
/// connection stalls, pier's memory stays bounded (the stdout buffer is the
/// listener's outbox high-water mark).
#[test]
fn a_peer_that_does_not_read_stalls_cat_with_bounded_memory() {
    let pier = serve("cmd-cat", &[]);
    let before = pier.rss_kib();
    let mut s = connect(pier.addr());
    let written = write_until_stalled(&mut s, 7, 64 << 20);
    assert!(written < 64 << 20, "the writes stalled: {written} bytes taken");
    let grown = pier.rss_kib().saturating_sub(before);
    assert!(grown < 16 << 10, "pier grew by {grown} KiB holding a stalled cat");
    // Read some back: the pipeline moves again.
    let mut buf = vec![0; 1 << 16];
    s.set_read_timeout(Some(STEP)).unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(n > 0 && buf[..n].iter().all(|&b| b == 7));
}
