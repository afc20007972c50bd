"""No pickles between different Python major.minor versions (issue 8).

Bytecode differs between Python minor versions: a function pickled by value
on 3.11 fails on 3.13 with ``SystemError: unknown opcode`` or crashes the
process. The handshake's ``python`` field is compared: pickles from such a
peer are refused before anything is unpickled, sending pickles to it is
refused before anything is sent, and plain msgpack data still flows.

Real connections throughout: a peer whose hello claims another Python, and
(when pyenv has one) a real second interpreter.
"""

from __future__ import annotations

import asyncio
import glob
import os
import sys

import pytest

import distributed_core
from distributed_core import PythonVersionError, Security, connect, rpc
from distributed_core.comm import python_mismatch
from distributed_core.testing import gen_test, serve

OURS = "%d.%d" % sys.version_info[:2]
OTHER = "3.0.0"  # what the fake peers below claim to run


def by_value():
    return lambda x: x + 1  # pickled by value (cloudpickle): code


def boom(comm):
    raise ValueError("boom")


HANDLERS = {
    "echo": lambda comm, x: x,
    "make_complex": lambda comm: complex(1, 2),  # a result that needs a pickle
    "boom": boom,
}


def test_python_mismatch_compares_major_minor_only():
    here = "%d.%d.%d" % sys.version_info[:3]
    assert python_mismatch(here, "tcp://a:1") is None
    assert python_mismatch(f"{OURS}.99", "tcp://a:1") is None
    assert python_mismatch(None, "tcp://a:1") is None  # a peer that does not say
    assert python_mismatch("garbage", "tcp://a:1") is None
    text = python_mismatch("3.0.1", "tcp://a:1")
    assert text == (
        f"peer tcp://a:1 runs Python 3.0, this process {OURS}: pickled objects cannot be "
        "exchanged between different Python versions; use the same Python major.minor on "
        "every node"
    )


# -- a server, a peer whose hello says another Python ------------------------------------


async def raw_handshake(wire, address, python=OTHER):
    peer = await wire.RawPeer.open(address)
    await peer.send(wire.packed(wire.hello(python=python)))
    their_hello = await peer.read_message()
    assert their_hello["python"] == "%d.%d.%d" % sys.version_info[:3]
    return peer


@gen_test()
async def test_server_refuses_pickles_from_another_python_and_keeps_serving(wire, core_logs):
    async with serve(HANDLERS, security=Security()) as server:
        async with await raw_handshake(wire, server.address) as peer:
            # a request holding pickled code: an error reply, nothing unpickled
            await peer.send(wire.packed({"op": "echo", "x": by_value()}))
            reply = await peer.read_message()  # no pickle in it (allow_pickle=False)
            assert reply["status"] == "error"
            assert reply["type"] == "distributed_core.errors.PythonVersionError"
            assert "op 'echo'" in reply["message"]
            assert f"runs Python 3.0, this process {OURS}" in reply["message"]
            assert "pickled objects cannot be exchanged" in reply["message"]
            # plain msgpack data still flows on the same connection
            await peer.send(wire.packed({"op": "echo", "x": {"a": [1, b"z", (2, 3)]}}))
            assert await peer.read_message() == {"status": "OK", "result": {"a": [1, b"z", (2, 3)]}}
            # a pickle in a message that wants no reply gets none: replies stay in order
            await peer.send(wire.packed({"op": "echo", "x": by_value(), "reply": False}))
            await peer.send(wire.packed({"op": "ping"}))
            assert await peer.read_message() == {"status": "OK", "result": "pong"}
            # a result that would need a pickle: an error reply instead, naming both
            await peer.send(wire.packed({"op": "make_complex"}))
            reply = await peer.read_message()
            assert reply["type"] == "distributed_core.errors.PythonVersionError"
            assert "result of op 'make_complex' cannot be sent" in reply["message"]
            # an exception: its reply without the pickled exception
            await peer.send(wire.packed({"op": "boom"}))
            reply = await peer.read_message()
            assert reply["type"] == "ValueError" and reply["message"] == "boom"
            assert "exception" not in reply
        await wire.wait_for_log(core_logs, r"refused pickles in op 'echo' from tcp://127")
        async with rpc(server.address, security=Security()) as r:  # same Python: pickles as before
            assert (await r.echo(x=by_value()))(1) == 2


@gen_test()
async def test_same_python_in_the_hello_exchanges_pickles(wire):
    async with serve(HANDLERS, security=Security()) as server:
        here = "%d.%d.%d" % sys.version_info[:3]
        async with await raw_handshake(wire, server.address, python=here) as peer:
            await peer.send(wire.packed({"op": "make_complex"}))
            assert (await peer.read_message(allow_pickle=True))["result"] == complex(1, 2)


# -- a client, a server whose hello says another Python ------------------------------------


async def other_python_server(wire, reply_value):
    """A listener claiming Python 3.0 that answers every request with ``reply_value``."""
    received = []

    async def handle(reader, writer):
        try:
            writer.write(wire.packed(wire.hello(python=OTHER, role="listener")))
            await wire.read_message(reader)  # the client's hello
            while True:
                received.append(await wire.read_message(reader))
                writer.write(wire.packed({"status": "OK", "result": reply_value}))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, f"tcp://127.0.0.1:{srv.sockets[0].getsockname()[1]}", received


@gen_test()
async def test_client_refuses_to_send_and_to_load_pickles(wire):
    srv, address, received = await other_python_server(wire, complex(1, 2))
    try:
        comm = await connect(address, security=Security())
        try:
            assert comm.pickle_refusal is not None
            # sending side: refused before anything is sent
            with pytest.raises(PythonVersionError) as info:
                await comm.write({"op": "echo", "x": by_value()})
            assert f"{address} runs Python 3.0, this process {OURS}" in str(info.value)
            assert "cannot send an object of type" in str(info.value)
            # receiving side: a reply holding a pickle raises here, unpickled
            await comm.write({"op": "echo", "x": [1, 2]})
            with pytest.raises(PythonVersionError, match="nothing was unpickled") as info:
                await comm.read()
            assert info.value.partial == {"status": "OK", "result": None}
            assert received == [{"op": "echo", "x": [1, 2]}]  # the refused one never left
            assert not comm.closed()  # still in sync, still usable
        finally:
            await comm.close()
        async with rpc(address, security=Security()) as r:
            with pytest.raises(PythonVersionError, match=f"this process {OURS}"):
                await r.echo(x=by_value())
            with pytest.raises(PythonVersionError, match="pickled objects cannot be exchanged"):
                await r.echo(x=1)
            assert r.pool.open == 1  # neither error cost the connection
    finally:
        srv.close()
        await srv.wait_closed()


@gen_test()
async def test_msgpack_replies_from_another_python_flow(wire):
    srv, address, _ = await other_python_server(wire, {"a": (1, 2), "b": b"x" * 100_000})
    try:
        async with rpc(address, security=Security()) as r:
            assert await r.anything(x={1, 2}) == {"a": (1, 2), "b": b"x" * 100_000}
    finally:
        srv.close()
        await srv.wait_closed()


# -- a real second interpreter -------------------------------------------------------


def other_interpreters() -> list[str]:
    """pyenv's CPython 3.10-3.13 whose major.minor differs from ours."""
    root = os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv"))
    found = {}
    for exe in sorted(glob.glob(os.path.join(root, "versions", "3.1[0-9]*", "bin", "python3"))):
        version = exe.split(os.sep)[-3]
        major_minor = ".".join(version.split(".")[:2])
        if major_minor != OURS and major_minor in ("3.10", "3.11", "3.12", "3.13"):
            found[major_minor] = exe
    return list(found.values())


CHILD = """
import asyncio, sys
from distributed_core import Security, Server

async def main():
    server = Server({
        "echo": lambda comm, x: x,
        "version": lambda comm: "%d.%d" % sys.version_info[:2],
        "make_complex": lambda comm: complex(1, 2),
    }, security=Security())
    await server.listen("tcp://127.0.0.1:0")
    print(server.address, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
    await server.close()

asyncio.run(main())
"""

START_TIMEOUT = 60  # seconds for the other interpreter to import and listen


def child_pythonpath() -> str:
    """Our src dirs and the directories holding our dependencies (pure Python there)."""
    import cloudpickle
    import msgpack
    import tornado

    dirs = [os.path.dirname(os.path.dirname(distributed_core.__file__))]
    for mod in (msgpack, tornado, cloudpickle):
        d = os.path.dirname(os.path.dirname(mod.__file__))
        if d not in dirs:
            dirs.append(d)
    return os.pathsep.join(dirs)


@pytest.mark.skipif(
    not other_interpreters(),
    reason=f"no CPython 3.10-3.13 other than {OURS} under ~/.pyenv/versions: "
    "cannot test a real mixed-version pair",
)
@pytest.mark.parametrize(
    "exe", other_interpreters()[-1:]
)  # the newest: the furthest from ours, usually
@gen_test(timeout=120)
async def test_real_other_interpreter(exe):
    env = {
        **os.environ,
        "PYTHONPATH": child_pythonpath(),
        "PYTHONNOUSERSITE": "1",
        "PYTHONWARNINGS": "error",
    }
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-c",
        CHILD,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        address = line.decode().strip()
        assert address.startswith("tcp://127.0.0.1:"), f"child printed {line!r}"
        async with rpc(address, security=Security()) as r:
            theirs = await r.version()
            assert theirs != OURS
            # msgpack data flows both ways
            assert await r.echo(x={"a": [1, b"z" * 70_000, (2, 3)]}) == {
                "a": [1, b"z" * 70_000, (2, 3)]
            }
            # this side refuses to send code before sending it
            with pytest.raises(PythonVersionError) as info:
                await r.echo(x=by_value())
            assert f"runs Python {theirs}, this process {OURS}" in str(info.value)
            # the other interpreter refuses to send its pickles
            with pytest.raises(PythonVersionError) as info:
                await r.make_complex()
            assert f"runs Python {OURS}, this process {theirs}" in str(info.value)
            # and refuses pickles that get past a sender (nothing is unpickled there)
            comm = await connect(address, security=Security())
            try:
                comm.pickle_refusal = None  # pretend this side did not check
                await comm.write({"op": "echo", "x": by_value()})
                comm.pickle_refusal = "x"  # the error reply holds no pickle anyway
                reply = await comm.read()
                assert reply["type"] == "distributed_core.errors.PythonVersionError"
                assert f"runs Python {OURS}, this process {theirs}" in reply["message"]
                await comm.write({"op": "ping"})
                assert (await comm.read())["result"] == "pong"  # still serving
            finally:
                await comm.close()
    finally:
        if proc.returncode is None:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0
