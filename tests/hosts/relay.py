"""A TCP delay relay for simulated hosts (this kernel has no ``netem``).

Run inside a host's network namespace::

    python relay.py --port 15380 --delay-ms 20 --mark 0x2137

The harness redirects the host's outgoing TCP connections (nftables
``redirect`` in the namespace's nat output chain) to this relay. For each
accepted connection the relay reads the original destination
(``SO_ORIGINAL_DST`` / ``IP6T_SO_ORIGINAL_DST``), connects there from a socket
marked with ``SO_MARK`` = ``--mark`` (the redirect rule skips marked packets,
so the relay's own connections are not redirected again), and forwards every
chunk in both directions ``delay_ms / 2`` after it arrived: a round trip gets
``delay_ms`` more. Order and bytes are preserved exactly (chunks are delayed,
never merged or split differently than TCP may anyway); an EOF (half-close)
is passed on after the same delay, and a reset or error on either side aborts
both.

Unlike a direct connection, a connect through the relay succeeds at once
(the relay accepts locally) even when the destination does not answer; the
connection then stays silent until the upstream connect fails (after
CONNECT_TIMEOUT) and is reset. Data sent meanwhile is buffered.

Prints ``relay listening on PORT`` once both listeners (127.0.0.1 and ::1)
are up (just 127.0.0.1 where IPv6 is disabled). Only the standard library is used, so any Python 3.10+ runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import sys

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, level SOL_IP
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h, level SOL_IPV6
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
SO_MARK = getattr(socket, "SO_MARK", 36)
CHUNK = 256 * 1024  # bytes read at once
BUFFERED = 8 << 20  # bytes in flight per direction before reading pauses (backpressure)
# Seconds for the upstream connect: about Linux's own SYN retries (127 s), so a
# client whose peer vanished sees silence, not an early reset from the relay.
CONNECT_TIMEOUT = 130.0


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """(host, port) the client connected to before nftables redirected it here."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        if host.startswith("::ffff:"):
            host = host[7:]
        return host, port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


async def _pump(reader, writer, delay: float) -> None:
    """Copy reader -> writer, each chunk `delay` seconds after it was read; EOF too."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()  # (due time, chunk or None for EOF)
    buffered = 0  # bytes read and not yet written
    room = asyncio.Event()
    room.set()

    async def deliver():
        nonlocal buffered
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            buffered -= len(data)
            if buffered < BUFFERED:
                room.set()

    delivering = asyncio.ensure_future(deliver())
    try:
        while True:
            reading = asyncio.ensure_future(reader.read(CHUNK))
            done, _ = await asyncio.wait([reading, delivering], return_when=asyncio.FIRST_COMPLETED)
            if reading not in done:  # the writer side failed first
                reading.cancel()
                delivering.result()  # raises
                return
            data = reading.result()
            queue.put_nowait((loop.time() + delay, data or None))
            if not data:
                break
            buffered += len(data)
            if buffered >= BUFFERED:
                room.clear()
                waiting = asyncio.ensure_future(room.wait())
                await asyncio.wait([waiting, delivering], return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
        await delivering
    finally:
        delivering.cancel()


async def _handle(client_reader, client_writer, delay: float, mark: int) -> None:
    client_sock = client_writer.get_extra_info("socket")
    upstream_writer = None
    try:
        host, port = original_destination(client_sock)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), CONNECT_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        upstream_reader, upstream_writer = await asyncio.open_connection(sock=sock)
        client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            _pump(client_reader, upstream_writer, delay),
            _pump(upstream_reader, client_writer, delay),
        )
    except (OSError, asyncio.TimeoutError, ConnectionError):
        # A reset or failure on one side: abort both (the peer sees a reset, not data loss)
        for w in (client_writer, upstream_writer):
            if w is not None:
                w.transport.abort()
    finally:
        for w in (client_writer, upstream_writer):
            if w is not None:
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()


async def main(port: int, delay_ms: float, mark: int) -> None:
    delay = delay_ms / 2000.0

    def handler(r, w):
        return _handle(r, w, delay, mark)

    servers = [await asyncio.start_server(handler, "127.0.0.1", port)]
    try:
        servers.append(await asyncio.start_server(handler, "::1", port))
    except OSError:  # IPv6 disabled in this namespace: only IPv4 is redirected here
        pass
    print(f"relay listening on {port}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True, help="added round trip")
    parser.add_argument("--mark", type=lambda s: int(s, 0), required=True)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.delay_ms, args.mark))
    except KeyboardInterrupt:
        sys.exit(0)
