"""Golden protocol vectors: the committed bytes on the wire must not drift.

``golden/v<major>.<minor>/`` holds, for each value in ``golden/vectors.py``,
the exact bytes ``pack_frames(dumps(value))`` produced when the vectors were
generated. Checked here, in both directions:

* encoding each value now gives exactly the committed bytes (current version);
* decoding the committed bytes of every version with the same major gives
  back values of exactly the same types and contents (older minors included:
  a peer on an older release still sends those bytes).

The live tests send golden bytes to a real Server and a real connector, so the
vectors are tied to what the code actually sends, not only to what it can
encode. A failure here means the wire format changed: see golden/README.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import pytest

from distributed_core import (
    PROTOCOL_VERSION,
    AuthenticationError,
    DecodeError,
    Decoder,
    Failure,
    Limits,
    RemoteTraceback,
    Security,
    connect,
    dumps,
    loads,
)
from distributed_core.protocol import pack_frames
from distributed_core.testing import gen_test, serve

GOLDEN = Path(__file__).parent / "golden"
CURRENT = "v%d.%d" % PROTOCOL_VERSION


def _load_vectors():
    # by path: the tests directory is not a package and runs with --import-mode=importlib
    spec = importlib.util.spec_from_file_location("_golden_vectors", GOLDEN / "vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V = _load_vectors()
BY_NAME = {v.name: v for v in V.VECTORS}


def _manifests() -> dict[str, dict]:
    """``{"v1.0": manifest}`` for every committed version with our protocol major."""
    out = {}
    for path in sorted(GOLDEN.glob("v*/vectors.json")):
        manifest = json.loads(path.read_text("utf-8"))
        if manifest["protocol"][0] == PROTOCOL_VERSION[0]:
            out[path.parent.name] = manifest
    return out


MANIFESTS = _manifests()
COMMITTED = [
    pytest.param(version, entry, id=f"{version}-{entry['name']}")
    for version, manifest in MANIFESTS.items()
    for entry in manifest["vectors"]
]


def _committed(version: str, name: str) -> bytes:
    path = GOLDEN / version / f"{name}.bin"
    if not path.exists():
        pytest.fail(
            f"golden vector {version}/{name}.bin is missing: run "
            "packages/distributed-core/tests/golden/generate.py (see golden/README.md)"
        )
    return path.read_bytes()


def _split(data: bytes, limits: Limits | None = None) -> list:
    """The frames of the single message ``data`` holds."""
    decoder = Decoder(limits)
    messages = decoder.feed(data)
    assert len(messages) == 1 and decoder.buffered == 0, (
        f"expected exactly one message, got {len(messages)} and {decoder.buffered} bytes left"
    )
    return messages[0]


def _difference(got: bytes, want: bytes) -> str:
    """A short account of where two encodings differ (they may be 64 KiB long)."""
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    lo = max(at - 16, 0)
    return (
        f"{len(got)} bytes encoded now vs {len(want)} committed; first difference at byte {at}:\n"
        f"  now:       {got[lo : at + 24].hex(' ')}\n"
        f"  committed: {want[lo : at + 24].hex(' ')}"
    )


def _expected(vector):
    return vector.decoded if vector.has_decoded else vector.value


# -- the committed files --------------------------------------------------------


def test_current_protocol_version_has_vectors():
    assert CURRENT in MANIFESTS, (
        f"no golden vectors for protocol {CURRENT} (PROTOCOL_VERSION = {PROTOCOL_VERSION}); "
        "if the protocol version changed on purpose, run golden/generate.py to add them "
        "(see golden/README.md)"
    )


def test_manifest_lists_exactly_the_vectors():
    manifest = MANIFESTS[CURRENT]
    assert manifest["protocol"] == list(PROTOCOL_VERSION)
    assert [e["name"] for e in manifest["vectors"]] == list(BY_NAME), (
        "golden vectors.json and vectors.py list different vectors: run golden/generate.py"
    )
    on_disk = {p.name for p in (GOLDEN / CURRENT).glob("*.bin")}
    assert on_disk == {e["file"] for e in manifest["vectors"]}


@pytest.mark.parametrize("name", list(BY_NAME))
def test_encoding_gives_the_committed_bytes(name):
    vector = BY_NAME[name]
    want = _committed(CURRENT, name)
    got = pack_frames(dumps(vector.value))
    if got != want:
        pytest.fail(
            f"the encoding of golden vector {name!r} ({vector.doc}) changed: this is a wire "
            f"format change (see golden/README.md).\n{_difference(got, want)}"
        )


@pytest.mark.parametrize("name", list(BY_NAME))
def test_manifest_describes_the_vector(name):
    entry = {e["name"]: e for e in MANIFESTS[CURRENT]["vectors"]}[name]
    assert entry["value"] == V.describe(_expected(BY_NAME[name])), (
        f"vectors.json describes {name!r} differently from vectors.py: run golden/generate.py"
    )


@pytest.mark.parametrize(("version", "entry"), COMMITTED)
def test_decoding_gives_the_value(version, entry):
    data = _committed(version, entry["name"])
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], "file differs from vectors.json"
    frames = _split(data)
    assert [len(f) for f in frames] == entry["frames"]
    value = loads(frames)
    assert V.describe(value) == entry["value"], (
        f"{version}/{entry['file']} ({entry['doc']}) no longer decodes to the same value"
    )


@pytest.mark.parametrize(("version", "entry"), COMMITTED)
def test_only_pickled_vectors_need_an_authenticated_peer(version, entry):
    frames = _split(_committed(version, entry["name"]))
    if entry["pickled"]:
        with pytest.raises(DecodeError, match="not authenticated"):
            loads(frames, allow_pickle=False)
    else:
        assert V.describe(loads(frames, allow_pickle=False)) == entry["value"]


def test_all_vectors_as_one_stream():
    """Back to back, in odd-sized chunks, as they would arrive on one connection."""
    data = b"".join(_committed(CURRENT, name) for name in BY_NAME)
    decoder = Decoder()
    messages = []
    for i in range(0, len(data), 4093):
        messages += decoder.feed(data[i : i + 4093])
    assert decoder.buffered == 0
    assert [V.describe(loads(m)) for m in messages] == [V.describe(_expected(v)) for v in V.VECTORS]


@pytest.mark.parametrize("name", ["hello_connector", "hello_listener_auth", "auth_proof"])
def test_handshake_messages_fit_the_handshake_limits(name):
    frames = _split(_committed(CURRENT, name), Limits.handshake())
    assert loads(frames, allow_pickle=False) == BY_NAME[name].value


def test_out_of_band_layout():
    """Spot checks of the frame layout the protocol documents."""
    entries = {e["name"]: e for e in MANIFESTS[CURRENT]["vectors"]}
    assert entries["request_update_data_large"]["frames"][1:] == [64 * 1024]
    assert entries["bytes_inline_max"]["frames"] == [entries["bytes_inline_max"]["frames"][0]]
    assert entries["ext_bytes_oob"]["frames"][1:] == [64 * 1024, 1]
    assert entries["ext_bytearray"]["frames"][1:] == [3, 0]
    assert entries["ext_pickle_buffer"]["frames"][1:] == [3]
    assert entries["ext_pickle_large_head"]["frames"][1] >= 64 * 1024


# -- the vectors are what the code sends -----------------------------------------


def test_error_replies_are_what_failure_sends():
    plain = Failure("ValueError", "boom", V.TRACEBACK).to_reply()
    assert list(plain.items()) == list(BY_NAME["reply_error"].value.items())
    pickled = Failure("ValueError", "boom", V.TRACEBACK, V.VALUEERROR_PICKLE).to_reply()
    assert list(pickled.items()) == list(BY_NAME["reply_error_with_exception"].value.items())


@pytest.mark.parametrize("name", ["reply_error", "reply_error_with_exception"])
def test_golden_error_replies_rebuild_the_exception(name):
    reply = loads(_split(_committed(CURRENT, name)))
    exc = Failure.from_reply(reply).exception
    assert type(exc) is ValueError and exc.args == ("boom",)
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "ValueError: boom" in str(exc.__cause__)


def test_auth_proof_is_the_hmac_of_the_golden_nonces():
    connector = Security(secret=V.SECRET)
    assert connector.proof("connector", V.NONCE_A, V.NONCE_B) == V.PROOF
    listener = Security(secret=V.SECRET)
    assert listener.verify(V.PROOF, "connector", V.NONCE_B, V.NONCE_A)
    assert not Security(secret=b"another").verify(V.PROOF, "connector", V.NONCE_B, V.NONCE_A)


async def _read_raw(reader: asyncio.StreamReader) -> bytes:
    """One framed message, exactly as it came off the socket."""
    head = await reader.readexactly(8)
    (n,) = struct.unpack("<Q", head)
    assert 1 <= n <= 16, n
    lengths = await reader.readexactly(8 * n)
    body = await reader.readexactly(sum(struct.unpack(f"<{n}Q", lengths)))
    return head + lengths + body


def _shape(hello: dict) -> dict:
    """Keys and value types of a hello ("name" may be a str or None)."""
    return {k: "str|None" if k == "name" else type(v).__name__ for k, v in hello.items()}


@gen_test()
async def test_live_server_answers_golden_requests_with_golden_replies():
    received = {}

    def compute(comm, **kwargs):
        received["compute"] = kwargs
        return BY_NAME["reply_ok_compute"].value["result"]

    def update_data(comm, data, report=True):
        received["update_data"] = data
        return "OK"

    async with serve(
        {"compute": compute, "update_data": update_data}, security=Security()
    ) as server:
        host, port = server.address.rsplit("/", 1)[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(_committed(CURRENT, "hello_connector"))
            hello = loads(_split(await _read_raw(reader)), allow_pickle=False)
            assert _shape(hello) == _shape(BY_NAME["hello_listener_auth"].value)
            assert hello["protocol"] == list(PROTOCOL_VERSION) and hello["role"] == "listener"

            async def exchange(name: str) -> bytes:
                writer.write(_committed(CURRENT, name))
                return await _read_raw(reader)

            assert await exchange("request_ping") == _committed(CURRENT, "reply_ok_pong")

            assert await exchange("request_compute") == _committed(CURRENT, "reply_ok_compute")
            sent = dict(BY_NAME["request_compute"].value)
            del sent["op"], sent["reply"]
            assert V.describe(received["compute"]) == V.describe(sent)

            assert await exchange("request_update_data_large") == _committed(CURRENT, "reply_ok")
            sent = BY_NAME["request_update_data_large"].value["data"]
            assert V.describe(received["update_data"]) == V.describe(sent)

            error = loads(_split(await exchange("request_unknown_op")))
            assert list(error) == list(BY_NAME["reply_error"].value)
            assert error["status"] == "error" and error["type"] == "ValueError"
            assert "no-such-op" in error["message"]

            assert await exchange("request_close") == _committed(CURRENT, "reply_ok")
            assert await reader.read() == b""  # the server closed the connection
        finally:
            writer.close()
            await writer.wait_closed()


@gen_test()
async def test_live_connector_sends_golden_shaped_hello_and_proof():
    captured = []

    async def listener(reader, writer):
        try:
            hello = loads(_split(await _read_raw(reader)), allow_pickle=False)
            captured.append(hello)
            writer.write(_committed(CURRENT, "hello_listener_auth"))  # nonce NONCE_B
            if hello["auth"]:
                proof = loads(_split(await _read_raw(reader)), allow_pickle=False)
                captured.append(proof)
                ours = Security(secret=V.SECRET).proof("listener", V.NONCE_B, hello["nonce"])
                writer.write(pack_frames(dumps({"proof": ours})))
            await reader.read()  # until the connector closes
        finally:
            writer.close()

    tcp = await asyncio.start_server(listener, "127.0.0.1", 0)
    address = "tcp://127.0.0.1:%d" % tcp.sockets[0].getsockname()[1]
    try:
        # without a secret: the golden listener hello (auth true) is understood and refused
        with pytest.raises(AuthenticationError, match="requires a shared secret"):
            await connect(address, timeout=5, security=Security())
        # with the secret: the connector's proof has the golden shape and verifies
        comm = await connect(address, timeout=5, security=Security(secret=V.SECRET))
        await comm.close()
        for _ in range(100):
            if len(captured) == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        tcp.close()
        await tcp.wait_closed()

    golden_hello = BY_NAME["hello_connector"].value
    for hello in captured[0], captured[1]:
        assert _shape(hello) == _shape(golden_hello)
        assert hello["protocol"] == list(PROTOCOL_VERSION) and hello["role"] == "connector"
        assert len(hello["nonce"]) == len(golden_hello["nonce"])
    assert [captured[0]["auth"], captured[1]["auth"]] == [False, True]
    proof = captured[2]
    assert _shape(proof) == _shape(BY_NAME["auth_proof"].value)
    assert Security(secret=V.SECRET).verify(
        proof["proof"], "connector", V.NONCE_B, captured[1]["nonce"]
    )
