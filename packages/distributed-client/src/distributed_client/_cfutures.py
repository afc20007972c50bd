"""The part of :class:`concurrent.futures.Future` that ``wait``/``as_completed`` use.

:func:`concurrent.futures.wait` and :func:`concurrent.futures.as_completed`
do not call public methods: under each future's ``_condition`` they read its
``_state`` and append a waiter to its ``_waiters``, and the future calls
``waiter.add_result/add_exception/add_cancelled(future)`` when it finishes.
:class:`FutureProtocol` provides exactly that for the client's futures, at
no cost for futures never passed there:

* ``_condition`` is one ``threading.Condition`` per Executor (its lock is
  reentrant, so acquiring it once per future, as ``wait`` does, is fine);
* ``_state`` starts as "not hooked" (None in the slot). The first read
  hooks the future: it asks the session's loop to call back when the key
  is done, and reads ``PENDING`` until that callback, under the condition,
  moves it to ``FINISHED`` (or ``CANCELLED_AND_NOTIFIED``) and tells the
  waiters. So ``_state`` changes only together with the waiters being told,
  as ``concurrent.futures`` requires; the value stays on the cluster.
* ``_waiters`` is created on first use.

``Executor.retry`` bumps the executor's epoch: a hooked future of an older
epoch forgets its final state and hooks again on its next read (the key may
run again; a PENDING future keeps its watch, which fires after the rerun).

``exception()`` and ``cancelled()`` of a hooked, finished future answer from
what the callback stored, without the loop: ``wait(..., FIRST_EXCEPTION)``
calls them while holding the condition, which the loop's callback needs.
"""

from __future__ import annotations

import threading
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any

from .errors import CancelledError, LostDataError

__all__ = ["FutureProtocol", "new_condition", "FINAL_STATES"]

FINAL_STATES = (FINISHED, CANCELLED_AND_NOTIFIED)


def new_condition() -> threading.Condition:
    """The condition all futures of one Executor share."""
    return threading.Condition(threading.RLock())


class FutureProtocol:
    """Mixin: ``_condition``, ``_state``, ``_waiters`` for :mod:`concurrent.futures`.

    The class using it has ``key``, ``executor`` (with ``_cf_condition`` and
    ``session``) and the slots below.
    """

    __slots__ = ()
    _cf_state: str | None
    _cf_waiters: list | None
    _cf_exc: BaseException | None
    _cf_epoch: int
    key: Any
    executor: Any

    @property
    def _condition(self) -> threading.Condition:
        return self.executor._cf_condition

    @_condition.setter
    def _condition(self, value: threading.Condition) -> None:
        # a setter only so that type checkers see the attribute typeshed's
        # concurrent.futures.as_completed protocol asks for
        raise AttributeError("a Future's _condition is its Executor's; it cannot be replaced")

    @property
    def _waiters(self) -> list:
        with self._condition:
            if self._cf_waiters is None:
                self._cf_waiters = []
            return self._cf_waiters

    @_waiters.setter
    def _waiters(self, value: list) -> None:
        with self._condition:
            self._cf_waiters = value

    @property
    def _state(self) -> str:
        st = self._cf_state
        if st is None or self._cf_epoch != self.executor._cf_epoch:
            with self._condition:
                if self._cf_epoch != self.executor._cf_epoch:
                    self._cf_reset()
                st = self._cf_state
                if st is None:
                    st = self._cf_state = PENDING
                    s = self.executor.session
                    s.call_soon(s.watch, self.key, self._cf_done)
        return st

    @_state.setter
    def _state(self, value: str) -> None:
        raise AttributeError(
            "a Future's state follows its key on the cluster; set_result() and "
            "set_exception() are not supported"
        )

    def _cf_done(self, _key: Any) -> None:
        """On the session's loop: `key` is in memory, erred or forgotten."""
        s = self.executor.session
        st = s.state.state_of(self.key)
        if st == "memory":
            exc = None
        elif st is None:
            exc = LostDataError([self.key])
        else:
            exc = s.error_of(self.key)
        with self._condition:
            if self._cf_state != PENDING:
                return  # reset by retry(), or already told
            waiters = self._cf_waiters or ()
            if isinstance(exc, CancelledError):
                self._cf_state = CANCELLED_AND_NOTIFIED
                self._cf_exc = exc
                for w in waiters:
                    w.add_cancelled(self)
            else:
                self._cf_state = FINISHED
                self._cf_exc = exc
                for w in waiters:
                    if exc is None:
                        w.add_result(self)
                    else:
                        w.add_exception(self)
            self._condition.notify_all()

    def _cf_final(self) -> bool:
        return self._cf_state in FINAL_STATES and self._cf_epoch == self.executor._cf_epoch

    def _cf_reset(self) -> None:
        """Some key ran again (retry): forget what the last run told (under the condition)."""
        self._cf_epoch = self.executor._cf_epoch
        if self._cf_state in FINAL_STATES:
            self._cf_state = None
            self._cf_exc = None
