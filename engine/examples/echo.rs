//! Echo server: every byte a peer sends comes back.
//!
//! ```text
//! cargo run -p netmod-engine --example echo -- 127.0.0.1:7007
//! ```

use engine::{Config, ConnId, Context, Handler, Server};

struct Echo;

impl Handler for Echo {
    type Message = ();
    type Timer = ();

    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        // Queued, never blocking; a peer that stops reading is paused, then closed.
        let _ = ctx.send(conn, data);
        data.len()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7007".into());
    let server = Server::new(Config::default())?.listen(addr.parse()?)?;
    println!("echo listening on {}", server.local_addrs()[0]);
    engine::signal::shutdown_on_signals(server.handle())?; // Ctrl-C drains and stops
    server.run(|_loop_id| Echo)?;
    Ok(())
}
