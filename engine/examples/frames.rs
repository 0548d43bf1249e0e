//! Length-prefixed request/response: each request (a 4-byte big-endian length and a body) is
//! answered with its body upper-cased by a worker thread, which hands the result back to the
//! loop through its waker; a timer prints the request rate every second.
//!
//! ```text
//! cargo run -p netmod-engine --example frames -- 127.0.0.1:7008
//! ```
//!
//! The shape of any server whose work may block (a database, a disk, a slow computation): the
//! loop only parses and writes; the work runs elsewhere and comes back as a message.

use std::sync::mpsc;
use std::time::Duration;

use engine::{Config, ConnId, Context, Handler, LoopHandle, Server};

/// Largest request body accepted; checked before anything is allocated for it.
const MAX_BODY: usize = 64 * 1024;

/// The request at the front of `data`: its body and the bytes it takes, `Ok(None)` until all of
/// it is here, `Err(length)` for a length over [`MAX_BODY`] (refused before anything is kept).
fn next_request(data: &[u8]) -> Result<Option<(&[u8], usize)>, usize> {
    let Some(head) = data.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*head) as usize;
    if len > MAX_BODY {
        return Err(len);
    }
    Ok(data.get(4..4 + len).map(|body| (body, 4 + len)))
}

/// A request on its way to the worker.
struct Job {
    conn: ConnId,
    body: Vec<u8>,
}

/// What the worker sends back to the loop.
struct Done {
    conn: ConnId,
    reply: Vec<u8>,
}

struct Frames {
    jobs: Option<mpsc::Sender<Job>>,
    answered: u64,
}

impl Handler for Frames {
    type Message = Done;
    type Timer = ();

    fn on_start(&mut self, ctx: &mut Context<'_, Done>) {
        let (tx, rx) = mpsc::channel::<Job>();
        let back: LoopHandle<Done> = ctx.loop_handle();
        std::thread::spawn(move || {
            for job in rx {
                let reply = job.body.to_ascii_uppercase(); // the "slow" work
                if back
                    .post(Done {
                        conn: job.conn,
                        reply,
                    })
                    .is_err()
                {
                    return; // the loop has ended
                }
            }
        });
        self.jobs = Some(tx);
        ctx.set_timer(Duration::from_secs(1), ());
    }

    fn on_data(&mut self, ctx: &mut Context<'_, Done>, conn: ConnId, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            match next_request(&data[used..]) {
                Ok(Some((body, consumed))) => {
                    used += consumed;
                    if let Some(jobs) = &self.jobs {
                        let _ = jobs.send(Job {
                            conn,
                            body: body.to_vec(),
                        });
                    }
                }
                Ok(None) => return used, // the rest comes later
                Err(len) => {
                    eprintln!("closing {conn:?}: a request of {len} bytes (over {MAX_BODY})");
                    ctx.close(conn);
                    return data.len();
                }
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Done>, done: Done) {
        let len = u32::try_from(done.reply.len()).unwrap_or(u32::MAX);
        // Length and body straight into the connection's output, no buffer of our own. The
        // peer may have gone meanwhile: sending to a closed ConnId is refused, not a crash.
        let sent = ctx.send_with(
            done.conn,
            engine::Priority::Normal,
            4 + done.reply.len(),
            |out| {
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&done.reply);
            },
        );
        if sent.is_ok() {
            self.answered += 1;
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Done>, (): ()) {
        if self.answered > 0 {
            println!(
                "loop {}: {} requests in the last second",
                ctx.loop_id(),
                self.answered
            );
            self.answered = 0;
        }
        ctx.set_timer(Duration::from_secs(1), ()); // periodic: re-arm
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7008".into());
    let config = Config::builder().max_message_size(4 + MAX_BODY).build()?;
    let server = Server::new(config)?.listen(addr.parse()?)?;
    println!("frames listening on {}", server.local_addrs()[0]);
    engine::signal::shutdown_on_signals(server.handle())?;
    server.run(|_| Frames {
        jobs: None,
        answered: 0,
    })?;
    Ok(())
}
