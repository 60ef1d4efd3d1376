//! Listeners' state in Redis (`--redis`): two pier processes share the
//! RESP guest's keys and the chat guest's room, through a real redis-server
//! the tests start, stop and start again.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends one RESP command and reads its reply: a status, error or integer
/// line, or a bulk string, as text without the last CRLF.
fn command(s: &mut TcpStream, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(request.as_bytes()).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).expect("a reply in time (the call must not hang)");
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
    match line.strip_prefix('$').map(|n| n.parse::<i64>().unwrap()) {
        Some(n) if n >= 0 => {
            let body = read_n(s, n as usize + 2);
            String::from_utf8_lossy(&body[..n as usize]).into_owned()
        }
        Some(_) => "(nil)".into(),
        None => line,
    }
}

/// `pier serve` of `guest` with its state in `redis`, as listener `name`.
fn serve_shared(guest_name: &str, redis: &RedisServer, name: &str, extra: &[&str]) -> Pier {
    let url = redis.url();
    let mut args = vec!["--name", name, "--redis", url.as_str()];
    args.extend_from_slice(extra);
    Pier::serve(guest_name, &args)
}

#[test]
fn two_processes_share_one_store_and_incr_is_atomic_across_them() {
    let redis = RedisServer::start();
    let (p1, p2) = (serve_shared("resp", &redis, "cache", &[]), serve_shared("resp", &redis, "cache", &[]));
    let (mut a, mut b) = (connect(p1.addr()), connect(p2.addr()));
    assert_eq!(command(&mut a, &["SET", "greeting", "hello"]), "+OK");
    assert_eq!(command(&mut b, &["GET", "greeting"]), "hello", "process 2 sees process 1's key");
    assert_eq!(command(&mut b, &["DEL", "greeting"]), ":1");
    assert_eq!(command(&mut a, &["EXISTS", "greeting"]), ":0");
    // Two clients of each process increment one counter at once.
    let clients: Vec<_> = [p1.addr(), p1.addr(), p2.addr(), p2.addr()]
        .into_iter()
        .map(|addr| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for _ in 0..250 {
                    assert!(command(&mut s, &["INCR", "hits"]).starts_with(':'));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(command(&mut a, &["GET", "hits"]), "1000", "no increment lost between processes");
    assert_eq!(command(&mut b, &["INCRBY", "hits", "-1000"]), ":0");
    // Another listener name is another tenant: its keys are its own.
    let other = serve_shared("resp", &redis, "other", &[]);
    let mut c = connect(other.addr());
    assert_eq!(command(&mut a, &["SET", "mine", "1"]), "+OK");
    assert_eq!(command(&mut c, &["GET", "mine"]), "(nil)", "a tenant never sees another's keys");
    // KEYS pages through the bucket (1,500 keys: two pages), from either
    // process.
    for i in 0..1500 {
        assert_eq!(command(&mut a, &["SET", &format!("many{i}"), "v"]), "+OK");
    }
    let listed = redis_cli(p2.addr().port(), &["keys", "many*"]);
    let lines: Vec<&str> = listed.lines().collect();
    let unique: std::collections::HashSet<&str> = lines.iter().copied().collect();
    assert_eq!((lines.len(), unique.len()), (1500, 1500), "every key, once");
    // The keys live in Redis, under the listener's prefix.
    let keys = redis_cli(redis.addr.port(), &["--scan", "--pattern", "pier:{cache}:*"]);
    assert!(keys.contains("pier:{cache}:kv:"), "{keys}");
    assert!(!redis_cli(redis.addr.port(), &["--scan", "--pattern", "pier:{other}:kv:*"]).contains("mine"));
}

#[test]
fn the_budget_holds_across_processes_and_a_local_listener_keeps_its_own() {
    let redis = RedisServer::start();
    let budget = ["--kv-max-keys", "8"];
    let (p1, p2) = (serve_shared("resp", &redis, "small", &budget), serve_shared("resp", &redis, "small", &budget));
    let (mut a, mut b) = (connect(p1.addr()), connect(p2.addr()));
    // Keys from both processes until the store is full (the guest keeps a
    // few keys of its own in it too).
    let mut stored = 0;
    while command(if stored % 2 == 0 { &mut a } else { &mut b }, &["SET", &format!("k{stored}"), "v"]) == "+OK" {
        stored += 1;
        assert!(stored <= 8, "kv-max-keys 8 holds at most 8 keys");
    }
    assert!(stored >= 2, "both processes stored keys before the budget ran out");
    for s in [&mut a, &mut b] {
        let refused = command(s, &["SET", "one-more", "v"]);
        assert!(refused.starts_with("-OOM"), "a new key is refused by either process: {refused}");
        assert!(command(s, &["INCR", "counter"]).starts_with('-'), "increment creates keys too");
    }
    assert_eq!(command(&mut b, &["SET", "k0", "overwritten"]), "+OK", "replacing a key adds none");
    assert_eq!(command(&mut a, &["DEL", "k0"]), ":1");
    assert_eq!(command(&mut b, &["SET", "one-more", "v"]), "+OK", "a delete in process 1 makes room in process 2");
    // shared-state = "local": the same name, this process's own store.
    let local = serve_shared("resp", &redis, "small", &["--shared-state", "local"]);
    let mut c = connect(local.addr());
    assert_eq!(command(&mut c, &["GET", "k1"]), "(nil)");
    assert_eq!(command(&mut c, &["SET", "k1", "local"]), "+OK");
    assert_eq!(command(&mut a, &["GET", "k1"]), "v");
}

#[test]
fn a_chat_line_crosses_processes_and_the_sender_does_not_get_it_back() {
    let redis = RedisServer::start();
    let (p1, p2) = (serve_shared("chat", &redis, "lobby", &[]), serve_shared("chat", &redis, "lobby", &[]));
    let mut a = Chatter::join(p1.addr());
    let mut b = Chatter::join(p2.addr());
    assert_ne!(a.nick, b.nick, "nicks count the clients of both processes");
    a.say_until_heard(&mut b, "hello from process 1");
    for i in 0..20 {
        a.say(&format!("line {i}"));
    }
    for i in 0..20 {
        b.expect(&format!("<{}> line {i}\n", a.nick));
    }
    b.say("hello from process 2");
    a.expect(&format!("<{}> hello from process 2\n", b.nick));
    // A third client, in process 1 with a, hears both without Redis in
    // between for a's lines, and a never hears its own.
    let mut c = Chatter::join(p1.addr());
    a.say("to both");
    c.expect(&format!("<{}> to both\n", a.nick));
    b.expect(&format!("<{}> to both\n", a.nick));
    b.say("done");
    a.expect(&format!("<{}> done\n", b.nick));
    while let Some(line) = a.line_within(Duration::from_millis(300)) {
        assert!(!line.starts_with(&format!("<{}>", a.nick)), "a got its own line back: {line:?}");
    }
}

/// Two processes on one port (`reuse-port`), the kernel choosing which one
/// each client reaches: a line typed into a client of one reaches a client
/// of the other.
#[test]
fn two_processes_on_one_port_share_one_room() {
    let redis = RedisServer::start();
    let opts = ["--reuse-port", "--metrics", "127.0.0.1:0"];
    let p1 = serve_shared("chat", &redis, "lobby", &opts);
    let (url, chat, listen) = (redis.url(), guest("chat"), p1.addr().to_string());
    let mut args = vec!["--listen", &listen, "--plugin", chat.to_str().unwrap(), "--name", "lobby", "--redis", &url];
    args.extend_from_slice(&opts);
    let p2 = Pier::start(&args, 1);
    assert_eq!(p2.addr(), p1.addr());
    // Clients until one is in each process (each holds them all open).
    let open = "pier_connections_open{listener=\"lobby\"}";
    let (mut first, mut second, mut extra) = (None, None, Vec::new());
    let deadline = Instant::now() + STEP;
    while first.is_none() || second.is_none() {
        assert!(Instant::now() < deadline, "the kernel never spread clients over both processes");
        let before = (metric(&p1, open), metric(&p2, open));
        let client = Chatter::join(p1.addr());
        match (metric(&p1, open) > before.0, metric(&p2, open) > before.1) {
            (true, false) if first.is_none() => first = Some(client),
            (false, true) if second.is_none() => second = Some(client),
            _ => extra.push(client),
        }
    }
    let (mut a, mut b) = (first.unwrap(), second.unwrap());
    a.say_until_heard(&mut b, "from process 1");
    b.say("from process 2");
    a.expect(&format!("<{}> from process 2\n", b.nick));
}

#[test]
fn a_redis_outage_fails_calls_quickly_and_pier_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let opts = ["--redis-timeout", "200ms", "--metrics", "127.0.0.1:0"];
    let (kv, chat1) = (serve_shared("resp", &redis, "cache", &opts), serve_shared("chat", &redis, "lobby", &opts));
    let chat2 = serve_shared("chat", &redis, "lobby", &opts);
    let mut s = connect(kv.addr());
    assert_eq!(command(&mut s, &["SET", "k", "v"]), "+OK");
    let (mut a, mut b) = (Chatter::join(chat1.addr()), Chatter::join(chat2.addr()));
    a.say_until_heard(&mut b, "before");

    redis.stop();
    // Every call answers an error, none hangs (a reply within STEP), and
    // the connection lives on.
    for _ in 0..5 {
        let reply = command(&mut s, &["GET", "k"]);
        assert!(reply.starts_with("-") && reply.contains("redis unavailable"), "{reply}");
    }
    let log = kv.wait_for_log("redis unreachable");
    assert_eq!(log.matches("redis unreachable").count(), 1, "the outage is logged once:\n{log}");
    // Each process finds the outage by itself (its check every second).
    chat1.wait_for_log("redis unreachable");
    chat2.wait_for_log("redis unreachable");
    // Chat within one process goes on; lines to the other are dropped and
    // counted.
    let mut c = Chatter::join(chat1.addr());
    let dropped = "pier_backplane_dropped_total{listener=\"lobby\"}";
    let before = metric(&chat1, dropped);
    a.say("during");
    c.expect(&format!("<{}> during\n", a.nick));
    let deadline = Instant::now() + STEP;
    while metric(&chat1, dropped) <= before {
        assert!(Instant::now() < deadline, "a line published during the outage is counted as dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(b.line_within(Duration::from_millis(300)).is_none(), "nothing crossed during the outage");
    assert_eq!(metric(&chat1, "pier_redis_up"), 0);

    redis.restart();
    // pier reconnects (and resubscribes) by itself.
    let deadline = Instant::now() + STEP;
    loop {
        let reply = command(&mut s, &["SET", "k", "again"]);
        if reply == "+OK" {
            break;
        }
        assert!(Instant::now() < deadline, "the store never came back: {reply}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(command(&mut s, &["GET", "k"]), "again");
    for pier in [&kv, &chat1, &chat2] {
        pier.wait_for_log("redis reachable again");
    }
    assert_eq!(metric(&chat1, "pier_redis_up"), 1);
    a.say_until_heard(&mut b, "after");
    b.say("and back");
    a.expect(&format!("<{}> and back\n", b.nick));
}

/// A Redis that stops answering (SIGSTOP) costs each call at most
/// `redis-timeout`, and then nothing: calls fail at once, and what is
/// published fills at most the bounded queue to Redis, every message of it
/// counted as dropped. When Redis answers again, so does pier.
#[test]
fn a_hung_redis_costs_a_timeout_and_fills_only_a_bounded_queue() {
    let redis = RedisServer::start();
    let opts = ["--redis-timeout", "300ms", "--metrics", "127.0.0.1:0"];
    let (kv, chat) = (serve_shared("resp", &redis, "cache", &opts), serve_shared("chat", &redis, "lobby", &opts));
    let mut s = connect(kv.addr());
    assert_eq!(command(&mut s, &["SET", "k", "v"]), "+OK");
    let mut a = Chatter::join(chat.addr());
    let before = chat.rss_kib();
    redis.signal(libc::SIGSTOP);
    let reply = command(&mut s, &["GET", "k"]);
    assert!(reply.starts_with("-ERR redis unavailable"), "{reply}");
    kv.wait_for_log("redis unreachable");
    // The chat guest publishes each line: 6,000 of them, more than the
    // queue to Redis holds.
    let lines = 6000;
    let text: String = (0..lines).map(|i| format!("line {i}\n")).collect();
    a.say(text.trim_end());
    let dropped = "pier_backplane_dropped_total{listener=\"lobby\"}";
    let published = "pier_backplane_published_total{listener=\"lobby\"}";
    let deadline = Instant::now() + STEP;
    while metric(&chat, dropped) < lines || metric(&chat, published) < lines {
        assert!(Instant::now() < deadline, "not every line published during the hang was counted as dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each lost once (and the join notice, if it was still on its way).
    let lost = metric(&chat, dropped);
    assert!((lines..=lines + 1).contains(&lost), "{lost} dropped for {lines} lines");
    let grown = chat.rss_kib().saturating_sub(before);
    assert!(grown < 16 << 10, "pier grew by {grown} KiB while Redis hung");
    redis.signal(libc::SIGCONT);
    kv.wait_for_log("redis reachable again");
    assert_eq!(command(&mut s, &["GET", "k"]), "v");
}

/// Messages on their way to Redis count against their listener's
/// `backplane-max-bytes`: a tenant that publishes faster than Redis takes
/// (here: a Redis that stopped for a moment) loses its own messages, and
/// another tenant's still get through.
#[test]
fn a_flooding_tenant_fills_only_its_own_share_of_the_queue_to_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "redis = \"{}\"\nredis-timeout = \"5s\"\nmetrics = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"flood\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:chat}}\"\n\
         backplane-max-bytes = \"64KiB\"\n\
         [[listener]]\nname = \"quiet\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:chat}}\"\n",
        redis.url()
    );
    let config = config_file(dir.path(), &text);
    let (p1, p2) = (Pier::start(&["--config", &config], 2), Pier::start(&["--config", &config], 2));
    let mut flooder = Chatter::join(p1.addrs[0].1);
    let (mut speaker, mut listener) = (Chatter::join(p1.addrs[1].1), Chatter::join(p2.addrs[1].1));
    speaker.say_until_heard(&mut listener, "before");
    redis.signal(libc::SIGSTOP);
    let flood: String = (0..5000).map(|i| format!("flood {i}\n")).collect();
    flooder.say(flood.trim_end());
    let dropped = |name: &str| format!("pier_backplane_dropped_total{{listener=\"{name}\"}}");
    let deadline = Instant::now() + STEP;
    while metric(&p1, &dropped("flood")) == 0 {
        assert!(Instant::now() < deadline, "the flood never filled its share");
        std::thread::sleep(Duration::from_millis(10));
    }
    speaker.say("still heard");
    redis.signal(libc::SIGCONT);
    listener.expect(&format!("<{}> still heard\n", speaker.nick));
    assert_eq!(metric(&p1, &dropped("quiet")), 0, "the quiet tenant lost nothing");
    assert!(metric(&p1, &dropped("flood")) > 1000, "the flood lost what passed its share");
}

#[test]
fn an_unreachable_or_malformed_redis_is_one_line_at_start_up() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let echo = guest("echo");
    let url = format!("redis://{closed}");
    let base = ["serve", "--listen", "127.0.0.1:0", "--plugin", echo.to_str().unwrap()];
    let out = run_pier(&[&base[..], &["--redis", &url, "--redis-timeout", "300ms"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("redis at {url}")) && err.contains("start redis-server"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = run_pier(&[&base[..], &["--redis", "http://nowhere"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("redis = `http://nowhere`"), "{err}");
}

#[test]
fn check_names_the_redis_and_the_listeners_sharing_it() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "redis = \"{}\"\n[[listener]]\nname = \"lobby\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:chat}}\"\n\
         [[listener]]\nname = \"solo\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:echo}}\"\nshared-state = \"local\"\n",
        redis.url()
    );
    let config = config_file(dir.path(), &text);
    let out = run_pier(&["check", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("redis {}: reachable; state shared there by: lobby\n", redis.url())), "{text}");
}
