//! The pages people look at, in a real browser (headless Chromium over the DevTools protocol):
//! the proxy's dashboard against a real proxy process with real backends, and test-server's
//! status page. Screenshots land in `target/screenshots/`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::browser::{self, screenshot_path, Browser};
use common::http::call;
use common::prerequisite;

const REQUIRE: &str = "NETMOD_REQUIRE_CHROMIUM";

fn chromium() -> bool {
    prerequisite("chromium", REQUIRE, browser::available())
}

/// GETs of `path` at `addr` from a thread until the returned flag is set (bounded: 60 s). A
/// request that fails (its backend was killed on purpose) is simply not counted.
fn traffic(addr: SocketAddr, path: &'static str) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let t = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        let get = format!("GET {path} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(
                |mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(5)))?;
                    c.write_all(get.as_bytes())?;
                    answer.clear();
                    c.read_to_end(&mut answer)
                },
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    (stop, t)
}

fn card(addr: SocketAddr) -> String {
    format!("document.querySelector('.backend[data-address=\"{addr}\"]')")
}

#[test]
#[cfg_attr(
    not(netmod_chromium),
    ignore = "needs chromium (Debian's chromium package)"
)]
fn the_proxy_dashboard_shows_live_backends_follows_a_failure_and_drains_with_the_token() {
    if !chromium() {
        return;
    }
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let (_proxy, listen, admin) = common::spawn_proxy(
        &[a.addr, b.addr],
        &[
            "--check-interval",
            "0.2",
            "--rise",
            "1",
            "--fall",
            "1",
            "--admin-token",
            "s3cret",
        ],
    );
    let (stop, load) = traffic(listen, "/page");
    let mut page = Browser::launch(1280, 800);
    page.open(&format!("http://{admin}/"));
    page.wait_for(
        "both backends healthy",
        "document.querySelectorAll('.backend[data-state=\"healthy\"]').length === 2",
    );
    page.wait_for(
        "live requests per second on both",
        "[...document.querySelectorAll('.backend .rps')]\
           .every((e) => parseFloat(e.textContent.replace(/,/g, '')) > 0)",
    );
    page.wait_for(
        "latency percentiles",
        "[...document.querySelectorAll('.backend .p99')].every((e) => e.textContent.endsWith('ms'))",
    );
    page.wait_for(
        "sparklines with a few seconds of history",
        "document.querySelector('.spark polyline').getAttribute('points').split(' ').length >= 4",
    );
    page.assert_readable("dashboard at 1280x800");
    page.screenshot(&screenshot_path("proxy-dashboard-1280x800"));

    // A backend dies: the page follows the health checks.
    a.kill();
    page.wait_for(
        "the killed backend unhealthy",
        &format!("{}?.dataset.state === 'unhealthy'", card(a.addr)),
    );

    // "Drain" without the token: refused, and the page says what is missing.
    let drain = format!(
        "document.querySelector('button.drain[data-address=\"{}\"]').click(); true",
        b.addr
    );
    page.eval(&drain);
    page.wait_for(
        "the page asks for the token",
        "document.getElementById('msg').textContent.includes('admin token')",
    );
    let status = call(admin, "GET /status HTTP/1.1\r\nHost: a\r\n\r\n").body;
    assert!(!status.contains("\"draining\":true"), "{status}");

    // With the token typed in, the button acts through the admin API.
    page.eval("document.getElementById('token').value = 's3cret'; true");
    page.eval(&drain);
    page.wait_for(
        "the drained backend shown draining or gone",
        &format!(
            "{c} === null || {c}.dataset.state === 'draining'",
            c = card(b.addr)
        ),
    );
    let status = call(admin, "GET /status HTTP/1.1\r\nHost: a\r\n\r\n").body;
    let b_entry = format!("\"address\":\"{}\"", b.addr);
    assert!(
        !status.contains(&b_entry) || status.contains("\"state\":\"draining\""),
        "the API did not drain {}: {status}",
        b.addr
    );
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();

    page.viewport(390, 844);
    page.assert_readable("dashboard on a phone");
    page.screenshot(&screenshot_path("proxy-dashboard-phone"));
}

#[test]
#[cfg_attr(
    not(netmod_chromium),
    ignore = "needs chromium (Debian's chromium package)"
)]
fn test_servers_status_page_shows_its_live_figures() {
    if !chromium() {
        return;
    }
    let dir = common::TempDir::new("status-page");
    let (_db, db) = common::spawn_db(&dir.path("status.db"));
    let (mut ts, http) = common::spawn_front(db, &["--ping-interval", "0.2"]);
    let frames = ts.listen_addrs()[0];
    common::wait_front_ready(http);
    // A frame client answering the server's pings (its `ping` calls wait, answering them).
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let pinger = std::thread::spawn(move || {
        let mut c = tools::client::FrameClient::connect(frames, common::WAIT).unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            c.ping(b"x").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (stop_load, load) = traffic(http, "/health");

    // curl and scripts get JSON at the same path.
    let json = call(http, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(json.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["db"]["circuit"], "closed", "{v}");

    let mut page = Browser::launch(1280, 800);
    page.open(&format!("http://{http}/status"));
    page.wait_for(
        "the db link's circuit closed",
        "document.getElementById('db-circuit')?.dataset.state === 'closed'",
    );
    page.wait_for(
        "HTTP answers per second",
        "parseFloat(document.getElementById('http-rps').textContent.replace(/,/g, '')) > 0",
    );
    page.wait_for(
        "ping round-trip percentiles",
        "document.getElementById('rtt-p99').textContent.endsWith('ms')",
    );
    page.wait_for(
        "a loop per engine thread",
        "document.querySelectorAll('#by-loop dt').length === 1",
    );
    page.wait_for(
        "sparklines with a few seconds of history",
        "document.querySelector('.spark polyline').getAttribute('points').split(' ').length >= 4",
    );
    page.assert_readable("status page at 1280x800");
    page.screenshot(&screenshot_path("test-server-status-1280x800"));
    page.viewport(390, 844);
    page.assert_readable("status page on a phone");
    page.screenshot(&screenshot_path("test-server-status-phone"));
    stop.store(true, Ordering::SeqCst);
    stop_load.store(true, Ordering::SeqCst);
    pinger.join().unwrap();
    load.join().unwrap();
}
