"""Shared secret (both sides, replay, reflection), no unpickling before auth, TLS."""

from __future__ import annotations

import os
import pickle
import time

import msgpack
import pytest

from distributed_core import (
    AuthenticationError,
    CommClosedError,
    HandshakeError,
    Security,
    connect,
    loads,
    rpc,
)
from distributed_core.serialize import EXT_PICKLE
from distributed_core.testing import gen_test, serve


async def ping_over(comm) -> str:
    await comm.write({"op": "ping"})
    return (await comm.read())["result"]


# -- shared secret ------------------------------------------------------------------


@gen_test()
async def test_right_secret(core_logs):
    async with serve({}, security=Security(secret="s3cret")) as server:
        comm = await connect(server.address, security=Security(secret=b"s3cret"))
        assert comm.peer_info["auth"] is True
        assert await ping_over(comm) == "pong"
        await comm.close()
        async with rpc(server.address, security=Security(secret="s3cret")) as r:
            assert await r.ping() == "pong"
    assert not [r for r in core_logs.records if r.levelname == "WARNING"]


@pytest.mark.parametrize(
    "server_secret, client_secret, client_says, server_says",
    [
        (
            "right",
            "wrong",
            "proof of the shared secret is wrong",
            "proof of the shared secret is wrong",
        ),
        ("right", None, "requires a shared secret and this side has none", "did not authenticate"),
        (None, "right", "did not authenticate", "requires a shared secret and this side has none"),
    ],
    ids=["wrong-secret", "client-without", "server-without"],
)
@gen_test()
async def test_secret_mismatch_fails_on_both_sides(
    core_logs, wire, server_secret, client_secret, client_says, server_says
):
    async with serve({}, security=Security(secret=server_secret)) as server:
        with pytest.raises(AuthenticationError, match=client_says) as info:
            await connect(server.address, security=Security(secret=client_secret), timeout=2)
        assert server.address in str(info.value)
        text = await wire.wait_for_log(core_logs, "refused connection from tcp://127.0.0.1:")
        assert server_says in text
        # the server keeps serving those who know the secret
        comm = await connect(server.address, security=Security(secret=server_secret))
        assert await ping_over(comm) == "pong"
        await comm.close()


async def capture_client_proof(wire, secret) -> tuple[bytes, bytes]:
    """Run a fake listener, let a real client with ``secret`` authenticate to it,
    and return the client's (nonce, proof) as an eavesdropper would see them."""
    import asyncio

    captured = []

    async def handle(reader, writer):
        try:
            client_hello = await wire.read_message(reader)
            writer.write(
                wire.packed(wire.hello(role="listener", auth=True, package="distributed-core"))
            )
            proof = await wire.read_message(reader)
            captured.append((client_hello["nonce"], proof["proof"]))
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises((CommClosedError, HandshakeError)):
            await connect(f"tcp://127.0.0.1:{port}", security=Security(secret=secret), timeout=2)
    finally:
        srv.close()
        await srv.wait_closed()
    assert captured, "the client never sent its proof"
    return captured[0]


@gen_test()
async def test_replayed_proof_is_refused(core_logs, wire):
    nonce, proof = await capture_client_proof(wire, "s3cret")
    async with serve({}, security=Security(secret="s3cret")) as server:
        async with await wire.RawPeer.open(server.address) as peer:
            await peer.read_message()
            # replay the recorded hello nonce and proof on a new connection
            await peer.send(wire.packed(wire.hello(auth=True, nonce=nonce)))
            await peer.send(wire.packed({"proof": proof}))
            await peer.read_until_closed()
        text = await wire.wait_for_log(core_logs, "refused connection from " + peer.address)
        assert "failed authentication" in text


@pytest.mark.parametrize("role", ["connector", "listener"])
@gen_test()
async def test_reflected_proof_is_refused(core_logs, wire, role):
    # Send the server's own nonce back as ours, then reflect the server's proof:
    # the role label (and refusing a peer claiming our own role) stops this.
    async with serve({}, security=Security(secret="s3cret")) as server:
        async with await wire.RawPeer.open(server.address) as peer:
            theirs = await peer.read_message()
            await peer.send(wire.packed(wire.hello(auth=True, nonce=theirs["nonce"], role=role)))
            server_proof = (await peer.read_message())["proof"]
            await peer.send(wire.packed({"proof": server_proof}))
            await peer.read_until_closed()
        text = await wire.wait_for_log(core_logs, "refused connection from " + peer.address)
        assert "failed authentication" in text


# -- nothing is unpickled before authentication ------------------------------------


@pytest.fixture
def evil(tmp_path):
    """msgpack bytes of a pickled value whose unpickling creates a marker file."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = msgpack.packb(msgpack.ExtType(EXT_PICKLE, msgpack.packb([pickle.dumps(Evil()), []])))
    # control: the payload does what it says when unpickling is allowed
    f = loads([payload])
    f.close()
    assert marker.exists()
    marker.unlink()
    return payload, marker


def map_with(key: str, value_msgpack: bytes, **fields) -> bytes:
    """msgpack of a map with ``fields`` and ``key`` set to pre-encoded msgpack bytes."""
    body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in fields.items())
    n = len(fields) + 1
    return bytes([0x80 | n]) + body + msgpack.packb(key) + value_msgpack


@pytest.mark.parametrize(
    "secret, attack, logged",
    [
        (None, "pickle-instead-of-hello", "refusing to unpickle"),
        (None, "pickle-inside-hello", "refusing to unpickle"),
        ("s3cret", "hello-without-auth-then-pickle", "did not authenticate"),
        ("s3cret", "pickle-as-proof", "invalid proof: .*refusing to unpickle"),
        ("s3cret", "wrong-proof-then-pickle", "failed authentication"),
    ],
)
@gen_test()
async def test_unauthenticated_pickle_is_never_unpickled(
    core_logs, wire, evil, secret, attack, logged
):
    payload, marker = evil
    hello = wire.hello(auth=secret is not None)
    async with serve({}, security=Security(secret=secret)) as server:
        async with await wire.RawPeer.open(server.address) as peer:
            await peer.read_message()
            if attack == "pickle-instead-of-hello":
                await peer.send(wire.frames_of(payload))
            elif attack == "pickle-inside-hello":
                hello.pop("name")
                await peer.send(wire.frames_of(map_with("name", payload, **hello)))
            elif attack == "hello-without-auth-then-pickle":
                await peer.send(wire.packed(wire.hello(auth=False)))
                await peer.send(wire.frames_of(map_with("op", payload)))
            elif attack == "pickle-as-proof":
                await peer.send(wire.packed(hello))
                await peer.send(wire.frames_of(map_with("proof", payload)))
            elif attack == "wrong-proof-then-pickle":
                await peer.send(wire.packed(hello))
                await peer.send(wire.packed({"proof": os.urandom(32)}))
                await peer.send(wire.frames_of(map_with("op", payload)))
            await peer.read_until_closed()
        await wire.wait_for_log(core_logs, f"refused connection from {peer.address}: .*{logged}")
        comm = await connect(server.address, security=Security(secret=secret))
        assert await ping_over(comm) == "pong"
        await comm.close()
    assert not marker.exists()


@pytest.mark.parametrize("secret", [None, "s3cret"])
@gen_test()
async def test_server_refusing_pickles_even_from_authenticated_peers(wire, evil, secret):
    payload, marker = evil
    async with serve(
        {"echo": lambda comm, x: x}, allow_pickle=False, security=Security(secret=secret)
    ) as server:
        comm = await connect(server.address, security=Security(secret=secret))
        try:
            assert await ping_over(comm) == "pong"
            await comm.stream.write(wire.frames_of(map_with("x", payload, op="echo")))
            reply = await comm.read()
            assert reply["status"] == "error" and reply["type"] == "DecodeError"
            assert "refusing to unpickle" in reply["message"]
            assert await ping_over(comm) == "pong"  # still usable
        finally:
            await comm.close()
    assert not marker.exists()


# -- TLS ----------------------------------------------------------------------------


@gen_test()
async def test_tls(certs):
    server_sec = Security(tls_cert=certs.server, tls_key=certs.server, tls_ca_file=certs.ca)
    async with serve({}, "tls://127.0.0.1:0", security=server_sec) as server:
        assert server.address.startswith("tls://127.0.0.1:")
        comm = await connect(server.address, security=Security(tls_ca_file=certs.ca))
        assert comm.peer_address == server.address
        assert comm.stream.socket.version().startswith("TLS")
        assert await ping_over(comm) == "pong"
        await comm.close()


@gen_test()
async def test_tls_with_secret(certs):
    server_sec = Security(
        secret="s", tls_cert=certs.server, tls_key=certs.server, tls_ca_file=certs.ca
    )
    async with serve({}, "tls://127.0.0.1:0", security=server_sec) as server:
        async with rpc(server.address, security=Security(secret="s", tls_ca_file=certs.ca)) as r:
            assert await r.ping() == "pong"
        with pytest.raises(AuthenticationError):
            await connect(server.address, security=Security(secret="x", tls_ca_file=certs.ca))


@gen_test()
async def test_listen_on_port_number_with_tls_cert_uses_tls(certs):
    server_sec = Security(tls_cert=certs.server, tls_key=certs.server)
    async with serve({}, 0, security=server_sec) as server:
        assert server.address.startswith("tls://")
        comm = await connect(
            f"tls://127.0.0.1:{server.port}", security=Security(tls_ca_file=certs.ca)
        )
        assert await ping_over(comm) == "pong"
        await comm.close()


@gen_test()
async def test_mutual_tls(certs):
    server_sec = Security(
        tls_cert=certs.server, tls_key=certs.server, tls_ca_file=certs.ca, require_client_cert=True
    )
    async with serve({}, "tls://127.0.0.1:0", security=server_sec) as server:
        client = Security(tls_cert=certs.client, tls_key=certs.client, tls_ca_file=certs.ca)
        comm = await connect(server.address, security=client)
        assert await ping_over(comm) == "pong"
        await comm.close()
        # without a client certificate: refused
        with pytest.raises((CommClosedError, HandshakeError)):
            comm = await connect(server.address, security=Security(tls_ca_file=certs.ca), timeout=2)
            try:
                await ping_over(comm)  # (TLS 1.3 may report the refusal on first use)
            finally:
                await comm.close()
        # the server keeps serving
        comm = await connect(server.address, security=client)
        assert await ping_over(comm) == "pong"
        await comm.close()


@gen_test()
async def test_tls_unknown_ca_fails_at_once(certs):
    server_sec = Security(tls_cert=certs.server, tls_key=certs.server)
    async with serve({}, "tls://127.0.0.1:0", security=server_sec) as server:
        start = time.monotonic()
        with pytest.raises(CommClosedError, match="certificate") as info:
            await connect(server.address, security=Security(tls_ca_file=certs.other_ca), timeout=5)
        assert time.monotonic() - start < 2, "a certificate failure must not be retried"
        assert server.address in str(info.value)


@gen_test()
async def test_plain_tcp_client_to_tls_server_fails(certs):
    server_sec = Security(tls_cert=certs.server, tls_key=certs.server)
    async with serve({}, "tls://127.0.0.1:0", security=server_sec) as server:
        with pytest.raises((CommClosedError, HandshakeError)):
            await connect(f"tcp://127.0.0.1:{server.port}", timeout=1)


# -- Security objects ---------------------------------------------------------------


def test_security_validation(certs, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        Security(secret="")
    with pytest.raises(TypeError, match="str or bytes"):
        Security(secret=123)
    with pytest.raises(ValueError, match="tls_key was given without tls_cert"):
        Security(tls_key=certs.server)
    with pytest.raises(ValueError, match="needs tls_ca_file"):
        Security(tls_cert=certs.server, tls_key=certs.server, require_client_cert=True)
    with pytest.raises(ValueError, match="needs a certificate"):
        Security().server_context()
    with pytest.raises(ValueError, match="cannot load TLS CA file"):
        Security(tls_ca_file=str(tmp_path / "missing.pem")).client_context()
    assert "hidden" in repr(Security(secret="abc")) and "abc" not in repr(Security(secret="abc"))


def test_security_from_files(certs, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("  top secret \n")
    sec = Security.from_files(str(secret_file), certs.server, certs.server, certs.ca)
    assert sec.secret == b"top secret"
    assert sec.server_context() is sec.server_context()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        Security.from_files(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="cannot read secret file"):
        Security.from_files(str(tmp_path / "missing"))


def test_proofs_are_bound_to_nonces_and_roles():
    sec = Security(secret="k")
    a, b = os.urandom(32), os.urandom(32)
    proof = sec.proof("connector", a, b)
    assert sec.verify(proof, "connector", b, a)
    assert not sec.verify(proof, "listener", b, a)
    assert not sec.verify(proof, "connector", a, b)
    assert not sec.verify(proof, "connector", b, os.urandom(32))
    assert not Security(secret="other").verify(proof, "connector", b, a)
    assert not sec.verify(None, "connector", b, a)
    assert not sec.verify("text", "connector", b, a)
