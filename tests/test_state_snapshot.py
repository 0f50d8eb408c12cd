"""The snapshot stream (pykvs.state.snapshot) and the archive around it
(pykvs.server.snapshot_archive), without a server: header reads, round trips, refusals."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zlib

import pytest

from pykvs.fsm import FSM, kv_command
from pykvs.server.snapshot_archive import (
    ARCHIVE_FORMAT,
    META_NAME,
    STATE_NAME,
    SUMS_NAME,
    ArchiveError,
    build_archive,
    read_archive,
    stream_header,
)
from pykvs.state.snapshot import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_MAGIC,
    SnapshotError,
    SnapshotHeader,
    SnapshotStream,
    read_header,
    read_snapshot,
)


def _state(keys: int = 3, term: int = 4) -> tuple[FSM, bytes]:
    fsm = FSM()
    fsm.apply_batch([(i + 1, kv_command("set", b"k/%d" % i, b"v%d" % i)) for i in range(keys)])
    return fsm, fsm.snapshot(term=term).to_bytes()


def test_the_fsm_hands_out_the_state_stream() -> None:
    fsm, data = _state()
    assert isinstance(fsm.snapshot(), SnapshotStream)
    assert SnapshotStream(fsm.store.snapshot(), fsm.store.lock_delays, 4).to_bytes() == data
    header, version, _ = read_snapshot(data)
    assert header == SnapshotHeader(SNAPSHOT_FORMAT, 3, 4)
    assert [k for k, _, _ in version.kvs.items()] == [b"k/0", b"k/1", b"k/2"]


def test_read_header_reads_only_the_header() -> None:
    _, data = _state()
    header_end = len(SNAPSHOT_MAGIC) + 4 + int.from_bytes(data[8:12], "little")
    stream = io.BytesIO(data)
    assert read_header(stream) == SnapshotHeader(SNAPSHOT_FORMAT, 3, 4)
    assert stream.tell() == header_end
    assert read_header(data[:header_end]) == SnapshotHeader(SNAPSHOT_FORMAT, 3, 4)
    with pytest.raises(SnapshotError, match="bad magic"):
        read_header(b"NOTASNAP" + data[8:])
    with pytest.raises(SnapshotError, match="truncated"):
        read_header(data[: header_end - 1])
    with pytest.raises(SnapshotError, match="snapshot is corrupt"):
        read_header(data[:12] + b"\xc1" * (header_end - 12))  # 0xc1: never valid msgpack


def test_stream_header_of_an_archive_state() -> None:
    _, data = _state(term=9)
    assert stream_header(data) == (3, 9)
    for bad in (b"", b"PYKV", b"NOTASNAP" + data[8:], data[:13]):
        with pytest.raises(ArchiveError, match="not a pykvs FSM snapshot stream"):
            stream_header(bad)


def test_archive_round_trip_and_refusals() -> None:
    _, data = _state()
    archive = build_archive(data, 3, 4, {"s2": "127.0.0.1:2", "s1": "127.0.0.1:1"})
    meta, state = read_archive(archive)
    assert state == data
    assert (meta["Index"], meta["Term"], meta["Size"], meta["Format"]) == (3, 4, len(data),
                                                                          ARCHIVE_FORMAT)
    assert [s["ID"] for s in meta["Configuration"]["Servers"]] == ["s1", "s2"]

    def rebuilt(members: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb") as zipped, \
                tarfile.open(fileobj=zipped, mode="w") as tar:
            for name, body in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        return out.getvalue()

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    assert read_archive(rebuilt(members))[1] == data
    with pytest.raises(ArchiveError, match="gzip-compressed tar"):
        read_archive(b"not an archive")
    with pytest.raises(ArchiveError, match=f"has no {SUMS_NAME}"):
        read_archive(rebuilt({k: v for k, v in members.items() if k != SUMS_NAME}))
    with pytest.raises(ArchiveError, match=f"checksum mismatch for {STATE_NAME}"):
        read_archive(rebuilt({**members, STATE_NAME: data + b"x"}))
    consul_meta = json.dumps({"Format": "consul"}).encode()
    sums = "".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n"
                   for name, body in ((META_NAME, consul_meta), (STATE_NAME, data)))
    with pytest.raises(ArchiveError, match="Format='consul'"):
        read_archive(rebuilt({**members, META_NAME: consul_meta, SUMS_NAME: sums.encode()}))


def test_layers_the_archive_needs_no_aiohttp_and_the_fsm_no_radix() -> None:
    code = (
        "import sys, pykvs.server.snapshot_archive, pykvs.fsm\n"
        "assert 'aiohttp' not in sys.modules, 'snapshot_archive imported aiohttp'\n"
        "assert not hasattr(pykvs.fsm, 'radix'), 'pykvs.fsm imports pykvs.radix'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_stream_that_repeats_a_key_is_refused() -> None:
    """Regression: a table frame that carries one key twice, with a CRC and record counts
    that match, restored a table of fewer entries than the stream claims (each record was
    counted as inserted). The restored sizes are now checked against the trailer."""
    _, data = _state(keys=2)
    body = data[:-4]
    assert body.count(b"k/1") == 1
    forged = body.replace(b"k/1", b"k/0")
    forged += zlib.crc32(forged).to_bytes(4, "little")
    with pytest.raises(SnapshotError, match="repeats a key"):
        read_snapshot(forged)
    read_snapshot(data)  # the genuine stream still reads
