//! The swarm across hosts: hosters and a client each in their own network
//! namespace, joined by the lab's link emulator (real sockets, real
//! delays), run as a user runs the binary. Skipped, with the reason, where
//! the lab cannot be made (not root, no TUN).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hypertensor_netlab::{Lab, Link};

use crate::process::Running;

const BIN: &str = env!("CARGO_BIN_EXE_hypertensor");

/// The command line of `hypertensor node --role hoster --blocks SPAN` on
/// `host`, listening on its lab address, stdout piped.
fn hoster_command(lab: &Lab, host: &str, span: &str, bootstrap: Option<&str>) -> Command {
    let mut cmd = lab.command(host, BIN);
    cmd.args(["node", "--role", "hoster", "--blocks", span])
        .args(["--listen", &format!("/ip4/{}/tcp/4001", lab.ip(host))])
        .stdout(Stdio::piped());
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    cmd
}

/// A hoster (see [`hoster_command`]) on `host`, serving, and the multiaddr
/// it listens on.
fn hoster(lab: &Lab, host: &str, span: &str, bootstrap: Option<&str>) -> (Running, String) {
    let p = Running::new(
        hoster_command(lab, host, span, bootstrap)
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs"),
    );
    let addr = p
        .wait_for("listening on ")
        .trim_start_matches("listening on ")
        .trim()
        .to_string();
    p.wait_for(&format!("serving blocks {}", span.replace(':', "..")));
    (p, addr)
}

/// The hoster of blocks 10..20 on `host`, joined through `boot`, its log
/// (at `log_filter`) written to a file; returned once it serves, with the
/// file and its line saying how it is reachable.
fn logged_hoster(
    lab: &Lab,
    host: &str,
    boot: &str,
    log_filter: &str,
) -> (Running, std::path::PathBuf, String) {
    let log = std::env::temp_dir().join(format!(
        "hypertensor-{host}-{}-{log_filter}.log",
        std::process::id()
    ));
    let p = Running::new(
        hoster_command(lab, host, "10:20", Some(boot))
            .env("RUST_LOG", log_filter)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the binary runs"),
    );
    p.wait_for("serving blocks 10..20");
    let reach = p.wait_for("reachable");
    (p, log, reach)
}

pub(crate) fn local_greedy(prompt: &str, max_tokens: &str) -> String {
    let out = Command::new(BIN)
        .args(["generate", "--prompt", prompt, "--temperature", "0"])
        .args(["--max-tokens", max_tokens])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A hoster's link is cut mid-generation: the client, on its own host,
/// fails over to the replica of that span and prints exactly the local
/// model's greedy tokens.
#[test]
fn a_hosters_link_cut_mid_generation_fails_over_with_identical_tokens() {
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    // The "near" replicas are 10 ms from the client, the "far" ones 45 ms:
    // the client's route takes the near ones (routing weighs latency).
    let near = Link::round_trip(Duration::from_millis(10));
    let lab = Lab::new(&["client", "near1", "near2", "far1", "far2"], near).unwrap();
    let far = Link {
        delay: Duration::from_millis(20),
        ..near
    };
    lab.set_link("far1", far).unwrap();
    lab.set_link("far2", far).unwrap();

    let (_near1, boot) = hoster(&lab, "near1", "0:15", None);
    let _near2 = hoster(&lab, "near2", "15:30", Some(&boot));
    let _far1 = hoster(&lab, "far1", "0:15", Some(&boot));
    let _far2 = hoster(&lab, "far2", "15:30", Some(&boot));

    let prompt = "The capital of France is";
    let max_tokens = "40";
    let expected = local_greedy(prompt, max_tokens);

    // Announcements may still be on their way: retry until a full route.
    let run = |cut: Option<&str>| -> (bool, String, String) {
        let mut child = lab
            .command("client", BIN)
            .args(["generate", "--prompt", prompt, "--temperature", "0", "-v"])
            .args(["--max-tokens", max_tokens, "--swarm", &boot])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        let mut cut_done = false;
        loop {
            let n = stdout.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if let Some(host) = cut
                && !cut_done
            {
                lab.set_link(host, Link::IDEAL.cut()).unwrap();
                cut_done = true;
            }
        }
        let ok = child.wait().unwrap().success();
        (ok, String::from_utf8(out).unwrap(), err.join().unwrap())
    };
    let mut warm = (false, String::new(), String::new());
    for _ in 0..30 {
        warm = run(None);
        if warm.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(warm.0, "the swarm never served: {}", warm.2);
    assert_eq!(warm.1, expected, "tokens across the lab");

    let started = Instant::now();
    let (ok, text, log) = run(Some("near1"));
    assert!(ok, "{log}");
    assert_eq!(text, expected, "tokens after failover");
    assert!(
        log.contains("server banned"),
        "no failover happened:\n{log}"
    );
    eprintln!("generation with a cut link took {:?}", started.elapsed());
}

/// `hypertensor generate` on `host` through the swarm joined at `boot`,
/// retried until the announcements have spread (a full route exists);
/// its last output.
fn generate_on(lab: &Lab, host: &str, prompt: &str, max_tokens: &str, boot: &str) -> String {
    let mut last = String::new();
    for _ in 0..30 {
        let out = lab
            .command(host, BIN)
            .args(["generate", "--prompt", prompt, "--temperature", "0"])
            .args(["--max-tokens", max_tokens, "--swarm", boot])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the swarm never served: {last}");
}

/// A hoster behind a NAT router finds out (AutoNAT) that no one can dial
/// it, reserves a slot on its bootstrap peer's relay and announces the
/// relayed address; a client, itself behind another router, is served
/// through it with the local model's tokens, and hole punching makes
/// their connection direct.
#[test]
fn a_hoster_behind_nat_serves_through_a_relay_with_identical_tokens() {
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let link = Link::round_trip(Duration::from_millis(10));
    let lab = Lab::with_nat(
        &["client", "relay", "public", "home"],
        link,
        &["home", "client"],
    )
    .unwrap();

    let (relay, boot) = hoster(&lab, "relay", "0:10", None);
    let (public, _) = hoster(&lab, "public", "20:30", Some(&boot));
    let direct = public.wait_for("reachable");
    assert!(direct.contains("reachable directly"), "{direct}");

    let (home, log, reach) = logged_hoster(&lab, "home", &boot, "hypertensor_p2p=info");
    let relay_id = boot.rsplit('/').next().unwrap();
    assert!(
        reach.contains("behind NAT: reachable through the relay at")
            && reach.contains(&format!("/p2p/{relay_id}/p2p-circuit")),
        "{reach}"
    );
    assert!(
        lab.nat_dropped("home").unwrap().unwrap() > 0,
        "the router let every probe in"
    );

    let prompt = "The capital of France is";
    let expected = local_greedy(prompt, "24");
    // Blocks 10..20 have no server but the one behind NAT.
    assert_eq!(generate_on(&lab, "client", prompt, "24", &boot), expected);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    // Both ends behind NAT, the relayed connection was replaced by a
    // direct one (DCUtR: simultaneous dials through both routers).
    assert!(
        logged.contains("direct connection (hole punched)"),
        "no hole punched:\n{logged}"
    );
    drop((relay, public, home));
}

/// The relay a hoster behind NAT listens through goes down: the hoster
/// reserves a slot on another peer that offers a relay (not one of its
/// bootstrap peers), re-announces the new relayed address at once, and a
/// new client is served through it with the local model's tokens.
#[test]
fn a_hoster_behind_nat_moves_to_another_relay_when_its_relay_dies() {
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let link = Link::round_trip(Duration::from_millis(10));
    let lab = Lab::with_nat(&["client", "a", "b", "c", "home"], link, &["home"]).unwrap();

    let (a, boot) = hoster(&lab, "a", "0:10", None);
    let (b, boot_b) = hoster(&lab, "b", "0:10", Some(&boot));
    let (c, _) = hoster(&lab, "c", "20:30", Some(&boot));
    for p in [&b, &c] {
        assert!(p.wait_for("reachable").contains("reachable directly"));
    }

    let (home, log, reach) = logged_hoster(&lab, "home", &boot, "hypertensor_node=info");
    let a_id = boot.rsplit('/').next().unwrap();
    assert!(
        reach.contains(&format!("/p2p/{a_id}/p2p-circuit")),
        "{reach}"
    );

    let prompt = "The capital of France is";
    let expected = local_greedy(prompt, "16");
    assert_eq!(generate_on(&lab, "client", prompt, "16", &boot_b), expected);

    drop(a);
    let deadline = Instant::now() + Duration::from_secs(90);
    let moved = loop {
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = logged
            .lines()
            .find(|l| l.contains("reachable through a relay again"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the hoster never found another relay:\n{logged}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        !moved.contains(a_id) && moved.contains("p2p-circuit"),
        "{moved}"
    );
    // A new client, joining through b, is served through the new relay.
    assert_eq!(generate_on(&lab, "client", prompt, "16", &boot_b), expected);
    let _ = std::fs::remove_file(&log);
    drop((b, c, home));
}
