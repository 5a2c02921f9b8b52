"""The batched program: one solver of ONE MDP mapped over a leading batch axis.

Shapes use letters: B batch (number of MDPs), S states, A actions, K fan-out
(K = S for the dense layout), T horizon.

:func:`make_batched` is the public building block: it returns the jitted
function ``stacked MDP [B, ...] -> result [B, ...]`` that
:func:`jaxrl_dp.batch.solve` runs on every chunk (there, wrapped with a fused
entry check and sharded over the devices). Family code that needs a batched
kernel without chunking, sharding or disk uses it directly.

The compiled programs of recent calls are kept in small module-level caches
of compiled executables (no arrays), keyed by :func:`cache_token` of the
solver and its options: a token describes a callable by what it closes over
(closure cells, defaults, ``functools.partial`` arguments, the attributes of
any object hashed by identity that it captures), so re-binding or mutating a
captured value gives a new program. Module-level globals read by a solver are
treated as constants, as ``jax.jit`` does: a change to one is not seen by an
in-memory run (``batch.solve`` with a ``results_dir`` traces the solver on
every call and never runs a cached program whose trace differs).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import types
from typing import Any, Callable, cast

import jax
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_choice

__all__ = ["make_batched", "STRATEGIES", "resolve_strategy", "map_over_batch",
           "cache_token", "batched_lapack_calls"]

#: Batching strategies: ``"vmap"``, ``"map"`` (``jax.lax.map``), ``"auto"``.
STRATEGIES = ("auto", "vmap", "map")

#: Compiled programs / jitted functions of recent calls (insertion-ordered;
#: the oldest is evicted). Values are jitted functions or executables only.
CACHE_SIZE = 16
_BATCHED: dict = {}


def resolve_strategy(strategy: str, platform: str) -> str:
  """``"auto"`` -> ``"map"`` on ``platform == "cpu"``, else ``"vmap"``.

  Raises:
    InvalidMDPError: ``strategy`` not one of :data:`STRATEGIES`.
  """
  check_choice("strategy", strategy, STRATEGIES)
  if strategy == "auto":
    return "map" if platform == "cpu" else "vmap"
  return strategy


def map_over_batch(one: Callable[..., Any], strategy: str) -> Callable[..., Any]:
  """``one`` (a function of one MDP and per-MDP arguments) mapped over axis 0.

  ``"vmap"``: ``jax.vmap(one)`` (one fused program; an iterative solver's
  ``while_loop`` runs until the slowest MDP has converged). ``"map"``:
  ``jax.lax.map`` (a loop over the batch; each MDP stops at its own iteration
  count, faster on CPUs). Not jitted; ``strategy`` must be resolved.
  """
  if strategy == "vmap":
    return jax.vmap(one)
  if strategy == "map":
    return lambda *xs: jax.lax.map(lambda x: one(*x), xs)
  raise InvalidMDPError(f"strategy = {strategy!r}: expected 'vmap' or 'map'")


_LAPACK_CALL = re.compile(r'custom_call_target="(lapack_[A-Za-z0-9_]+)"')
_HLO_SHAPE = re.compile(r"\b[a-z]+[0-9]*\[([0-9,]*)\]")


def batched_lapack_calls(hlo_text: str) -> tuple[str, ...]:
  """The LAPACK kernels that a compiled CPU program calls on a batch of at
  least two matrices (sorted target names, e.g. ``("lapack_sgetrf_ffi",)``).

  ``hlo_text`` is the optimized HLO of one device's program
  (``jax.stages.Compiled.as_text()``): a custom call ``lapack_*`` with an
  operand or result of rank >= 3 whose leading (batch) dimensions hold at
  least two matrices. Under ``vmap`` every linear solve, Cholesky, QR or
  eigendecomposition of a one-MDP solver becomes such a call.

  Why it matters: jaxlib's CPU LAPACK kernels (0.10) split a batch into
  tasks on the host's intra-op thread pool and block their thread until the
  tasks are done. Every CPU device of a process shares that pool (one
  thread per core), so when as many devices as the pool has threads run
  such a call at once, every pool thread waits for tasks that no thread is
  left to run: the program hangs (two CPU devices on a 2-core host, e.g.
  ``policy_iteration`` under ``vmap``; :func:`jaxrl_dp.batch.solve` then
  runs the chunk on one device).
  """
  found = set()
  for line in hlo_text.splitlines():
    m = _LAPACK_CALL.search(line)
    if m is None:
      continue
    for dims in _HLO_SHAPE.findall(line):
      shape = [int(d) for d in dims.split(",") if d]
      if len(shape) >= 3 and math.prod(shape[:-2]) >= 2:
        found.add(m.group(1))
        break
  return tuple(sorted(found))


def check_stacked(mdps: Any) -> int:
  """The batch size ``B`` of a stacked batch of MDPs (works on tracers).

  A :class:`TabularMDP` must have ``rewards [B, S, A]``; any other pytree of
  arrays (e.g. a model of another family) must have at least one leaf. In
  both cases every leaf must have the same leading axis ``B``.

  Raises:
    InvalidMDPError: no array leaves, ``rewards`` not of rank 3, or a leaf
      without the leading axis ``B``.
  """
  paths = jax.tree_util.tree_flatten_with_path(mdps)[0]
  if not paths or any(not hasattr(x, "shape") for _, x in paths):
    raise InvalidMDPError(
        f"mdps: expected a stacked TabularMDP (leaves with a leading axis B, e.g. "
        f"from jaxrl_dp.stack), got {type(mdps).__name__}")
  b: int | None  # None: a 0-d first leaf, refused by the loop below
  if isinstance(mdps, TabularMDP):
    if np.ndim(mdps.rewards) != 3:
      raise InvalidMDPError(
          f"mdps.rewards: expected a stacked batch [B, S, A], got shape "
          f"{tuple(np.shape(mdps.rewards))}")
    b = np.shape(mdps.rewards)[0]
  else:
    b = np.shape(paths[0][1])[0] if np.ndim(paths[0][1]) else None
  for path, x in paths:
    if np.ndim(x) < 1 or np.shape(x)[0] != b:
      raise InvalidMDPError(
          f"mdps{jax.tree_util.keystr(path)}: expected a leading batch axis B={b}, "
          f"got shape {tuple(np.shape(x))}")
  return int(cast(int, b))  # not None: the loop refused a 0-d first leaf


def make_batched(solver: Callable[..., Any], *, strategy: str = "auto",
                 **options: Any) -> Callable[..., Any]:
  """The jitted batched form of a one-MDP solver (no chunking, sharding or disk).

  ``make_batched(solver, **options)(mdps, *args, **kwargs)`` computes, for
  every ``i < B``, ``solver(mdps[i], *args[i], **options, **kwargs[i])`` in one
  compiled program and stacks the results along a new leading axis ``B``. It
  is the batched function :func:`jaxrl_dp.batch.solve` runs on each chunk.

  Args:
    solver: a function of ONE MDP returning a pytree of arrays (e.g.
      :func:`jaxrl_dp.value_iteration`).
    strategy: ``"vmap"`` (``jax.vmap``: one fused program, the right choice on
      GPU/TPU; an iterative solver's ``while_loop`` runs until the slowest
      MDP has converged), ``"map"`` (``jax.lax.map``: each MDP stops at its
      own iteration count, faster on CPU) or ``"auto"`` (``"map"`` when
      ``jax.default_backend()`` is ``"cpu"`` at this call, else ``"vmap"``).
    **options: options bound to every call of ``solver`` (static ones such as
      ``max_iters`` or ``horizon`` included); array options become constants of
      the program.

  Returns:
    A ``jax.jit``-compiled function ``batched(mdps, *args, **kwargs)``:

      * ``mdps``: a stacked :class:`~jaxrl_dp.TabularMDP`, every leaf with a
        leading axis ``B`` (``probs [B, S, A, K]``, ``rewards [B, S, A]``,
        ``discount [B]``, ...), e.g. from :func:`jaxrl_dp.stack` (or another
        model pytree whose every leaf has the leading axis ``B``);
      * ``args`` / ``kwargs``: optional per-MDP arguments, pytrees whose every
        leaf has the leading axis ``B`` (e.g. a policy ``[B, S, A]``); they are
        passed to ``solver`` after the MDP;
      * returns the solver's result pytree with a leading axis ``B`` on every
        leaf (for :func:`~jaxrl_dp.value_iteration`: ``values [B, S]``,
        ``q [B, S, A]``, ``policy int32 [B, S]``, ``iterations [B]``, ...), as
        JAX arrays (no host round trip). It can be called inside the caller's
        own ``jit``/``vmap``.

    Calls with equal ``solver`` / ``options`` / ``strategy`` (compared by
    :func:`cache_token`) return the same jitted function, so repeated calls
    do not recompile. No input validation beyond shapes: validate with
    :func:`jaxrl_dp.validate_mdp` on the host, or use
    :func:`jaxrl_dp.batch.solve`.

  Raises:
    TypeError: ``solver`` is not callable.
    InvalidMDPError: a bad ``strategy``; at call time, ``mdps`` that is not a
      stacked batch (a leaf without the leading axis ``B``).

  Example::

    run = batch.make_batched(value_iteration, strategy="vmap", tol=1e-6)
    sol = run(jaxrl_dp.stack(mdps))    # sol.values [B, S]
  """
  if not callable(solver):
    raise TypeError(f"solver: expected a callable taking one MDP, got {type(solver).__name__}")
  strategy = resolve_strategy(strategy, jax.default_backend())
  key = (cache_token(solver), cache_token(options), strategy)
  fn = _BATCHED.get(key)
  if fn is None:
    fn = jax.jit(_batched_call(solver, options, strategy))
    remember(_BATCHED, key, fn)
  return fn


def _batched_call(solver, options, strategy):
  def batched(mdps, *args, **kwargs):
    check_stacked(mdps)
    names = tuple(kwargs)

    def one(mdp, *xs):
      pos, kw = xs[:len(args)], dict(zip(names, xs[len(args):]))
      return solver(mdp, *pos, **options, **kw)

    return map_over_batch(one, strategy)(mdps, *args, *(kwargs[n] for n in names))

  batched.__name__ = f"batched_{getattr(solver, '__name__', type(solver).__name__)}"
  return batched


def remember(cache: dict, key, value, size: int = CACHE_SIZE) -> None:
  """Inserts into an insertion-ordered cache, evicting the oldest entries."""
  cache[key] = value
  while len(cache) > size:
    cache.pop(next(iter(cache)))


# ----------------------------------------------------------------- cache keys
def array_digest(value) -> str:
  """A description of an array by shape, dtype and a sha256 of its bytes."""
  arr = np.ascontiguousarray(np.asarray(value))
  digest = hashlib.sha256(arr.data).hexdigest()
  return f"array(shape={arr.shape}, dtype={arr.dtype}, sha256={digest})"


_MAX_DEPTH = 12


def _object_state(value) -> dict | None:
  """The attributes of an object (``__dict__`` and ``__slots__``), or None
  when it has neither."""
  state = {}
  for cls in type(value).__mro__:
    for name in getattr(cls, "__slots__", ()):
      if isinstance(name, str) and name not in ("__dict__", "__weakref__"):
        try:
          state[f"slot:{name}"] = getattr(value, name)
        except AttributeError:  # an unset slot
          state[f"slot:{name}"] = "<unset>"
  if hasattr(value, "__dict__"):
    try:
      state.update(vars(value))
    except TypeError:
      pass
  return state if state or hasattr(value, "__dict__") else None


def cache_token(value, _depth: int = 0):
  """A hashable key that changes whenever ``value`` could compute differently.

  * arrays: shape, dtype and a sha256 of the contents;
  * dicts, lists, tuples: their items' tokens;
  * ``functools.partial``: the function's token and the bound arguments';
  * Python functions: their code object and module globals (by identity) and
    the tokens of their closure cells and defaults: a closure whose captured
    value was re-bound gets a new key, and a lambda re-created with equal
    captured values gets the same key (no recompilation);
  * bound methods: the function and the token of ``__self__``;
  * objects hashed by identity (callable or not, e.g. a captured config):
    their type and the token of their attributes (``__dict__`` and
    ``__slots__``), so that mutating one gives a new key;
  * other hashable values: themselves; unhashable pytrees: their structure and
    leaves' tokens (an ``id`` could be reused by a later object).
  """
  d = _depth + 1
  if d > _MAX_DEPTH:
    return ("deep", id(value), type(value).__qualname__)
  if isinstance(value, functools.partial):
    return ("partial", cache_token(value.func, d), cache_token(value.args, d),
            cache_token(value.keywords or {}, d))
  if isinstance(value, dict):
    return ("dict", tuple((repr(k), cache_token(value[k], d)) for k in
                          sorted(value, key=repr)))
  if isinstance(value, (tuple, list)):
    return (type(value).__name__, tuple(cache_token(v, d) for v in value))
  if isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer):
    return array_digest(value)
  if isinstance(value, types.FunctionType):
    cells = []
    for c in value.__closure__ or ():
      try:
        cells.append(cache_token(c.cell_contents, d))
      except ValueError:  # an empty cell
        cells.append("<empty cell>")
    # The code object, not the function object: a lambda re-created with the
    # same captured values (e.g. inside a loop) reuses the compiled program.
    return ("function", value.__code__, id(value.__globals__), tuple(cells),
            cache_token(value.__defaults__, d), cache_token(value.__kwdefaults__, d))
  if isinstance(value, types.MethodType):
    return ("method", cache_token(value.__func__, d), cache_token(value.__self__, d))
  if (type(value).__hash__ is object.__hash__
      and not isinstance(value, (type, types.ModuleType))):
    # Hashed by identity, so mutable: its state, not its identity (a
    # captured config object whose ``tol`` was changed kept the key, and
    # ``batch.solve`` ran the program compiled for the old value).
    state = _object_state(value)
    if state is not None:
      return ("object", type(value), cache_token(state, d))
  try:
    hash(value)
    return value
  except TypeError:
    pass
  leaves, treedef = jax.tree_util.tree_flatten(value)
  if not (len(leaves) == 1 and leaves[0] is value):
    try:
      token = ("tree", treedef, tuple(cache_token(x, d) for x in leaves))
      hash(token)
      return token
    except TypeError:  # unhashable static (aux) data
      pass
  return ("id", id(value), repr(value))
