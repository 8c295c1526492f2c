"""RespBatch and RespArgs encode commands exactly as hiredis packs them (a RESP reader agrees)."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators import RespBatch

argument = st.one_of(
    st.text(max_size=20),
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)
command = st.lists(argument, min_size=1, max_size=8)


def read_all(encoded: bytes) -> list[list[bytes]]:
    reader = hiredis.Reader()
    reader.feed(encoded)
    out = []
    while (reply := reader.gets()) is not False:
        out.append(reply)
    return out


@given(st.lists(command, min_size=1, max_size=6))
def test_a_batch_reads_back_as_the_commands_hiredis_packs(commands: list[list[object]]) -> None:
    batch = RespBatch()
    for c in commands:
        batch.command(*c)
    assert len(batch) == len(commands)
    expected = read_all(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
    assert read_all(batch.encoded()) == expected


def test_refuses_floats_and_leaves_the_batch_unchanged() -> None:
    batch = RespBatch()
    batch.command("SET", "k", "v")
    before = batch.encoded()
    with pytest.raises(TypeError, match="str, bytes, int or RespArgs"):
        batch.command("ZADD", "k", 1.5, "m")
    with pytest.raises(TypeError, match="at least its name"):
        batch.command()
    assert batch.encoded() == before and len(batch) == 1
