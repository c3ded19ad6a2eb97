//! The lab itself: hosts reach each other only through the emulator, which
//! adds the delay it claims, cuts links, and cleans up after itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hypertensor_netlab::{Lab, Link, in_namespace};

/// The lab, or `None` (with the reason printed) where this machine cannot
/// make one.
fn lab(hosts: &[&str], link: Link) -> Option<Lab> {
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Lab::new(hosts, link).expect("the lab starts"))
}

/// An echo server on `host` port 7000, answering each byte with itself.
fn echo_server(lab: &Lab, host: &str) -> SocketAddr {
    let addr = SocketAddr::from((lab.ip(host), 7000));
    let listener = in_namespace(lab.namespace(host), move || TcpListener::bind(addr))
        .unwrap()
        .expect("binds in its namespace");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
            });
        }
    });
    addr
}

fn connect(lab: &Lab, from: &str, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    in_namespace(lab.namespace(from), move || {
        TcpStream::connect_timeout(&to, timeout)
    })
    .unwrap()
}

/// The median of `n` one-byte round trips.
fn median_round_trip(stream: &mut TcpStream, n: usize) -> Duration {
    stream.set_nodelay(true).unwrap();
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            stream.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

#[test]
fn a_link_adds_the_round_trip_it_claims_within_ten_percent() {
    for rtt_ms in [10u64, 50, 100] {
        let rtt = Duration::from_millis(rtt_ms);
        let Some(lab) = lab(&["a", "b"], Link::round_trip(rtt)) else {
            return;
        };
        let server = echo_server(&lab, "b");
        let mut stream = connect(&lab, "a", server, Duration::from_secs(5)).expect("connects");
        let measured = median_round_trip(&mut stream, 21);
        let error = (measured.as_secs_f64() - rtt.as_secs_f64()).abs() / rtt.as_secs_f64();
        eprintln!(
            "round trip set to {rtt:?}: measured {measured:?} ({:.1}% off)",
            error * 100.0
        );
        assert!(error <= 0.10, "set {rtt:?}, measured {measured:?}");
    }
}

#[test]
fn hosts_reach_each_other_only_through_the_lab_and_a_cut_link_carries_nothing() {
    let Some(lab) = lab(&["a", "b", "c"], Link::IDEAL) else {
        return;
    };
    let server = echo_server(&lab, "b");
    let mut stream = connect(&lab, "a", server, Duration::from_secs(5)).expect("connects");
    assert!(median_round_trip(&mut stream, 5) < Duration::from_millis(50));

    lab.set_link("b", Link::IDEAL.cut()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    stream.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    assert!(
        stream.read_exact(&mut b).is_err(),
        "an answer crossed a cut link"
    );
    assert!(connect(&lab, "c", server, Duration::from_millis(500)).is_err());

    // Healed: TCP retransmits and the held byte's answer arrives.
    lab.set_link("b", Link::IDEAL).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .read_exact(&mut b)
        .expect("the answer after the link heals");
    assert!(connect(&lab, "c", server, Duration::from_secs(5)).is_ok());
}

#[test]
fn dropping_a_lab_removes_its_namespaces() {
    let Some(lab) = lab(&["only"], Link::IDEAL) else {
        return;
    };
    let ns = lab.namespace("only").to_string();
    let path = format!("/var/run/netns/{ns}");
    assert!(std::path::Path::new(&path).exists());
    let out = lab
        .command("only", "ip")
        .args(["-4", "addr"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10.77.0.1/16"), "{text}");
    drop(lab);
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn a_host_behind_nat_reaches_out_but_only_flows_it_opened_come_back() {
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let lab = Lab::with_nat(&["home", "server"], Link::IDEAL, &["home"]).expect("the lab starts");
    let home_public = lab.public_ip("home");
    assert_ne!(home_public, lab.ip("home"), "a router address of its own");
    assert_eq!(lab.public_ip("server"), lab.ip("server"));

    // Out: works, and the server sees the router's address.
    let server = SocketAddr::from((lab.ip("server"), 7000));
    let listener = in_namespace(lab.namespace("server"), move || TcpListener::bind(server))
        .unwrap()
        .unwrap();
    let mut out = connect(&lab, "home", server, Duration::from_secs(5)).expect("connects out");
    let (mut accepted, seen) = listener.accept().unwrap();
    assert_eq!(seen.ip(), std::net::IpAddr::V4(home_public));
    out.write_all(b"hi").unwrap();
    let mut b = [0u8; 2];
    accepted.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hi");

    // In: neither the private nor the public address takes a connection.
    let _home_listener = echo_server(&lab, "home");
    for ip in [lab.ip("home"), home_public] {
        let refused = connect(
            &lab,
            "server",
            SocketAddr::from((ip, 7000)),
            Duration::from_millis(500),
        );
        assert!(refused.is_err(), "{ip} took an unsolicited connection");
    }
    assert!(lab.nat_dropped("home").unwrap().unwrap() > 0);

    // A hole: after home sends from its port 7100 to the server's 7200,
    // the server's 7200 (and only it) reaches home's 7100.
    let home_socket = in_namespace(lab.namespace("home"), move || {
        std::net::UdpSocket::bind(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 7100)))
    })
    .unwrap()
    .unwrap();
    home_socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let bind_server = |port: u16| {
        in_namespace(lab.namespace("server"), move || {
            std::net::UdpSocket::bind(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)))
        })
        .unwrap()
        .unwrap()
    };
    let (punched, other) = (bind_server(7200), bind_server(7201));
    let home_at = SocketAddr::from((home_public, 7100));
    let mut buf = [0u8; 16];
    punched.send_to(b"early", home_at).unwrap();
    assert!(home_socket.recv_from(&mut buf).is_err(), "no hole yet");
    home_socket
        .send_to(b"punch", SocketAddr::from((lab.ip("server"), 7200)))
        .unwrap();
    let (n, from) = punched.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"punch"[..], home_at));
    other.send_to(b"other", home_at).unwrap();
    punched.send_to(b"through", home_at).unwrap();
    let (n, _) = home_socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"through", "only the punched flow comes in");
}
