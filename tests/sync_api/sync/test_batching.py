"""The per-process batcher (group commit) in process: calls made at once share a batch, each gets its own result,
and a failed batch fails its callers only."""

from __future__ import annotations

import threading

import pytest

from sync_api.sync.batching import Batcher

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


def test_calls_made_at_once_share_a_batch_and_each_gets_its_own_result():
    release = threading.Event()
    batches: list[list[int]] = []

    def run_batch(items):
        release.wait(5)  # the first batch holds on until every caller has queued behind it
        batches.append(list(items))
        return [item * 10 for item in items]

    batcher = Batcher(run_batch, name="test-batcher", max_size=64)
    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, batcher.call(n))) for n in range(20)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)

    assert results == {n: n * 10 for n in range(20)}
    assert sorted(item for batch in batches for item in batch) == list(range(20))
    assert len(batches) < 20  # the later callers went in together


def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs():
    def run_batch(items):
        if "bad" in items:
            raise RuntimeError("the statement failed")
        return [item.upper() for item in items]

    batcher = Batcher(run_batch, name="test-batcher")
    with pytest.raises(RuntimeError, match="the statement failed"):
        batcher.call("bad")
    assert batcher.call("good") == "GOOD"


def test_a_batch_never_holds_more_than_its_size():
    sizes: list[int] = []
    gate = threading.Event()

    def run_batch(items):
        gate.wait(5)
        sizes.append(len(items))
        return list(items)

    batcher = Batcher(run_batch, name="test-batcher", max_size=3)
    threads = [threading.Thread(target=batcher.call, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert sum(sizes) == 10 and max(sizes) <= 3
