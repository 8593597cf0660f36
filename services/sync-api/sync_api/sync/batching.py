"""Many threads' statements run as one: group commit for a worker process's actors.

Each of a sync-worker's threads would otherwise run its own statement and its own commit per student. A
:class:`Batcher` takes each thread's item into the next batch, which one thread of the process runs while the
callers wait for their own result; the batch forms while the previous one runs, so an idle process waits for
nothing. Nothing is acknowledged before its batch committed: a caller returns only after that.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Seconds between a waiting caller's checks, so that Dramatiq's time limit (an exception raised in the
#: caller's thread) is not held up by a long wait.
_WAIT_SLICE_S = 1.0


class Batcher(Generic[Item, Result]):
    """Runs ``run_batch(items) -> results`` (one result per item, in order) for items given by many threads.

    Parameters:
      run_batch(Callable): does a whole batch, e.g. one statement for all its items; an exception it raises
        is raised to every caller of that batch, who may call again.
      name(str): the batching thread's name.
      max_size(int): the most items in one batch.
      timeout_s(float): the longest a caller waits for its batch before :class:`BatchTimeout`.
    """

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], *, name: str, max_size: int = 64,
                 timeout_s: float = 120.0) -> None:
        self._run_batch = run_batch
        self._name = name
        self._max_size = max_size
        self._timeout_s = timeout_s
        self._queue: queue.SimpleQueue[_Call[Item, Result]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, item: Item) -> Result:
        """``item``'s result, once the batch holding it ran."""
        call: _Call[Item, Result] = _Call(item)
        self._start()
        self._queue.put(call)
        waited = 0.0
        while not call.done.wait(_WAIT_SLICE_S):
            waited += _WAIT_SLICE_S
            if waited >= self._timeout_s:
                raise BatchTimeout(f"{self._name}: no answer within {self._timeout_s:g}s")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]  # set with done, as error is not

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:  # started in the worker process, at first use (never before Dramatiq forks)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self._run_batch([call.item for call in batch])
                for call, result in zip(batch, results, strict=True):
                    call.result = result
            except BaseException as exc:  # noqa: BLE001 - every caller gets it; this thread goes on
                for call in batch:
                    call.error = exc
            finally:
                for call in batch:
                    call.done.set()


class BatchTimeout(Exception):
    """A batch gave no answer in time (its database statement is stuck past every timeout)."""


class _Call(Generic[Item, Result]):
    __slots__ = ("item", "result", "error", "done")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
