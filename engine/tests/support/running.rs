//! A server on its own thread for the engine's tests (and the workspace's, which include this
//! file), and waiting on events instead of sleeping.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::{Handler, Server, ServerHandle};

/// How long any single wait in a test may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running on its own thread, stopped when dropped; a panic or an error of its loops
/// fails the test.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Takes charge of a server already running on `thread`.
    pub fn adopt(
        addr: SocketAddr,
        handle: ServerHandle,
        thread: JoinHandle<std::io::Result<()>>,
    ) -> Running {
        Running {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    /// Waits for `run` to return (after a shutdown) and gives its result.
    pub fn join(mut self) -> std::io::Result<()> {
        let t = self.thread.take().expect("joined once");
        t.join().expect("server thread panicked")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.stop();
            let result = t.join();
            if std::thread::panicking() {
                return;
            }
            match result {
                Err(_) => panic!("the server's loop thread panicked"),
                Ok(Err(e)) => panic!("the server stopped with an error: {e}"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// Starts `factory`'s handler on 127.0.0.1:0 with `cfg`.
pub fn start<H, F>(cfg: engine::Config, factory: F) -> Running
where
    H: Handler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    // As the server binaries do: tests with thousands of sockets need the hard limit.
    let _ = engine::raise_open_file_limit();
    let server = Server::new(cfg)
        .unwrap()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .unwrap();
    run(server, factory)
}

/// Runs `server` on a thread of its own until the `Running` is dropped.
pub fn run<H, F>(server: Server<H>, factory: F) -> Running
where
    H: Handler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run(factory));
    Running {
        addr,
        handle,
        thread: Some(thread),
    }
}

/// Polls `cond` until it holds, failing the test after [`WAIT`].
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
