//! The chat guest over the backplane, with raw sockets and socat.

use crate::common::*;
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn a_line_reaches_exactly_the_others_in_order_and_leaving_is_announced() {
    let pier = Pier::serve("chat", &[]);
    a_line_reaches_exactly_the_others(pier.addr());
}

/// What any chat handler must do (the Python one's test calls it too): a
/// line reaches the others in order and not its sender; a rename, a leave
/// and a `/quit` are announced.
pub(crate) fn a_line_reaches_exactly_the_others(addr: SocketAddr) {
    let mut a = Chatter::join(addr);
    let mut b = Chatter::join(addr);
    assert_eq!(a.line(), format!("* {} joined\n", b.nick));
    let mut c = Chatter::join(addr);
    assert_eq!(a.line(), format!("* {} joined\n", c.nick));
    assert_eq!(b.line(), format!("* {} joined\n", c.nick));

    for i in 0..5 {
        a.say(&format!("hello {i}"));
    }
    for other in [&mut b, &mut c] {
        for i in 0..5 {
            assert_eq!(other.line(), format!("<{}> hello {i}\n", a.nick));
        }
    }
    a.quiet();

    b.say("/nick bob");
    assert_eq!(b.line(), "* you are now bob\n");
    let renamed = format!("* {} is now known as bob\n", b.nick);
    assert_eq!(a.line(), renamed);
    assert_eq!(c.line(), renamed);
    b.say("hi all");
    assert_eq!(a.line(), "<bob> hi all\n");
    assert_eq!(c.line(), "<bob> hi all\n");

    let c_nick = c.nick.clone();
    drop(c);
    assert_eq!(a.line(), format!("* {c_nick} left\n"));
    assert_eq!(b.line(), format!("* {c_nick} left\n"));
    b.say("/quit");
    assert_eq!(b.line(), "* bye\n");
    assert_eq!(a.line(), "* bob left\n");
}

#[test]
fn a_slow_subscriber_does_not_stall_the_others() {
    a_slow_reader_does_not_stall_the_others("chat");
}

/// A client that never reads costs the room nothing: another hears every
/// line of 3,000 (`guest` is the chat handler to serve, in either world).
pub(crate) fn a_slow_reader_does_not_stall_the_others(guest: &str) {
    let pier = Pier::serve(guest, &[]);
    let mut a = Chatter::join(pier.addr());
    let mut b = Chatter::join(pier.addr());
    assert_eq!(a.line(), format!("* {} joined\n", b.nick));
    // A client that never reads.
    let slow = connect(pier.addr());
    let (a_saw, b_saw) = (a.line(), b.line());
    assert!(a_saw.ends_with(" joined\n") && a_saw == b_saw, "a saw {a_saw:?}, b saw {b_saw:?}");
    // A talks at an interactive pace; B hears every line while the slow
    // client's backlog is bounded and dropped behind the scenes.
    let text = "x".repeat(200);
    for i in 0..3000 {
        a.say(&format!("{i} {text}"));
        assert_eq!(b.line(), format!("<{}> {i} {text}\n", a.nick), "b must get every line, in order");
    }
    drop(slow);
    assert!(b.line().ends_with("left\n"));
}

#[test]
fn works_with_socat() {
    talks_with_socat("chat");
}

/// socat's line joins, speaks and quits.
pub(crate) fn talks_with_socat(guest: &str) {
    let pier = Pier::serve(guest, &[]);
    let mut a = Chatter::join(pier.addr());
    let port = pier.addr().port();
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf 'hi from socat\\n/quit\\n' | timeout 10 socat -t 2 - TCP:127.0.0.1:{port}")])
        .output()
        .expect("socat (`make setup` installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("* welcome user"), "{stdout}");
    assert!(stdout.ends_with("* bye\n"), "{stdout}");
    assert!(a.line().ends_with("joined\n"));
    let said = a.line();
    assert!(said.starts_with("<user") && said.ends_with("> hi from socat\n"), "{said}");
    assert!(a.line().ends_with("left\n"));
}

#[test]
fn sigterm_says_goodbye_then_closes_and_exits_zero() {
    says_goodbye_on_sigterm_then_exits_zero("chat");
}

/// `serverShutdown`: the goodbye, then EOF, then pier exits 0.
pub(crate) fn says_goodbye_on_sigterm_then_exits_zero(guest: &str) {
    let mut pier = Pier::serve(guest, &["--grace", "3s"]);
    let mut a = Chatter::join(pier.addr());
    pier.signal(libc::SIGTERM);
    // The line sent from shutdown-csa(server-shutdown) is flushed before the
    // orderly close: the last thing the client reads, then EOF.
    assert_eq!(a.line(), "* server shutting down\n", "a goodbye before the close");
    assert_eq!(a.rest(), "", "nothing after the goodbye but EOF");
    // Our FIN ends the host's linger at once.
    drop(a);
    let status = pier.wait(Duration::from_secs(3) + STEP).expect("pier exited");
    assert!(status.success(), "exit status {status}");
    assert!(pier.stderr().contains("server stopped"));
}
