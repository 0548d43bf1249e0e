//! A TCP relay that can play a network partition: bytes stop passing both ways and nothing is
//! closed (no FIN, no RST: packets just vanish), as when a switch port dies.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Relays connections made to [`Relay::addr`] to `to`, each on two threads.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Relays to `to` from an ephemeral loopback port.
    pub fn start(to: SocketAddr) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (c, o) = (Arc::clone(&cut), Arc::clone(&open));
        let (r, a) = (Arc::clone(&refuse), Arc::clone(&accepted));
        std::thread::spawn(move || {
            for inbound in l.incoming() {
                let Ok(inbound) = inbound else { return };
                a.fetch_add(1, Ordering::SeqCst);
                if r.load(Ordering::SeqCst) {
                    continue; // closed at once, as a server that is not there
                }
                let Ok(outbound) = TcpStream::connect(to) else {
                    continue;
                };
                let (Ok(i), Ok(o2)) = (inbound.try_clone(), outbound.try_clone()) else {
                    continue;
                };
                if let (Ok(i), Ok(o3)) = (inbound.try_clone(), outbound.try_clone()) {
                    o.lock().unwrap().extend([i, o3]);
                }
                for (mut from, mut into) in [(i, o2), (outbound, inbound)] {
                    let cut = Arc::clone(&c);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => {
                                    let _ = into.shutdown(Shutdown::Write);
                                    return;
                                }
                                Ok(n) => n,
                            };
                            // Cut: the bytes vanish, the connection stays open.
                            if !cut.load(Ordering::SeqCst) && into.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Relay {
            addr,
            cut,
            refuse,
            accepted,
            open,
        }
    }

    /// New connections are closed as soon as they are accepted (`true`): a connect fails at
    /// once, as to a host whose server is gone.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Bytes stop passing (`true`) or pass again (`false`). Connections made meanwhile are
    /// accepted, and what is sent on them vanishes too.
    pub fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }

    /// Closes every connection relayed so far, both ways (what a peer's restart does to them).
    pub fn break_connections(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
