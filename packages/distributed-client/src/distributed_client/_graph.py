"""Task graphs: from what the user (or dask) hands us to what workers compute.

No I/O. Two input forms are accepted:

* **plain dicts of tuple tasks** (``{'x': 1, 'y': (inc, 'x'), 'z': (add, 'y', 10)}``),
  the classic dask graph spec, which needs no dask at all. A task is a tuple
  whose first element is callable; its arguments may be keys, literals, lists
  and nested tasks.
* **dask task-spec graphs** (``dask._task_spec.Task``, ``Alias``, ``DataNode``
  and friends), which current dask hands to a ``scheduler=`` callable. Those are
  normalized and executed with dask's own utilities (``convert_legacy_graph``,
  ``resolve_aliases``, ``GraphNode.dependencies``, ``node(values)``).

Each task becomes a :class:`Call`: a function, arguments and the keys it
needs. A *flat* task (a call whose arguments are keys, literals and lists of
those) is sent as is: the worker puts the data in place of the keys. Anything
else (nested tasks, aliases, fused subgraphs) is sent as a small runner that
gets its inputs positionally; the runner is pickled by value so workers need
not have this package installed (only dask, for dask graphs).
"""

from __future__ import annotations

import io
import operator
from collections.abc import Hashable, Mapping

import cloudpickle

from .errors import GraphError

__all__ = [
    "Call",
    "External",
    "Ref",
    "NormalizedGraph",
    "normalize_graph",
    "flatten_keys",
    "pack_results",
    "is_task",
    "tuple_dependencies",
    "execute_tuple_task",
]

_IDENTITY = operator.itemgetter(0)


class Ref:
    """A reference to another key inside a :class:`Call`'s arguments."""

    __slots__ = ("key",)

    def __init__(self, key: Hashable):
        self.key = key

    def __repr__(self) -> str:
        return f"Ref({self.key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.key == self.key

    def __hash__(self) -> int:
        return hash(("Ref", self.key))


class Call:
    """One task ready to be sent: ``function(*args, **kwargs)`` once refs are data.

    ``args``/``kwargs`` hold :class:`Ref` objects (at the top level or inside
    lists, tuples and dict values) where a dependency's data goes;
    ``dependencies`` lists their keys.
    """

    __slots__ = ("function", "args", "kwargs", "dependencies")

    def __init__(self, function, args=(), kwargs=None, dependencies=()):
        self.function = function
        self.args = tuple(args)
        self.kwargs = kwargs or {}
        self.dependencies = tuple(dependencies)

    def __repr__(self) -> str:
        name = getattr(self.function, "__name__", type(self.function).__name__)
        return f"<Call {name} deps={list(self.dependencies)!r}>"

    def translate(self, keymap: Mapping) -> tuple[tuple, dict, list]:
        """Return ``(args, kwargs, needed)`` with refs replaced by the keys in `keymap`."""
        if not self.dependencies:
            return self.args, self.kwargs, []
        args = tuple(_replace_refs(a, keymap) for a in self.args)
        kwargs = {k: _replace_refs(v, keymap) for k, v in self.kwargs.items()}
        needed = [keymap[d] for d in self.dependencies]
        return args, kwargs, needed


class External(Call):
    """A graph key whose value is data already on the cluster under ``cluster_key``.

    What a persisted collection's graph holds (``{key: Future}``): no task is
    sent for it; tasks that use it read the existing data.
    """

    __slots__ = ("cluster_key",)

    def __init__(self, cluster_key: Hashable):
        super().__init__(None)
        self.cluster_key = cluster_key

    def __repr__(self) -> str:
        return f"<External {self.cluster_key!r}>"


def _replace_refs(obj, keymap):
    typ = type(obj)
    if typ is Ref:
        return keymap[obj.key]
    if typ is list or typ is tuple:
        return typ(_replace_refs(o, keymap) for o in obj)
    if typ is dict:
        return {k: _replace_refs(v, keymap) for k, v in obj.items()}
    return obj


class NormalizedGraph:
    """``calls`` ``{key: Call}`` culled to what `keys` need, and a run ``order``."""

    __slots__ = ("calls", "order", "keys")

    def __init__(self, calls: dict, order: list, keys: list):
        self.calls = calls
        self.order = order
        self.keys = keys


# --------------------------------------------------------------------------- keys


def flatten_keys(keys) -> list:
    """The keys of a (possibly nested) list of keys, in order.

    Tuples are keys, not nesting (``('x', 0)`` is one key).

    >>> flatten_keys(['a', [('b', 0), ['c']]])
    ['a', ('b', 0), 'c']
    """
    if not isinstance(keys, list):
        return [keys]
    out = []
    stack = [iter(keys)]
    while stack:
        for k in stack[-1]:
            if isinstance(k, list):
                stack.append(iter(k))
                break
            out.append(k)
        else:
            stack.pop()
    return out


def pack_results(keys, results: Mapping):
    """Shape `results` (``{key: value}``) like `keys`.

    >>> pack_results(['a', ['b']], {'a': 1, 'b': 2})
    [1, [2]]
    """
    if isinstance(keys, list):
        return [pack_results(k, results) for k in keys]
    return results[keys]


# --------------------------------------------------------------------------- tuple tasks


def is_task(obj) -> bool:
    """A tuple task: a tuple whose first element is callable."""
    return type(obj) is tuple and len(obj) > 0 and callable(obj[0])


def _is_key_in(obj, keys) -> bool:
    try:
        return obj in keys
    except TypeError:  # unhashable
        return False


def tuple_dependencies(expr, keys) -> set:
    """Keys of `keys` that `expr` (a tuple-graph value) refers to.

    >>> sorted(tuple_dependencies((sum, ['x', (abs, 'y'), 3]), {'x', 'y', 'z'}))
    ['x', 'y']
    """
    deps = set()
    stack = [expr]
    while stack:
        a = stack.pop()
        typ = type(a)
        if typ is tuple and a and callable(a[0]):
            stack.extend(a[1:])
        elif typ is list:
            stack.extend(a)
        elif _is_key_in(a, keys):
            deps.add(a)
    return deps


def execute_tuple_task(expr, cache: Mapping):
    """Evaluate a tuple-graph value with the data of its dependencies in `cache`.

    >>> from operator import add
    >>> execute_tuple_task((add, 'x', (add, 1, 2)), {'x': 10})
    13
    """
    typ = type(expr)
    if typ is tuple and expr and callable(expr[0]):
        return expr[0](*[execute_tuple_task(a, cache) for a in expr[1:]])
    if typ is list:
        return [execute_tuple_task(a, cache) for a in expr]
    if _is_key_in(expr, cache):
        return cache[expr]
    return expr


def _flat_tuple_call(key, expr, keys, ext=None) -> Call | None:
    """A Call for `expr` if it is flat (args are keys, literals and lists of those)."""
    func = expr[0]
    args = []
    deps = []
    seen = set()

    def conv(a, top):
        typ = type(a)
        if typ is tuple and a and callable(a[0]):
            raise _NotFlat
        if typ is list:
            return [conv(x, False) for x in a]
        if ext is not None and isinstance(a, ext.types):
            a = ext.ref(a)
            if a not in seen:
                seen.add(a)
                deps.append(a)
            return Ref(a)
        if _is_key_in(a, keys):
            if a not in seen:
                seen.add(a)
                deps.append(a)
            return Ref(a)
        if typ is tuple or typ is dict or typ is set:
            # literals that the worker would search for keys: keep them exact
            raise _NotFlat
        return a

    try:
        for a in expr[1:]:
            args.append(conv(a, True))
    except _NotFlat:
        return None
    return Call(func, args, None, deps)


class _NotFlat(Exception):
    pass


def _run_tuple(blob, *values):
    """Runner for non-flat tuple tasks; pickled by value (see module doc)."""
    import pickle as _pickle

    if blob[:1] == b"R":  # refers to data of Futures: values after deps, by position
        import io as _io

        u = _pickle.Unpickler(_io.BytesIO(blob[1:]))
        u.persistent_load = values.__getitem__
        expr, deps = u.load()
    else:
        expr, deps = _pickle.loads(blob)
    cache = dict(zip(deps, values))

    def ev(a):
        typ = type(a)
        if typ is tuple and a and callable(a[0]):
            return a[0](*[ev(x) for x in a[1:]])
        if typ is list:
            return [ev(x) for x in a]
        try:
            if a in cache:
                return cache[a]
        except TypeError:
            pass
        return a

    return ev(expr)


def _run_node(blob, *values):
    """Runner for dask task-spec nodes; pickled by value (see module doc)."""
    import pickle as _pickle

    if blob[:1] == b"R":  # refers to data of Futures: values after deps, by position
        import io as _io

        u = _pickle.Unpickler(_io.BytesIO(blob[1:]))
        u.persistent_load = values.__getitem__
        node, deps = u.load()
    else:
        node, deps = _pickle.loads(blob)
    return node(dict(zip(deps, values)))


# Pickle the runners by value: plain pickle cannot import this module name, so
# distributed_core falls back to cloudpickle, which then ships their code.
for _f in (_run_tuple, _run_node):
    _f.__module__ = "distributed_client_runner"
del _f


def _runner_call(runner, payload, deps, ext=None) -> Call:
    deps = list(deps)
    try:
        blob = cloudpickle.dumps((payload, deps), protocol=5)
    except Exception:
        if ext is None:
            raise
        # Futures inside the task (a persisted collection's data fused into it):
        # each becomes a reference to its data, passed after the dependencies
        buf = io.BytesIO()
        buf.write(b"R")
        pickler = _RefPickler(buf, ext, len(deps))
        pickler.dump((payload, deps))
        blob = buf.getvalue()
        deps = deps + pickler.extra
    return Call(runner, [blob, *(Ref(d) for d in deps)], None, deps)


class _RefPickler(cloudpickle.Pickler):
    """Pickles each Future of `ext` as a persistent id: its position among the runner's values."""

    def __init__(self, file, ext, first: int):
        super().__init__(file, protocol=5)
        self.ext = ext
        self.first = first
        self.extra: list = []

    def persistent_id(self, obj):
        if isinstance(obj, self.ext.types):
            gk = self.ext.ref(obj)
            if gk not in self.extra:
                self.extra.append(gk)
            return self.first + self.extra.index(gk)
        return None


class _Externals:
    """Data already on the cluster (Futures) met in a graph.

    ``types``: the classes that stand for such data; ``resolve(value)``: its
    cluster key (raises for data it cannot use). Each becomes the graph key
    ``(EXTERNAL_PREFIX, cluster key)``, an :class:`External`.
    """

    __slots__ = ("types", "resolve", "found")

    def __init__(self, types, resolve):
        self.types = types
        self.resolve = resolve
        self.found: dict = {}

    def ref(self, value):
        k = self.resolve(value)
        gk = (EXTERNAL_PREFIX, k)
        self.found[gk] = k
        return gk


EXTERNAL_PREFIX = "distributed-client-future"


def _literal_call(value) -> Call:
    return Call(_IDENTITY, [[value]], None, ())


def _normalize_tuple_graph(dsk: Mapping, ext=None) -> dict:
    keys = dsk.keys()
    calls = {}
    for key, expr in dsk.items():
        if ext is not None and isinstance(expr, ext.types):
            call = External(ext.resolve(expr))
        elif is_task(expr):
            call = _flat_tuple_call(key, expr, keys, ext)
            if call is None:
                deps = tuple_dependencies(expr, keys)
                call = _runner_call(_run_tuple, expr, deps, ext)
        elif _is_key_in(expr, keys) and expr != key:
            # an alias: 'y': 'x'
            call = Call(_IDENTITY, [[Ref(expr)]], None, [expr])
        else:
            deps = tuple_dependencies(expr, keys) if type(expr) is list else ()
            if deps:
                call = _runner_call(_run_tuple, expr, deps, ext)
            else:
                call = _literal_call(expr)
        calls[key] = call
    return calls


# --------------------------------------------------------------------------- task spec


def _task_spec():
    try:
        from dask import _task_spec
    except ImportError:  # dask not installed, or too old for task-spec graphs
        return None
    return _task_spec


def _has_graph_nodes(dsk: Mapping) -> bool:
    ts = _task_spec()
    if ts is None:
        return False
    return any(isinstance(v, ts.GraphNode) for v in dsk.values())


def _normalize_spec_graph(dsk: Mapping, out_keys: list, ext=None) -> dict:
    ts = _task_spec()
    top = {}
    if ext is not None:
        # data already on the cluster: kept out of dask's conversion
        for k, v in dsk.items():
            v = v.value if isinstance(v, ts.DataNode) else v
            if isinstance(v, ext.types):
                top[k] = ext.resolve(v)
    if top:
        # left out of dask's conversion (which would inline them as literals)
        # but still keys, so that tasks refer to them
        all_keys = set(dsk)
        dsk = {k: v for k, v in dsk.items() if k not in top}
        graph = ts.convert_legacy_graph(dsk, all_keys)
    else:
        graph = ts.convert_legacy_graph(dsk)
    dependents: dict = {k: set() for k in graph}
    for k, node in graph.items():
        for d in node.dependencies:
            if d in dependents:
                dependents[d].add(k)
    graph = ts.resolve_aliases(graph, set(out_keys), dependents)
    calls = {}
    for key, node in graph.items():
        calls[key] = _spec_call(ts, key, node, ext)
    for key, cluster_key in top.items():
        calls[key] = External(cluster_key)
    return calls


def _spec_call(ts, key, node, ext=None) -> Call:
    if isinstance(node, ts.DataNode):
        return _literal_call(node.value)
    if isinstance(node, ts.Alias):
        return Call(_IDENTITY, [[Ref(node.target)]], None, [node.target])
    has_subgraph = getattr(node, "has_subgraph", None)  # dask >= 2025.1
    if type(node) is ts.Task and not (has_subgraph is not None and has_subgraph()):
        flat = _flat_spec_task(ts, node, ext)
        if flat is not None:
            return flat
    return _runner_call(_run_node, node, sorted(node.dependencies, key=repr), ext)


def _flat_spec_task(ts, node, ext=None) -> Call | None:
    deps = []
    seen = set()

    def conv(a):
        if isinstance(a, ts.TaskRef) or isinstance(a, ts.Alias):
            # (dask 2024.12 puts Alias nodes where later versions put TaskRefs)
            k = a.target if isinstance(a, ts.Alias) else a.key
            if k not in seen:
                seen.add(k)
                deps.append(k)
            return Ref(k)
        if isinstance(a, ts.GraphNode):
            raise _NotFlat
        if ext is not None and isinstance(a, ext.types):
            raise _NotFlat  # the runner resolves it
        if type(a) in (list, tuple, dict, set):
            raise _NotFlat  # keep literal containers exact
        return a

    try:
        args = [conv(a) for a in node.args]
        kwargs = {k: conv(v) for k, v in node.kwargs.items()}
    except _NotFlat:
        return None
    if set(deps) != set(node.dependencies):
        return None
    return Call(node.func, args, kwargs, deps)


# --------------------------------------------------------------------------- entry point


def normalize_graph(dsk, keys, external=None) -> NormalizedGraph:
    """Check `dsk`, cull it to what `keys` need and turn every task into a :class:`Call`.

    `dsk` is a mapping (or anything with ``__dask_graph__()``, as current dask
    passes to ``scheduler=``); `keys` a key or a nested list of keys. Raises
    :class:`GraphError` for output keys that are not in the graph, references
    to keys that do not exist and cycles, before anything is sent.
    `external` ``(types, resolve)`` names data already on the cluster:
    values of those types (Futures), at the top of the graph or inside tasks,
    stand for the data under the cluster key ``resolve(value)``; they become
    :class:`External` calls (no task is sent for them).
    """
    if not isinstance(dsk, Mapping):
        if hasattr(dsk, "__dask_graph__"):
            dsk = dsk.__dask_graph__()
        if not isinstance(dsk, Mapping):
            raise TypeError(
                f"a task graph must be a dict of tasks (or a dask collection), got {type(dsk).__name__}"
            )
    out_keys = flatten_keys(keys)
    missing = [k for k in out_keys if not _is_key_in(k, dsk)]
    if missing:
        raise GraphError(f"keys {missing!r} are not in the graph (it has {len(dsk)} keys)")
    ext = _Externals(*external) if external is not None else None
    if _has_graph_nodes(dsk):
        calls = _normalize_spec_graph(dsk, out_keys, ext)
    else:
        calls = _normalize_tuple_graph(dsk, ext)
    if ext is not None:
        for gk, k in ext.found.items():
            calls[gk] = External(k)
    order = _cull_and_order(calls, out_keys)
    culled = {k: calls[k] for k in order}
    return NormalizedGraph(culled, order, out_keys)


def _cull_and_order(calls: Mapping, out_keys: list) -> list:
    """Depth-first post-order over what `out_keys` need; raises on cycles and missing keys."""
    order = []
    state: dict = {}  # key -> 1 visiting, 2 done
    for root in out_keys:
        if state.get(root) == 2:
            continue
        stack = [(root, iter(calls[root].dependencies))]
        state[root] = 1
        path = [root]
        while stack:
            key, it = stack[-1]
            for d in it:
                st = state.get(d)
                if st == 2:
                    continue
                if st == 1:
                    cycle = path[path.index(d) :] + [d]
                    raise GraphError(
                        "the graph has a cycle: " + " -> ".join(repr(k) for k in cycle)
                    )
                if d not in calls:
                    raise GraphError(f"task {key!r} depends on {d!r}, which is not in the graph")
                state[d] = 1
                path.append(d)
                stack.append((d, iter(calls[d].dependencies)))
                break
            else:
                stack.pop()
                path.pop()
                state[key] = 2
                order.append(key)
    return order


def dumps_check(obj, what: str) -> None:
    """Raise a clear TypeError now if `obj` cannot be pickled (rather than on send)."""
    try:
        cloudpickle.dumps(obj, protocol=5)
    except Exception as e:
        raise TypeError(f"{what} cannot be pickled, so it cannot be sent to workers: {e}") from e
