"""DynamicBatcher: results to the right callers, batches form under load, errors reach
every caller of the batch."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from abdnet.service import BatcherClosed, DynamicBatcher


def test_results_go_to_their_callers_and_batches_form():
    sizes = []

    def double(xs):
        time.sleep(0.01)  # a busy model: requests pile up meanwhile
        return [2 * x for x in xs]

    b = DynamicBatcher(double, max_batch=8, max_wait_ms=20, on_batch=lambda n, s: sizes.append(n))
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda x: b.submit(x).result(timeout=10), range(200)))
    b.close()
    assert results == [2 * x for x in range(200)]
    assert sum(sizes) == 200 and max(sizes) == 8 and max(sizes) <= 8
    assert len(sizes) < 100  # batched, not one call per item


def test_a_lone_request_waits_at_most_max_wait():
    b = DynamicBatcher(lambda xs: xs, max_batch=64, max_wait_ms=30)
    t0 = time.perf_counter()
    assert b.submit(1).result(timeout=5) == 1
    assert time.perf_counter() - t0 < 1.0
    b.close()


def test_errors_reach_every_item_of_the_batch_and_the_worker_survives():
    gate = threading.Event()

    def fn(xs):
        gate.wait(5)
        if "bad" in xs:
            raise ValueError("bad item in batch")
        return xs

    b = DynamicBatcher(fn, max_batch=4, max_wait_ms=200)
    futs = [b.submit(x) for x in ("a", "bad", "c")]
    gate.set()
    for f in futs:
        with pytest.raises(ValueError, match="bad item"):
            f.result(timeout=5)
    assert b.submit("ok").result(timeout=5) == "ok"
    b.close()
    with pytest.raises(BatcherClosed):
        b.submit("late")


def test_wrong_result_count_is_an_error():
    b = DynamicBatcher(lambda xs: [], max_batch=2, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        b.submit(1).result(timeout=5)
    b.close()
