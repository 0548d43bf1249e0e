//! Raw RESP exchanges with the replies Redis 7 documents (and `redis-server` 7.0 sends, byte
//! for byte): used by the engine's tests of `examples/mini_redis.rs` and by the workspace's
//! comparison with a real `redis-server`.

/// One exchange: what a client sends on a fresh connection, and the whole answer. Cases that
/// end in a protocol error end with the server closing the connection; the others are followed
/// by `QUIT` (whose `+OK` is not part of `reply`).
pub struct Case {
    pub name: &'static str,
    pub send: &'static [u8],
    pub reply: &'static [u8],
    /// The server closes the connection after the reply (a protocol error).
    pub closes: bool,
}

const fn case(name: &'static str, send: &'static [u8], reply: &'static [u8]) -> Case {
    Case {
        name,
        send,
        reply,
        closes: false,
    }
}

const fn closing(name: &'static str, send: &'static [u8], reply: &'static [u8]) -> Case {
    Case {
        name,
        send,
        reply,
        closes: true,
    }
}

/// Keys are the case's own (`t:<case>:…`), so the cases may run in any order on one server.
pub const CASES: &[Case] = &[
    case("inline ping", b"PING\r\n", b"+PONG\r\n"),
    case("inline ping, LF only", b"ping\n", b"+PONG\r\n"),
    case("multibulk ping", b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
    case(
        "ping with a message",
        b"*2\r\n$4\r\nPING\r\n$5\r\nhello\r\n",
        b"$5\r\nhello\r\n",
    ),
    case(
        "ping with two",
        b"*3\r\n$4\r\nping\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    ),
    case("echo empty", b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", b"$0\r\n\r\n"),
    case(
        "echo binary",
        b"*2\r\n$4\r\necho\r\n$4\r\n\x00\r\n\xff\r\n",
        b"$4\r\n\x00\r\n\xff\r\n",
    ),
    case(
        "echo alone",
        b"*1\r\n$4\r\necho\r\n",
        b"-ERR wrong number of arguments for 'echo' command\r\n",
    ),
    case("get missing", b"GET t:get:none\r\n", b"$-1\r\n"),
    case(
        "set then get",
        b"SET t:set:k v1\r\nGET t:set:k\r\n",
        b"+OK\r\n$2\r\nv1\r\n",
    ),
    case(
        "set nx, xx, get",
        b"SET t:nx:k a\r\nSET t:nx:k b NX\r\nSET t:nx:none b XX\r\nSET t:nx:k c GET\r\nGET t:nx:k\r\nSET t:nx:k d NX GET\r\n",
        b"+OK\r\n$-1\r\n$-1\r\n$1\r\na\r\n$1\r\nc\r\n$1\r\nc\r\n",
    ),
    case(
        "set options refused",
        b"SET t:opt:k v NX XX\r\nSET t:opt:k v EX 10 PX 100\r\nSET t:opt:k v FOO\r\nSET t:opt:k v EX\r\nSET t:opt:k v KEEPTTL EX 5\r\n",
        b"-ERR syntax error\r\n-ERR syntax error\r\n-ERR syntax error\r\n-ERR syntax error\r\n-ERR syntax error\r\n",
    ),
    case(
        "set expiry checked",
        b"SET t:ex:k v EX 0\r\nSET t:ex:k v EX x\r\nSET t:ex:k v PX -5\r\nSET t:ex:k v EX 10 EX 20\r\nSET t:ex:k w KEEPTTL\r\nGET t:ex:k\r\n",
        b"-ERR invalid expire time in 'set' command\r\n-ERR value is not an integer or out of range\r\n-ERR invalid expire time in 'set' command\r\n+OK\r\n+OK\r\n$1\r\nw\r\n",
    ),
    case(
        "set gone at its time",
        b"SET t:pxat:k v PXAT 1\r\nGET t:pxat:k\r\n",
        b"+OK\r\n$-1\r\n",
    ),
    case(
        "set arity",
        b"*2\r\n$3\r\nSET\r\n$1\r\nk\r\n",
        b"-ERR wrong number of arguments for 'set' command\r\n",
    ),
    case(
        "del",
        b"SET t:del:a 1\r\nSET t:del:b 2\r\nDEL t:del:a t:del:a t:del:b t:del:c\r\nDEL\r\n",
        b"+OK\r\n+OK\r\n:2\r\n-ERR wrong number of arguments for 'del' command\r\n",
    ),
    case(
        "incr",
        b"INCR t:incr:n\r\nINCR t:incr:n\r\nSET t:incr:s abc\r\nINCR t:incr:s\r\nSET t:incr:z 007\r\nINCR t:incr:z\r\nSET t:incr:max 9223372036854775807\r\nINCR t:incr:max\r\nSET t:incr:neg -5\r\nINCR t:incr:neg\r\n",
        b":1\r\n:2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+OK\r\n-ERR increment or decrement would overflow\r\n+OK\r\n:-4\r\n",
    ),
    case(
        "unknown command",
        b"FOO a b\r\n*1\r\n$0\r\n\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n-ERR unknown command '', with args beginning with: \r\n",
    ),
    case(
        "unknown command, long arguments cut at 128 bytes",
        b"nope 0123456789012345678901234567890123456789012345678901234567890123456789 0123456789012345678901234567890123456789012345678901234567890123456789 x\r\n",
        b"-ERR unknown command 'nope', with args beginning with: '0123456789012345678901234567890123456789012345678901234567890123456789' '0123456789012345678901234567890123456789012345678901234' \r\n",
    ),
    case(
        "inline quotes and escapes",
        b"SET \"t:q:a b\" \"c\\x41\\n\"\r\nGET 't:q:a b'\r\n",
        b"+OK\r\n$3\r\ncA\n\r\n",
    ),
    case(
        "empty lines and zero-length multibulk are skipped",
        b"\r\n\n*0\r\n*-1\r\nPING\r\n",
        b"+PONG\r\n",
    ),
    case(
        "pipelined in one write",
        b"*3\r\n$3\r\nSET\r\n$6\r\nt:pp:k\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$6\r\nt:pp:k\r\nPING\r\n*2\r\n$3\r\nGET\r\n$6\r\nt:pp:k\r\n",
        b"+OK\r\n:2\r\n+PONG\r\n$1\r\n2\r\n",
    ),
    closing(
        "bad multibulk length",
        b"*x\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    ),
    closing(
        "not a bulk",
        b"*1\r\nfoo\r\n",
        b"-ERR Protocol error: expected '$', got 'f'\r\n",
    ),
    closing(
        "bad bulk length",
        b"*1\r\n$-5\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    ),
    closing(
        "unbalanced quotes",
        b"GET \"abc\r\n",
        b"-ERR Protocol error: unbalanced quotes in request\r\n",
    ),
    closing(
        "a closing quote glued to a word",
        b"GET \"a\"b\r\n",
        b"-ERR Protocol error: unbalanced quotes in request\r\n",
    ),
    closing(
        "commands before a protocol error are answered, nothing after",
        b"PING\r\n*x\r\nPING\r\n",
        b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
    ),
    closing("quit", b"QUIT\r\nPING\r\n", b"+OK\r\n"),
];
