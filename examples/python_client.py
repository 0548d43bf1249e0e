#!/usr/bin/env python3
"""A netmod frame-protocol client in Python, written from protos/*.proto and docs/protocol.md
alone: the proof that the protocol is a public interface a stranger can implement.

Needs the standard library plus `protobuf` and `grpcio-tools` (`pip install protobuf
grpcio-tools`); the message types are generated from protos/ at run time, so nothing
generated is checked in. Against a running test-server:

    NETMOD_SECRET=... python3 examples/python_client.py --addr 127.0.0.1:7000 --user admin

It pings, logs in, runs a query and a batch, reads a result large enough to come back
gzip-compressed, answers the server's own pings while it waits, and checks that a request
whose gzip payload is broken gets BAD_COMPRESSION under its own message_id. It prints one line
per step and exits 0 when every step did what docs/protocol.md says, 1 otherwise.
"""

import argparse
import gzip
import importlib
import os
import socket
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = os.path.join(HERE, "..", "protos")


def load_types():
    """Compiles protos/*.proto with grpcio-tools' protoc into a temporary directory and
    imports the generated modules."""
    from grpc_tools import protoc  # noqa: PLC0415 - only needed here

    out = tempfile.mkdtemp(prefix="netmod-py-")
    files = sorted(f for f in os.listdir(PROTOS) if f.endswith(".proto"))
    status = protoc.main(["protoc", f"-I{PROTOS}", f"--python_out={out}", *files])
    if status != 0:
        sys.exit(f"protoc failed on {files}")
    sys.path.insert(0, out)
    return importlib.import_module("netmod_pb2"), importlib.import_module("data_pb2")


pb, data_pb = load_types()
MAX_FRAME = 1 << 20


class ServerError(Exception):
    """An ERROR answer: its code name, message and retryable flag."""

    def __init__(self, code, message, retryable):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retryable = code, message, retryable


class Client:
    """One connection: frames out, frames in, answers matched to requests by message_id."""

    def __init__(self, addr, timeout=10.0):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""
        self.next_id = 0
        self.pending = {}  # message_id -> Message that arrived before anyone asked for it
        self.server_pings = 0
        self.compressed = 0  # answers that arrived gzip-compressed

    def send(self, msg):
        body = msg.SerializeToString()
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _read_frame(self):
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if n > MAX_FRAME:
                    raise RuntimeError(f"frame of {n} bytes is over the maximum")
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                    return body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            self.buf += chunk

    def _receive(self):
        """The next message, payload inflated; server pings are answered on the way."""
        while True:
            msg = pb.Message()
            msg.ParseFromString(self._read_frame())
            if msg.compression == pb.GZIP:
                self.compressed += 1
                msg.data = gzip.decompress(msg.data)
                msg.compression = pb.NONE
            if msg.type == pb.REQUEST and msg.op == pb.PING:
                # The server's liveness ping: same id, payload echoed (docs/protocol.md).
                self.server_pings += 1
                self.send(pb.Message(type=pb.RESPONSE, op=pb.PING, message_id=msg.message_id,
                                     data=msg.data, priority=pb.CRITICAL))
                continue
            return msg

    def request(self, op, payload, compression=None, raw_data=None):
        """Sends a REQUEST and waits for the answer with its id (others are kept)."""
        self.next_id += 1
        mid = self.next_id
        msg = pb.Message(type=pb.REQUEST, op=op, message_id=mid,
                         timestamp=int(time.time() * 1e6),
                         data=raw_data if raw_data is not None else payload.SerializeToString())
        if compression is not None:
            msg.compression = compression
        self.send(msg)
        while mid not in self.pending:
            m = self._receive()
            if m.type == pb.NOTIFICATION:
                continue
            self.pending[m.message_id] = m
        answer = self.pending.pop(mid)
        if answer.type == pb.ERROR:
            err = pb.Error()
            err.ParseFromString(answer.data)
            raise ServerError(pb.ErrorCode.Name(err.code), err.message, err.retryable)
        return answer

    def ping(self, payload):
        answer = self.request(pb.PING, pb.Ping(payload=payload))
        pong = pb.Ping()
        pong.ParseFromString(answer.data)
        return pong.payload

    def login(self, user, secret):
        answer = self.request(pb.AUTH_LOGIN, pb.AuthLogin(user=user, secret=secret))
        token = pb.AuthToken()
        token.ParseFromString(answer.data)
        return token

    def data(self, req):
        answer = self.request(pb.DATA, req)
        resp = data_pb.DataResponse()
        resp.ParseFromString(answer.data)
        return resp


def stmt(sql, *args):
    s = data_pb.Statement(sql=sql)
    for a in args:
        v = s.args.add()
        if a is None:
            v.null = True
        elif isinstance(a, int):
            v.integer = a
        elif isinstance(a, float):
            v.real = a
        elif isinstance(a, bytes):
            v.blob = a
        else:
            v.text = a
    return s


def value(v):
    kind = v.WhichOneof("kind")
    return None if kind in (None, "null") else getattr(v, kind)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", default="127.0.0.1:7000", help="test-server's frame port")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--secret", default=os.environ.get("NETMOD_SECRET"),
                    help="the user's secret (default: $NETMOD_SECRET)")
    ap.add_argument("--wait-server-ping", type=float, default=0.0,
                    help="also wait up to this many seconds for a server ping and answer it")
    args = ap.parse_args()
    if not args.secret:
        sys.exit("give --secret or set NETMOD_SECRET")

    c = Client(args.addr)
    failures = []

    def check(what, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
        if not ok:
            failures.append(what)

    check("ping echoes its payload", c.ping(b"hello") == b"hello")

    try:
        c.data(data_pb.DataRequest(execute=stmt("SELECT 1")))
        check("data before login is refused", False)
    except ServerError as e:
        check("data before login is refused", e.code == "UNAUTHENTICATED", e.code)

    # Retryable errors (e.g. UNAVAILABLE while test-server's db link comes up) are retried,
    # as the table in docs/protocol.md allows.
    for attempt in range(100):
        try:
            token = c.login(args.user, args.secret)
            break
        except ServerError as e:
            if not e.retryable or attempt == 99:
                raise
            time.sleep(0.1)
    check("login gives a token", token.token.startswith("nm1.") and token.expires_at > time.time())

    r = c.data(data_pb.DataRequest(execute=stmt("SELECT ?1 + ?2 AS sum, ?3 AS t", 40, 2, "π")))
    row = [value(v) for v in r.result.rows[0].values]
    check("a query with bound arguments", row == [42, "π"] and r.result.columns[0].name == "sum",
          repr(row))

    table = f"py_notes_{os.getpid()}"
    batch = data_pb.DataRequest(batch=data_pb.Batch(steps=[
        data_pb.BatchStep(stmt=stmt(f"CREATE TABLE IF NOT EXISTS {table} "
                                    "(id INTEGER PRIMARY KEY, body TEXT)")),
        data_pb.BatchStep(stmt=stmt(f"INSERT INTO {table} (id, body) VALUES (?1, ?2)", 1, "one")),
        # may_fail: a duplicate key is recorded as this step's outcome, not a rollback.
        data_pb.BatchStep(stmt=stmt(f"INSERT INTO {table} (id, body) VALUES (?1, ?2)", 1, "dup"),
                          may_fail=True),
        # Runs only if step 2 (0-based) failed.
        data_pb.BatchStep(stmt=stmt(f"INSERT INTO {table} (id, body) VALUES (?1, ?2)", 2, "two"),
                          condition=data_pb.BatchCondition(error=2)),
    ]))
    b = c.data(batch).batch
    kinds = [s.WhichOneof("outcome") for s in b.steps]
    check("a batch with a condition on an earlier step", kinds == ["ok", "ok", "error", "ok"],
          repr(kinds))
    rows = c.data(data_pb.DataRequest(execute=stmt(f"SELECT body FROM {table} ORDER BY id")))
    check("the batch's rows are there", [value(r.values[0]) for r in rows.result.rows]
          == ["one", "two"])

    before = c.compressed
    big = c.data(data_pb.DataRequest(execute=stmt("SELECT hex(zeroblob(20000))")))
    check("a result over 10 KiB arrives gzip-compressed and inflates",
          value(big.result.rows[0].values[0]) == "00" * 20000 and c.compressed > before)

    try:
        c.request(pb.DATA, None, compression=pb.GZIP, raw_data=b"this is not gzip")
        check("a broken gzip payload is refused", False)
    except ServerError as e:
        # request() matched the ERROR by this request's own message_id.
        check("a broken gzip payload gets BAD_COMPRESSION under its own id",
              e.code == "BAD_COMPRESSION" and not e.retryable, e.code)

    try:
        c.data(data_pb.DataRequest(execute=stmt('SELECT * FROM "_netmod_users"')))
        check("the server's own tables are out of reach", False)
    except ServerError as e:
        check("the server's own tables are out of reach", e.code == "FORBIDDEN", e.code)

    if args.wait_server_ping > 0:
        deadline = time.time() + args.wait_server_ping
        while c.server_pings == 0 and time.time() < deadline:
            c.ping(b"waiting")  # reading answers is what answers the server's pings
            time.sleep(0.05)
        check("the server's ping was answered", c.server_pings > 0, f"{c.server_pings} ping(s)")
        check("still connected after answering it", c.ping(b"after") == b"after")

    c.data(data_pb.DataRequest(execute=stmt(f"DROP TABLE {table}")))
    if failures:
        print(f"{len(failures)} step(s) failed: {', '.join(failures)}")
        return 1
    print("python client: every step as documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
