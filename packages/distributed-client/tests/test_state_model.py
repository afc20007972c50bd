"""Model-based test of the scheduling state (hypothesis, no sockets).

Random sequences of submit (with random options and inputs), want, release,
cancel, worker join (with resources) and loss, task finish and error, and the
no-worker deadline drive :class:`SchedulerState`; after every step the
invariants below must hold. ``drain`` runs everything that can run and then
checks that nothing wanted is stuck while a worker could run it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from distributed_client._options import task_options
from distributed_client._state import SchedulerState
from distributed_client._tasks import ACTIVE

WORKERS = ["tcp://a:1", "tcp://b:1", "tcp://c:1"]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class EngineModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.s = SchedulerState(
            max_in_flight=lambda n: n + 1, no_workers_timeout=10.0, clock=self.clock
        )
        self.refs: dict = {}  # key -> references the model holds
        self.n = 0

    # ------------------------------------------------------------ helpers

    def _pick(self, keys, i):
        keys = sorted(keys)
        return keys[i % len(keys)] if keys else None

    def _processing(self):
        """Tasks a worker could finish now (a task sent ahead waits for its inputs)."""
        return sorted(
            k
            for k, ts in self.s.tasks.items()
            if ts.state == "processing" and all(d.state == "memory" for d in ts.dependencies)
        )

    def _workers_reply(self) -> bool:
        """What real workers would answer now: results, or missing-data for lost inputs."""
        s = self.s
        replied = False
        for ts in [t for t in s.tasks.values() if t.state == "processing"]:
            if ts.state != "processing":
                continue  # changed by an earlier reply
            w = ts.processing_on
            gone = [
                d.key
                for d in ts.dependencies
                if d.state != "memory"
                and not (d.state == "processing" and d.processing_on == w and d.key in ts.pending)
            ]
            if gone:
                s.task_missing_data(ts.key, w, gone)
                replied = True
            elif all(d.state == "memory" for d in ts.dependencies):
                s.task_finished(ts.key, w, nbytes=1)
                replied = True
        return replied

    # ------------------------------------------------------------ rules

    @rule(
        deps=st.lists(st.integers(0, 50), max_size=3),
        retries=st.integers(0, 2),
        priority=st.sampled_from([0, 0, 0, 1, -1, 5]),
        workers=st.sampled_from([None, None, None, [WORKERS[0]], WORKERS[1:]]),
        allow_other=st.booleans(),
        gpu=st.sampled_from([0, 0, 1, 2]),
    )
    def submit(self, deps, retries, priority, workers, allow_other, gpu):
        known = list(self.s.tasks)
        dep_keys = sorted({self._pick(known, i) for i in deps} - {None}) if known else []
        key = f"t{self.n}"
        self.n += 1
        opts = task_options(
            retries=retries,
            priority=priority,
            workers=workers,
            allow_other_workers=allow_other and workers is not None,
            resources={"GPU": gpu} if gpu else None,
        )
        self.s.update_graph({key: ("spec", dep_keys)}, wants=[key], options={key: opts})
        self.refs[key] = self.refs.get(key, 0) + 1

    @rule(w=st.sampled_from(WORKERS), nbytes=st.integers(0, 1000))
    def scatter(self, w, nbytes):
        """Data put on a worker from outside: no definition, lost if its holder dies."""
        if w in self.s.workers:
            key = f"t{self.n}"
            self.n += 1
            self.s.add_data({key: [w]}, nbytes={key: nbytes}, wants=True)
            self.refs[key] = self.refs.get(key, 0) + 1

    @rule(i=st.integers(0, 100), j=st.integers(0, 2))
    def key_missing(self, i, j):
        """A worker turns out not to hold a key (a failed gather)."""
        key = self._pick([k for k, ts in self.s.tasks.items() if ts.who_has], i)
        if key is not None:
            holders = sorted(self.s.tasks[key].who_has)
            self.s.key_missing_on(key, holders[j % len(holders)])

    @rule(i=st.integers(0, 100))
    def want(self, i):
        key = self._pick(self.s.tasks, i)
        if key is not None:
            self.s.want([key])
            self.refs[key] = self.refs.get(key, 0) + 1

    @rule(i=st.integers(0, 100))
    def release(self, i):
        key = self._pick([k for k, r in self.refs.items() if r > 0], i)
        if key is not None:
            self.refs[key] -= 1
            self.s.release([key])

    @rule(i=st.integers(0, 100))
    def cancel(self, i):
        key = self._pick(self.s.tasks, i)
        if key is not None:
            self.s.cancel([key])

    @rule(
        w=st.sampled_from(WORKERS),
        ncores=st.integers(1, 2),
        gpu=st.sampled_from([0, 1, 2]),
        ahead=st.booleans(),
    )
    def add_worker(self, w, ncores, gpu, ahead):
        if w in self.s.workers:
            return  # known already (a worker declares its resources once)
        self.s.add_worker(w, ncores)
        self.s.set_worker_resources(w, {"GPU": gpu} if gpu else {})
        self.s.workers[w].ahead = ahead  # it may get tasks ahead of their inputs

    @rule(w=st.sampled_from(WORKERS), blame=st.booleans())
    def remove_worker(self, w, blame):
        self.s.remove_worker(w, blame=blame)

    @rule()
    def assign(self):
        self.s.assign()

    @rule(i=st.integers(0, 100), nbytes=st.integers(0, 1000))
    def finish(self, i, nbytes):
        key = self._pick(self._processing(), i)
        if key is not None:
            ts = self.s.tasks[key]
            self.s.task_finished(key, ts.processing_on, nbytes=nbytes)

    @rule(i=st.integers(0, 100))
    def err(self, i):
        key = self._pick(self._processing(), i)
        if key is not None:
            ts = self.s.tasks[key]
            self.s.task_erred(key, ts.processing_on, ValueError(key))

    @rule(i=st.integers(0, 100))
    def missing_data(self, i):
        key = self._pick(self._processing(), i)
        if key is not None:
            ts = self.s.tasks[key]
            missing = [d.key for d in ts.dependencies][:1]
            self.s.task_missing_data(key, ts.processing_on, missing)

    @rule(dt=st.sampled_from([1.0, 11.0]))
    def time_passes(self, dt):
        self.clock.t += dt
        self.s.expire()

    @precondition(lambda self: bool(self.s.workers))
    @rule()
    def drain(self):
        """Run everything that can run; then nothing wanted may be stuck."""
        s = self.s
        for _ in range(10_000):
            if not self._workers_reply() and not s.assign():
                break
        assert not any(ts.state == "processing" for ts in s.tasks.values())
        for ts in s.tasks.values():
            if ts.state == "queued":
                assert not s._candidates(ts), f"{ts} could run on {s._candidates(ts)}"
            elif ts.state == "waiting":
                assert any(d.state in ("waiting", "queued") for d in ts.dependencies), ts
            elif ts.wants:
                assert ts.state in ("memory", "erred"), ts
        self.s.take_report()

    # ------------------------------------------------------------ invariants

    @invariant()
    def references_match(self):
        for key, r in self.refs.items():
            ts = self.s.tasks.get(key)
            if r > 0:
                assert ts is not None and ts.wants == r, (key, r, ts)
            elif ts is not None:
                assert ts.wants == 0

    @invariant()
    def graph_is_consistent(self):
        tasks = self.s.tasks
        for key, ts in tasks.items():
            assert ts.key == key and ts.state != "forgotten"
            for d in ts.dependencies:
                assert tasks.get(d.key) is d and ts in d.dependents
            for d in ts.dependents:
                assert tasks.get(d.key) is d and ts in d.dependencies
            assert ts.wants or ts.dependents, f"{ts} is referenced by nothing and not forgotten"

    @invariant()
    def processing_is_on_live_workers(self):
        s = self.s
        for ts in s.tasks.values():
            if ts.state == "processing":
                ws = s.workers.get(ts.processing_on)
                assert ws is not None and ts in ws.processing, ts
            else:
                assert ts.processing_on is None, ts
        for ws in s.workers.values():
            for ts in ws.processing:
                assert ts.state == "processing" and ts.processing_on == ws.address
            assert len(ws.processing) <= ws.max_in_flight

    @invariant()
    def resources_never_exceed_what_is_declared(self):
        for ws in self.s.workers.values():
            used: dict = {}
            for ts in ws.processing:
                for name, amount in (ts.options.resources or {}).items():
                    used[name] = used.get(name, 0.0) + amount
            assert used == ws.used, (ws, used, ws.used)
            for name, amount in used.items():
                assert amount <= ws.resources.get(name, 0.0) + 1e-9

    @invariant()
    def data_is_where_the_state_says(self):
        s = self.s
        for ts in s.tasks.values():
            if ts.state == "memory":
                assert ts.who_has, ts
            elif ts.state != "erred":
                assert not ts.who_has, ts  # released/unfinished tasks hold no data
            for w in ts.who_has:
                assert w in s.workers and ts in s.workers[w].has
        for ws in s.workers.values():
            for ts in ws.has:
                assert ws.address in ts.who_has

    @invariant()
    def needed_tasks_have_a_path_to_run(self):
        s = self.s
        placed = {id(t) for t in s.unplaced} | {id(e[-1]) for e in s.unplaced_urgent}
        placed |= {id(t) for t in s.isolated} | {id(t) for t in s.unrunnable}
        for ws in s.workers.values():
            for t in (*ws.queue, *ws.blocked, *(e[-1] for e in ws.urgent)):
                if t.queued_on == ws.address:
                    placed.add(id(t))
        for ts in s.tasks.values():
            if ts.state == "queued":
                assert id(ts) in placed, f"{ts} is queued in no queue"
            if ts.state == "waiting":
                expect = {d for d in ts.dependencies if d.state != "memory"}
                assert set(ts.waiting_on) == expect and expect, ts
                assert all(d.state in ACTIVE for d in expect), ts
            if ts.needed:
                assert ts.state != "released", f"{ts} is needed but released"


EngineModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_model = EngineModel.TestCase
