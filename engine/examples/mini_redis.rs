//! A small Redis: RESP2 `PING`, `ECHO`, `GET`, `SET` (with `NX`, `XX`, `GET`, `EX`, `PX`,
//! `EXAT`, `PXAT`, `KEEPTTL`), `DEL`, `INCR`, `QUIT`, on the engine — as tokio's mini-redis is for
//! tokio. Pipelining, commands split over any number of reads, inline commands (what `telnet`
//! sends) and Redis 7's exact error replies, so that `redis-cli` and `redis-benchmark` work
//! against it and its bytes match `redis-server`'s.
//!
//! ```text
//! cargo run --release -p netmod-engine --example mini_redis -- --listen 127.0.0.1:6380 --threads 2
//! redis-cli -p 6380 set greeting hello && redis-cli -p 6380 get greeting
//! ```
//!
//! How it is built:
//!
//! - One [`Handler`] per loop; the keys live in [`Store`], shared by every loop (`Arc`, the
//!   pattern for state several loops share): sharded maps behind mutexes, each held only for one
//!   command, never across a send.
//! - `on_data` answers every whole command in the bytes it is offered and returns how many it
//!   used; an incomplete command's bytes are offered again, with more, on the next read. The
//!   replies of one read are queued together and leave in one write at the end of the pass.
//! - A protocol error is answered with Redis' message, then the connection is closed once the
//!   answer is written (`Context::close`), as Redis does.
//! - Keys with a time to live expire when read (Redis also samples keys in the background; this
//!   example does not, so an expired key nobody reads keeps its memory).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::{Config, ConnId, Context, Handler, Server};

/// Longest inline command, and longest `*`/`$` header line (Redis' `PROTO_INLINE_MAX_SIZE`).
const INLINE_MAX: usize = 64 * 1024;
/// Largest bulk string (Redis' default `proto-max-bulk-len`, 512 MB, is more than this example
/// buffers: the engine's `max_message_size` below bounds what one connection holds).
const BULK_MAX: i64 = 512 * 1024 * 1024;
/// Bytes a connection may have buffered unanswered (one command's size, at most).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Shards of the key space.
const SHARDS: usize = 64;

/// A value and when it expires (milliseconds since the epoch), if it does.
struct Entry {
    value: Vec<u8>,
    expires_ms: Option<u64>,
}

/// The keys, shared by every loop.
struct Store {
    shards: Vec<Mutex<HashMap<Vec<u8>, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Store {
    fn new() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The shard of `key`, locked (a panic elsewhere while it was held leaves the map usable).
    fn shard(&self, key: &[u8]) -> MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The live entry of `key` in its locked shard: an expired one is removed first.
fn live<'a>(map: &'a mut HashMap<Vec<u8>, Entry>, key: &[u8]) -> Option<&'a mut Entry> {
    let now = now_ms();
    if map
        .get(key)
        .is_some_and(|e| e.expires_ms.is_some_and(|t| t <= now))
    {
        map.remove(key);
    }
    map.get_mut(key)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// One parsed request, or what stops parsing.
enum Parsed<'a> {
    /// A command's arguments and the bytes it took (no arguments: an empty line or `*0`, skipped).
    Command(Vec<Cow<'a, [u8]>>, usize),
    /// More bytes are needed: this many in all from the command's start, when a bulk header
    /// has said so (the engine then waits for them before calling again).
    Incomplete(Option<usize>),
    /// Redis' message for it (after `-ERR `); the connection closes once it is answered.
    ProtocolError(Cow<'static, str>),
}

/// Redis' `string2ll`: an optional `-`, digits, no leading zeros, no `+`, no spaces, fits i64.
fn parse_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    match digits {
        [] => None,
        [b'0'] if digits.len() == s.len() => Some(0),
        [b'1'..=b'9', rest @ ..] if rest.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(s).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// Redis' header lines: up to the first `\r`, which must have a byte after it (taken as the
/// `\n` without looking). `None`: not all here yet.
fn header(buf: &[u8]) -> Option<&[u8]> {
    let cr = buf.iter().position(|&b| b == b'\r')?;
    (cr + 2 <= buf.len()).then(|| &buf[..cr])
}

/// Parses one request from the start of `buf`: a multibulk (`*N\r\n$len\r\n…`) or an inline
/// command (a line of words, as `telnet` sends), exactly as Redis 7's `processMultibulkBuffer`
/// and `processInlineBuffer` do, errors word for word.
fn parse(buf: &[u8]) -> Parsed<'_> {
    if buf.first() == Some(&b'*') {
        parse_multibulk(buf)
    } else {
        parse_inline(buf)
    }
}

fn parse_multibulk(buf: &[u8]) -> Parsed<'_> {
    let Some(head) = header(buf) else {
        return if buf.len() > INLINE_MAX {
            Parsed::ProtocolError("Protocol error: too big mbulk count string".into())
        } else {
            Parsed::Incomplete(None)
        };
    };
    let count = match parse_int(&head[1..]) {
        Some(n) if n <= i64::from(i32::MAX) => n,
        _ => return Parsed::ProtocolError("Protocol error: invalid multibulk length".into()),
    };
    let mut at = head.len() + 2;
    if count <= 0 {
        return Parsed::Command(Vec::new(), at);
    }
    let mut args = Vec::with_capacity(count.min(64) as usize);
    for _ in 0..count {
        let rest = &buf[at..];
        let Some(head) = header(rest) else {
            return if rest.len() > INLINE_MAX {
                Parsed::ProtocolError("Protocol error: too big bulk count string".into())
            } else {
                Parsed::Incomplete(None)
            };
        };
        if head.first() != Some(&b'$') {
            let got = head.first().map_or('\r', |&b| b as char);
            return Parsed::ProtocolError(
                format!("Protocol error: expected '$', got '{got}'").into(),
            );
        }
        let len = match parse_int(&head[1..]) {
            Some(n) if (0..=BULK_MAX).contains(&n) => n as usize,
            _ => return Parsed::ProtocolError("Protocol error: invalid bulk length".into()),
        };
        let start = at + head.len() + 2;
        if buf.len() < start + len + 2 {
            return Parsed::Incomplete(Some(start + len + 2));
        }
        // Like Redis, the two bytes after the bulk are taken as its CRLF without a look.
        args.push(Cow::Borrowed(&buf[start..start + len]));
        at = start + len + 2;
    }
    Parsed::Command(args, at)
}

fn parse_inline(buf: &[u8]) -> Parsed<'_> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > INLINE_MAX {
            Parsed::ProtocolError("Protocol error: too big inline request".into())
        } else {
            Parsed::Incomplete(None)
        };
    };
    let text = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    match split_args(text) {
        Some(args) => Parsed::Command(args, end + 1),
        None => Parsed::ProtocolError("Protocol error: unbalanced quotes in request".into()),
    }
}

/// C's `isspace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Redis' `sdssplitargs`: words separated by blanks; `"…"` with `\n \r \t \b \a \xHH` and
/// `\<any>` escapes, `'…'` with `\'`; a closing quote must be followed by a blank or the end.
/// `None`: unbalanced quotes.
fn split_args(line: &[u8]) -> Option<Vec<Cow<'_, [u8]>>> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let at = |i: usize| line.get(i).copied();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            let c = at(i);
            if in_dq {
                match (c, at(i + 1)) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'x'))
                        if at(i + 2).and_then(hex).is_some()
                            && at(i + 3).and_then(hex).is_some() =>
                    {
                        let (h, l) = (line[i + 2], line[i + 3]);
                        arg.push(hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0));
                        i += 3;
                    }
                    (Some(b'\\'), Some(e)) => {
                        arg.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 1;
                    }
                    (Some(b'"'), next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (Some(c), _) => arg.push(c),
                }
            } else if in_sq {
                match (c, at(i + 1)) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'\'')) => {
                        arg.push(b'\'');
                        i += 1;
                    }
                    (Some(b'\''), next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (Some(c), _) => arg.push(c),
                }
            } else {
                match c {
                    // Outside quotes only these end a word (not \v or \f: C's switch).
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(c) => arg.push(c),
                }
            }
            i += 1;
        }
        args.push(Cow::Owned(arg));
    }
}

/// Replies in RESP2, appended to the connection's output of this pass.
mod reply {
    pub fn simple(out: &mut Vec<u8>, s: &str) {
        out.push(b'+');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// `-ERR …`; Redis turns CR and LF in an error into spaces, so the reply stays one line.
    pub fn error(out: &mut Vec<u8>, message: &[u8]) {
        out.extend_from_slice(b"-ERR ");
        out.extend(
            message
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }

    pub fn int(out: &mut Vec<u8>, n: i64) {
        out.push(b':');
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
        out.push(b'$');
        out.extend_from_slice(b.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }

    pub fn nil(out: &mut Vec<u8>) {
        out.extend_from_slice(b"$-1\r\n");
    }
}

const NOT_INTEGER: &[u8] = b"value is not an integer or out of range";
const SYNTAX: &[u8] = b"syntax error";

/// What a command asks of its connection besides its reply.
enum After {
    KeepOpen,
    Close,
}

/// The commands, by name (any case) with Redis' arity: positive exact, negative at least.
const COMMANDS: &[(&str, i64)] = &[
    ("ping", -1),
    ("echo", 2),
    ("get", 2),
    ("set", -3),
    ("del", -2),
    ("incr", 2),
    ("quit", -1),
];

/// Runs one command, its reply appended to `out`.
fn execute(store: &Store, args: &[Cow<'_, [u8]>], out: &mut Vec<u8>) -> After {
    let Some(&(name, arity)) = COMMANDS
        .iter()
        .find(|(name, _)| args[0].eq_ignore_ascii_case(name.as_bytes()))
    else {
        unknown_command(args, out);
        return After::KeepOpen;
    };
    // Redis 7 answers QUIT before any check of its arguments.
    if name == "quit" {
        reply::simple(out, "OK");
        return After::Close;
    }
    let n = args.len() as i64;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) || (name == "ping" && n > 2) {
        let message = format!("wrong number of arguments for '{name}' command");
        reply::error(out, message.as_bytes());
        return After::KeepOpen;
    }
    let key = args.get(1).map_or(&[][..], |k| &k[..]);
    match name {
        "ping" if n == 1 => reply::simple(out, "PONG"),
        "ping" | "echo" => reply::bulk(out, key),
        "get" => match live(&mut store.shard(key), key) {
            Some(e) => reply::bulk(out, &e.value),
            None => reply::nil(out),
        },
        "set" => set(store, args, out),
        "del" => {
            let mut deleted = 0;
            for key in &args[1..] {
                let mut map = store.shard(key);
                if live(&mut map, key).is_some() {
                    map.remove(&key[..]);
                    deleted += 1;
                }
            }
            reply::int(out, deleted);
        }
        "incr" => incr(store, key, out),
        _ => unreachable!("every command of COMMANDS is handled"),
    }
    After::KeepOpen
}

/// Redis 7's reply to a command it does not have: its name as sent (up to 128 bytes) and its
/// first arguments, each quoted and followed by a space, while the list is under 128 bytes.
fn unknown_command(args: &[Cow<'_, [u8]>], out: &mut Vec<u8>) {
    let mut message = b"unknown command '".to_vec();
    message.extend_from_slice(&args[0][..args[0].len().min(128)]);
    message.extend_from_slice(b"', with args beginning with: ");
    let mut listed = 0;
    for a in &args[1..] {
        if listed >= 128 {
            break;
        }
        let part = &a[..a.len().min(128 - listed)];
        message.push(b'\'');
        message.extend_from_slice(part);
        message.extend_from_slice(b"' ");
        listed += part.len() + 3;
    }
    reply::error(out, &message);
}

/// `INCR key`: the value as a 64-bit integer plus one; the time to live stays, as with Redis.
fn incr(store: &Store, key: &[u8], out: &mut Vec<u8>) {
    let mut map = store.shard(key);
    let next = match live(&mut map, key) {
        None => Ok(1),
        Some(e) => match parse_int(&e.value) {
            None => Err(NOT_INTEGER),
            Some(v) => v
                .checked_add(1)
                .ok_or(&b"increment or decrement would overflow"[..]),
        },
    };
    match next {
        Ok(v) => {
            let value = v.to_string().into_bytes();
            match map.get_mut(key) {
                Some(e) => e.value = value,
                None => {
                    map.insert(
                        key.to_vec(),
                        Entry {
                            value,
                            expires_ms: None,
                        },
                    );
                }
            }
            reply::int(out, v);
        }
        Err(e) => reply::error(out, e),
    }
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`, with Redis 7's
/// rules: an option may repeat, conflicting ones are a syntax error, the expiry is checked
/// before anything is written, and with `GET` the answer is the old value whatever happens.
fn set(store: &Store, args: &[Cow<'_, [u8]>], out: &mut Vec<u8>) {
    let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
    let mut expire: Option<(&'static str, &[u8])> = None; // (unit, value)
    let mut i = 3;
    while i < args.len() {
        let opt = &args[i][..];
        let next = args.get(i + 1);
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        let unit = ["EX", "PX", "EXAT", "PXAT"].into_iter().find(|u| is(u));
        if is("NX") && !xx {
            nx = true;
        } else if is("XX") && !nx {
            xx = true;
        } else if is("GET") {
            get = true;
        } else if is("KEEPTTL") && expire.is_none() {
            keep_ttl = true;
        } else if let (Some(unit), Some(value), false) = (unit, next, keep_ttl) {
            if expire.is_some_and(|(u, _)| u != unit) {
                return reply::error(out, SYNTAX);
            }
            expire = Some((unit, &value[..]));
            i += 1;
        } else {
            return reply::error(out, SYNTAX);
        }
        i += 1;
    }
    let expires_ms = match expire {
        None => None,
        Some((unit, value)) => {
            let Some(v) = parse_int(value) else {
                return reply::error(out, NOT_INTEGER);
            };
            let seconds = unit == "EX" || unit == "EXAT";
            let ms = if seconds {
                v.checked_mul(1000)
            } else {
                Some(v)
            };
            let at = match ms {
                Some(ms) if v > 0 => match unit {
                    "EX" | "PX" => ms.checked_add(now_ms() as i64),
                    _ => Some(ms),
                },
                _ => None,
            };
            match at {
                Some(at) => Some(at as u64),
                None => return reply::error(out, b"invalid expire time in 'set' command"),
            }
        }
    };
    let key = &args[1][..];
    let mut map = store.shard(key);
    let old = live(&mut map, key).map(|e| (e.value.clone(), e.expires_ms));
    let answer_old = |out: &mut Vec<u8>| match &old {
        Some((v, _)) => reply::bulk(out, v),
        None => reply::nil(out),
    };
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return if get {
            answer_old(out)
        } else {
            reply::nil(out)
        };
    }
    let ttl = if keep_ttl {
        old.as_ref().and_then(|(_, t)| *t)
    } else {
        expires_ms
    };
    map.insert(
        key.to_vec(),
        Entry {
            value: args[2].to_vec(),
            expires_ms: ttl,
        },
    );
    if get {
        answer_old(out);
    } else {
        reply::simple(out, "OK");
    }
}

/// One loop's side: the shared store and a scratch buffer for a read's replies.
pub struct MiniRedis {
    store: Arc<Store>,
    out: Vec<u8>,
}

impl Handler for MiniRedis {
    type Message = ();
    type Timer = ();

    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        self.out.clear();
        let mut used = 0;
        let mut close = false;
        while used < data.len() && !close {
            match parse(&data[used..]) {
                Parsed::Command(args, n) => {
                    used += n;
                    if !args.is_empty() {
                        close = matches!(execute(&self.store, &args, &mut self.out), After::Close);
                    }
                }
                Parsed::Incomplete(need) => {
                    // A large value arriving in pieces is parsed again only once it is whole.
                    if let Some(n) = need {
                        ctx.wait_for(conn, n);
                    }
                    break;
                }
                Parsed::ProtocolError(message) => {
                    reply::error(&mut self.out, message.as_bytes());
                    used = data.len();
                    close = true;
                }
            }
        }
        if !self.out.is_empty() {
            let _ = ctx.send(conn, &self.out);
        }
        if close {
            ctx.close(conn); // once what is queued is written
        }
        used
    }

    fn on_oversize(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, buffered: usize) {
        // Redis closes such a client without a reply and logs it; so does this.
        eprintln!(
            "closing client {:?} that reached max query buffer length ({buffered} bytes)",
            ctx.peer_addr(conn)
        );
    }
}

/// Starts mini_redis on `listen` with `threads` loops: the server, ready to [`Server::run`] with
/// [`loops`]. (Split from `main` so that the engine's tests run it in-process.)
pub fn server(listen: std::net::SocketAddr, threads: usize) -> std::io::Result<Server<MiniRedis>> {
    let config = Config::builder()
        .threads(threads.max(1))
        .max_message_size(MAX_MESSAGE)
        .build()
        .map_err(std::io::Error::other)?;
    Server::new(config)?.listen(listen)
}

/// The factory of every loop's handler, all sharing one store.
pub fn loops() -> impl Fn(usize) -> MiniRedis + Send + Sync + 'static {
    let store = Arc::new(Store::new());
    move |_loop_id| MiniRedis {
        store: Arc::clone(&store),
        out: Vec::with_capacity(4096),
    }
}

/// `--listen IP:PORT` (default 127.0.0.1:6380), `--threads N` (default 1).
#[allow(dead_code)] // as `main`
fn args() -> Result<(std::net::SocketAddr, usize), String> {
    let mut listen = std::net::SocketAddr::from(([127, 0, 0, 1], 6380));
    let mut threads = 1;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?
            }
            "--threads" => {
                threads = value
                    .parse()
                    .map_err(|e| format!("--threads {value}: {e}"))?
            }
            _ => {
                return Err(format!(
                    "unknown flag {flag} (--listen IP:PORT, --threads N)"
                ))
            }
        }
    }
    Ok((listen, threads))
}

#[allow(dead_code)] // unused where the engine's tests include this file as a module
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (listen, threads) = args()?;
    let server = server(listen, threads)?;
    println!("mini_redis listening on {}", server.local_addrs()[0]);
    engine::signal::shutdown_on_signals(server.handle())?; // Ctrl-C drains and stops
    server.run(loops())?;
    Ok(())
}
