"""Tiny TCP programs the harness self-tests run inside simulated hosts (stdlib only).

``python tcptool.py serve PORT [--host ADDR]``
    Echo server: prints ``listening on PORT``; for each connection (a thread
    each) sends back every byte received, and after the peer's EOF shuts down
    its own side and closes.

``python tcptool.py client HOST PORT [--pings N] [--bytes N] [--timeout S]``
    Connects, measures N one-byte round trips, then sends N pseudo-random
    bytes while reading the echo, half-closes, reads to EOF and prints one
    JSON line: ``{"rtt_min": s, "sent_sha": hex, "echo_sha": hex,
    "echoed": n, "eof": true}``. Every socket wait is bounded by --timeout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time


def serve(port: int, host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.create_server((host, port), family=family, reuse_port=False)
    print(f"listening on {port}", flush=True)

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def client(host: str, port: int, pings: int, nbytes: int, timeout: float) -> dict:
    conn = socket.create_connection((host, port), timeout=timeout)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(pings):
        start = time.perf_counter()
        conn.sendall(b"p")
        if conn.recv(1) != b"p":
            raise SystemExit("ping: wrong or no echo")
        rtts.append(time.perf_counter() - start)
    payload = random.Random(8).randbytes(nbytes)
    sent_sha = hashlib.sha256(payload).hexdigest()

    def send() -> None:
        view = memoryview(payload)
        for i in range(0, len(view), 1 << 17):
            conn.sendall(view[i : i + (1 << 17)])
        conn.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    echo = hashlib.sha256()
    echoed = 0
    while data := conn.recv(1 << 17):
        echo.update(data)
        echoed += len(data)
    sender.join(timeout)
    conn.close()
    return {
        "rtt_min": min(rtts) if rtts else None,
        "sent_sha": sent_sha,
        "echo_sha": echo.hexdigest(),
        "echoed": echoed,
        "eof": True,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("--host", default="0.0.0.0")
    c = sub.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--pings", type=int, default=3)
    c.add_argument("--bytes", type=int, default=1000)
    c.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.port, args.host)
    else:
        print(json.dumps(client(args.host, args.port, args.pings, args.bytes, args.timeout)))
        sys.exit(0)
