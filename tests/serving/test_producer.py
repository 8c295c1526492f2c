"""The API's producer: delivery reports that arrive late must not kill its poller thread."""

from __future__ import annotations

import asyncio

from serving.producer import _BatchAcks


def test_a_report_after_the_loop_closed_is_dropped_not_raised() -> None:
    loop = asyncio.new_event_loop()
    done: asyncio.Future[list[object]] = loop.create_future()
    acks = _BatchAcks(2, loop, done)
    acks.report(None, None)  # type: ignore[arg-type]
    loop.close()
    acks.report(None, None)  # type: ignore[arg-type]  # the last report: settles, loop closed
    assert acks.pending == 0 and not done.done()


def test_the_last_report_settles_the_request() -> None:
    loop = asyncio.new_event_loop()
    try:
        done: asyncio.Future[list[object]] = loop.create_future()
        acks = _BatchAcks(1, loop, done)
        acks.report(None, None)  # type: ignore[arg-type]
        assert loop.run_until_complete(asyncio.wait_for(done, 1.0)) == []
    finally:
        loop.close()
