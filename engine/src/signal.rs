//! SIGTERM / SIGINT → graceful shutdown; a second signal stops at once.

use std::io;
use std::thread;

use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::server::ServerHandle;

/// Starts a thread that turns the first SIGTERM or SIGINT into [`ServerHandle::shutdown`] and a
/// second one into [`ServerHandle::stop`].
///
/// # Errors
///
/// When the signal handlers cannot be installed or the thread cannot be started.
pub fn shutdown_on_signals(handle: ServerHandle) -> io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = false;
            for sig in signals.forever() {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if seen {
                    warn!("Received {name} again: stopping now");
                    handle.stop();
                } else {
                    info!("Received {name}: shutting down gracefully");
                    handle.shutdown();
                    seen = true;
                }
            }
        })?;
    Ok(())
}
