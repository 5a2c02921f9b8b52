"""Matrix-free MDPs: transitions and rewards from a pure function, never stored.

A :class:`FunctionalMDP` holds a jittable function

  ``fn(state int32 [], action int32 [], params) -> (next_states int32 [K],
  probs [K], reward [] or [K])``

and the sizes ``S`` (states), ``A`` (actions) and ``K`` (next-state slots per
``(s, a)``). A reward of shape ``[K]`` is a per-slot reward ``r(s, a, s'_k)``;
the model's reward is then its expectation ``sum_k p_k r_k``, computed in the
model's dtype from the same call (slots with ``p_k = 0`` add nothing, whatever
their reward). Unused slots have probability 0 and any index in ``[0, S)``.

The backups evaluate ``fn`` on static blocks of ``block_size`` consecutive
states (``jax.vmap`` over the block and the actions, ``lax.map`` over the
blocks), so a sweep holds ``O(block_size * A * K)`` transition entries at a
time and only ``[S]`` value vectors (and ``[S, A]`` Q tables where a result
has one) at full size. Every number a certificate needs (the largest row sum,
the number of nonzero terms of one expectation, ``max |row sum - 1|``) is
computed from the probabilities the same function returns, in the same dtype
and blocks (:meth:`FunctionalOperator.rounding`): the exact operator whose
fixed point the bounds are about is the one these computed ``probs`` and
rewards define (``fn`` must be deterministic).

The model is a pytree: ``params`` (any pytree of arrays), ``discount`` and an
``[S]`` ``initial`` array are leaves, so a model can be passed through
``jax.jit``, ``jax.vmap`` (e.g. over a batch of parameters) and differentiated
with respect to ``params`` (forward mode through the iterations; the finite
horizon solve and a fixed number of sweeps also in reverse mode). ``fn``,
the sizes, ``action_mask`` (a function) and ``block_size`` are static: define
``fn`` once (a module-level function), since a new function object compiles
anew.

:class:`FunctionalOperator` is the model's Bellman operator with the methods
of :class:`~jaxrl_dp.core.operators.NominalOperator`, so every protocol solver
(value iteration sup/span, Gauss-Seidel, Anderson, anchored) runs on it
unchanged (:mod:`jaxrl_dp.core.functional_solvers` holds the glue the
solvers' entry points call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InsufficientMemoryError, InvalidMDPError
from jaxrl_dp.core.iteration import (BackupRounding, discount_ok,
                                     rounding_from_stats, row_bounds)
from jaxrl_dp.core.memory import available_memory_bytes
from jaxrl_dp.core.mdp import (ROW_SUM_ATOL, TabularMDP, check_discount,
                               float_dtype)
from jaxrl_dp.core.options import check_int, check_tol, is_concrete

__all__ = ["FunctionalMDP", "FunctionalOperator", "DEFAULT_BLOCK_SIZE",
           "check_functional_input", "is_functional", "validate_functional"]

#: Default number of states evaluated together (fewer when ``S`` is smaller).
DEFAULT_BLOCK_SIZE = 1 << 14

#: ``materialize()`` refuses models whose arrays need more than this fraction
#: of the available memory.
MATERIALIZE_FRACTION = 0.5


@flax.struct.dataclass
class FunctionalMDP:
  """A matrix-free MDP (see the module docstring).

  Build it with :meth:`create` (which checks the arguments and the shapes
  ``fn`` returns); the fields are:

  Attributes:
    fn: ``(state, action, params) -> (next_states int [K], probs [K], reward
      [] or [K])``, pure and jittable (static).
    num_states: ``S`` (static).
    num_actions: ``A`` (static).
    fan_out: ``K``, next-state slots per ``(s, a)`` (static).
    params: a pytree of arrays passed to ``fn`` (a leaf of the model).
    discount: ``[]`` the discount factor.
    initial: ``None`` (uniform over states, or ``initial_fn``), an ``[S]``
      distribution, or an ``int32 []`` start state (one-hot: no ``[S]`` array
      is stored).
    initial_fn: ``None`` or ``(states int32 [B], params) -> probs [B]`` giving
      the start distribution blockwise (static).
    action_mask: ``None`` (every action valid) or ``(state, params) -> bool
      [A]`` (static).
    block_size: states per evaluated block (static).
    dtype: the float dtype of probabilities, rewards and values (static).
    mesh: ``None``, or a 1-D ``jax.sharding.Mesh`` (axis ``"states"``) over
      which full sweeps are split: each device evaluates ``S / n``
      consecutive states and the rows are gathered (set by
      :func:`jaxrl_dp.core.sharding.shard_states`; static).
  """

  fn: Callable = flax.struct.field(pytree_node=False)
  num_states: int = flax.struct.field(pytree_node=False)
  num_actions: int = flax.struct.field(pytree_node=False)
  fan_out: int = flax.struct.field(pytree_node=False)
  params: Any
  discount: jax.Array
  initial: Optional[jax.Array] = None
  initial_fn: Optional[Callable] = flax.struct.field(pytree_node=False, default=None)
  action_mask_fn: Optional[Callable] = flax.struct.field(pytree_node=False, default=None)
  block_size: int = flax.struct.field(pytree_node=False, default=DEFAULT_BLOCK_SIZE)
  dtype: Any = flax.struct.field(pytree_node=False, default=np.dtype(np.float32))
  mesh: Any = flax.struct.field(pytree_node=False, default=None)

  if TYPE_CHECKING:  # added by flax.struct.dataclass at run time
    def replace(self, **updates: Any) -> FunctionalMDP: ...

  # ---------------------------------------------------------------- create
  @classmethod
  def create(cls, fn: Callable, num_states: int, num_actions: int, fan_out: int,
             discount, *, params: Any = None, initial: Any = None,
             action_mask: Optional[Callable] = None,
             block_size: Optional[int] = None, dtype=None) -> "FunctionalMDP":
    """Checks the arguments and builds the model.

    Args:
      fn: ``fn(state, action, params) -> (next_states [K], probs [K], reward
        [] or [K])`` (``state`` and ``action`` are ``int32 []``).
      num_states, num_actions, fan_out: ``S``, ``A``, ``K``: Python ints
        ``>= 1`` (``S < 2**31``).
      discount: a real number in ``[0, 1]`` (1 only for finite horizons).
      params: a pytree of arrays for ``fn`` (default None).
      initial: ``None`` (uniform), an int start state (one-hot), an ``[S]``
        distribution, or a function ``(states int32 [B], params) -> [B]``.
      action_mask: ``None`` or ``(state, params) -> bool [A]``.
      block_size: states per block; default ``min(S, 16384)``.
      dtype: float dtype; default float32 (float64 under
        ``jax_enable_x64``).

    Returns:
      The model (``fn``'s output shapes checked by ``jax.eval_shape``; use
      :func:`validate_functional` to sweep its values).

    Raises:
      InvalidMDPError: a bad size, discount, initial state or distribution,
        or ``fn`` / ``action_mask`` returning the wrong shapes or dtypes.
    """
    if not callable(fn):
      raise InvalidMDPError(f"fn = {fn!r}: expected a function (state, action, params)")
    s = check_int("num_states", num_states, maximum=2**31 - 1)
    a = check_int("num_actions", num_actions)
    k = check_int("fan_out", fan_out)
    bs = min(s, DEFAULT_BLOCK_SIZE) if block_size is None else check_int(
        "block_size", block_size)
    bs = min(bs, s)
    dt = float_dtype(dtype)
    check_discount(discount, infinite_horizon=False)
    disc = jnp.asarray(discount, dt)
    init, init_fn = None, None
    if callable(initial):
      init_fn = initial
    elif initial is not None:
      arr = np.asarray(initial) if is_concrete(initial) else initial
      if arr.ndim == 0 and jnp.issubdtype(arr.dtype, jnp.integer):
        if is_concrete(arr) and not 0 <= int(arr) < s:
          raise InvalidMDPError(f"initial = {int(arr)}: expected a start state in [0, {s})")
        init = jnp.asarray(arr, jnp.int32)
      elif arr.shape == (s,):
        init = jnp.asarray(arr, dt)
      else:
        raise InvalidMDPError(
            f"initial: expected None, an int start state, an [S] = ({s},) "
            f"distribution or a function, got shape {tuple(arr.shape)}")
    if action_mask is not None and not callable(action_mask):
      raise InvalidMDPError(
          f"action_mask = {action_mask!r}: expected None or a function (state, params) -> "
          f"bool [A] (use FunctionalMDP for functions; TabularMDP takes arrays)")
    mdp = cls(fn=fn, num_states=s, num_actions=a, fan_out=k, params=params,
              discount=disc, initial=init, initial_fn=init_fn,
              action_mask_fn=action_mask, block_size=bs, dtype=dt)
    mdp._check_signature()
    return mdp

  def _check_signature(self) -> None:
    """Checks the shapes and dtypes ``fn`` (and ``action_mask``) return."""
    k = self.fan_out
    st = jax.ShapeDtypeStruct((), jnp.int32)
    try:
      out = jax.eval_shape(self.fn, st, st, self.params)
    except Exception as e:  # noqa: BLE001 - report what fn raised
      raise InvalidMDPError(f"fn(state, action, params) failed on int32 scalars: {e}") from e
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
      raise InvalidMDPError(
          f"fn: expected a tuple (next_states [K], probs [K], reward), got {out}")
    ns, p, r = out
    if ns.shape != (k,) or not jnp.issubdtype(ns.dtype, jnp.integer):
      raise InvalidMDPError(
          f"fn: next_states must be an int array of shape [K] = ({k},), got "
          f"{ns.dtype}{list(ns.shape)}")
    if p.shape != (k,) or not jnp.issubdtype(p.dtype, jnp.floating):
      raise InvalidMDPError(
          f"fn: probs must be a float array of shape [K] = ({k},), got {p.dtype}{list(p.shape)}")
    if r.shape not in ((), (k,)) or not (jnp.issubdtype(r.dtype, jnp.floating)
                                         or jnp.issubdtype(r.dtype, jnp.integer)):
      raise InvalidMDPError(
          f"fn: reward must be a real scalar or a per-slot [K] = ({k},) array, got "
          f"{r.dtype}{list(r.shape)}")
    if self.action_mask_fn is not None:
      m = jax.eval_shape(self.action_mask_fn, st, self.params)
      if m.shape != (self.num_actions,) or m.dtype != jnp.bool_:
        raise InvalidMDPError(
            f"action_mask: must return bool [A] = ({self.num_actions},), got "
            f"{m.dtype}{list(m.shape)}")

  # ---------------------------------------------------------------- shapes
  @property
  def K(self) -> int:  # noqa: N802 - the issue's name
    """``K``, an alias of :attr:`fan_out`."""
    return self.fan_out

  @property
  def num_blocks(self) -> int:
    return -(-self.num_states // self.block_size)

  # ------------------------------------------------------------ evaluation
  def transitions(self, states: jax.Array):
    """The model at ``states int32 [B]``, all actions.

    Returns:
      ``(next_states int32 [B, A, K], probs [B, A, K], rewards [B, A], mask
      bool [B, A])`` in the model's dtype (per-slot rewards reduced to their
      expectation).
    """
    actions = jnp.arange(self.num_actions, dtype=jnp.int32)
    f = jax.vmap(jax.vmap(self.fn, (None, 0, None)), (0, None, None))
    ns, p, r = f(states, actions, self.params)
    p = p.astype(self.dtype)
    r = r.astype(self.dtype)
    if r.ndim == 3:  # per-slot rewards: their expectation (zero-probability slots add 0)
      r = jnp.sum(jnp.where(p == 0, 0.0, p * r), axis=-1)
    return ns.astype(jnp.int32), p, r, self.mask(states)

  def mask(self, states: jax.Array) -> jax.Array:
    """``bool [B, A]`` valid actions at ``states int32 [B]``."""
    if self.action_mask_fn is None:
      return jnp.ones((states.shape[0], self.num_actions), bool)
    return jax.vmap(self.action_mask_fn, (0, None))(states, self.params)

  def map_states(self, f: Callable, start=0, count: Optional[int] = None):
    """``f(states int32 [B]) -> pytree of [B, ...]`` over ``count`` (static,
    default ``S``) consecutive states from ``start``, in blocks of at most
    ``block_size`` (``lax.map``); the last block's states beyond the range
    are clamped to the last state and dropped. Returns the ``[count, ...]``
    rows."""
    if count is None and self.mesh is not None:  # a full sweep split over devices
      out = self._sharded(lambda m, st, n: m.map_states(f, st, n))
      return jax.tree_util.tree_map(
          lambda x: x.reshape((self.num_states,) + x.shape[2:]), out)
    count = self.num_states if count is None else count
    bs = min(self.block_size, count)
    nb = -(-count // bs)
    last = start + count - 1
    offs = jnp.arange(bs, dtype=jnp.int32)

    def block(b):
      return f(jnp.minimum(start + b * bs + offs, last).astype(jnp.int32))

    if nb == 1:
      return block(jnp.asarray(0, jnp.int32))
    out = jax.lax.map(block, jnp.arange(nb, dtype=jnp.int32))
    return jax.tree_util.tree_map(
        lambda x: x.reshape((nb * bs,) + x.shape[2:])[:count], out)

  def reduce_states(self, f: Callable, combine: Callable, start=0,
                    count: Optional[int] = None):
    """``combine`` over the blocks of ``f(states [B], valid bool [B])``'s
    per-block reductions (``f`` returns a pytree of scalars; ``combine``
    reduces each leaf's ``[num_blocks]`` vector, e.g. ``jnp.max``), over
    ``count`` (static, default ``S``) states from ``start``."""
    if count is None and self.mesh is not None:
      per_device = self._sharded(lambda m, st, n: m.reduce_states(f, combine, st, n))
      return jax.tree_util.tree_map(combine, per_device)
    count = self.num_states if count is None else count
    bs = min(self.block_size, count)
    nb = -(-count // bs)
    end = start + count
    offs = jnp.arange(bs, dtype=jnp.int32)

    def block(b):
      st = start + b * bs + offs
      return f(jnp.minimum(st, end - 1).astype(jnp.int32), st < end)

    out = jax.lax.map(block, jnp.arange(nb, dtype=jnp.int32))
    return jax.tree_util.tree_map(combine, out)

  def _sharded(self, local: Callable):
    """``local(model, start, count)`` on each device's ``S / n`` consecutive
    states: ``jax.vmap`` over the ``n`` ranges, the range axis constrained to
    the mesh's state axis (XLA's SPMD partitioner gives each device its
    range; closed-over arrays, e.g. the value vector, are gathered where
    sharded). Returns the results stacked along a leading ``[n]`` axis."""
    axis = self.mesh.axis_names[0]
    n = self.mesh.size
    per = self.num_states // n
    unsharded = self.replace(mesh=None)
    split = NamedSharding(self.mesh, PartitionSpec(axis))
    starts = jax.lax.with_sharding_constraint(
        jnp.arange(n, dtype=jnp.int32) * per, split)
    out = jax.vmap(lambda st: local(unsharded, st, per))(starts)
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, split), out)

  def rewards_table(self) -> jax.Array:
    """``[S, A]`` expected rewards (materialized: ``O(S A)``)."""
    return self.map_states(lambda st: self.transitions(st)[2])

  def action_mask_table(self) -> jax.Array:
    """``bool [S, A]`` valid actions (materialized)."""
    return self.map_states(self.mask)

  def initial_distribution(self) -> jax.Array:
    """``[S]`` start distribution (materialized)."""
    s = self.num_states
    initial_fn = self.initial_fn
    if initial_fn is not None:
      return self.map_states(lambda st: initial_fn(st, self.params).astype(self.dtype))
    if self.initial is None:
      return jnp.full((s,), 1.0 / s, self.dtype)
    if self.initial.ndim == 0:
      return jax.nn.one_hot(self.initial, s, dtype=self.dtype)
    return self.initial

  # ------------------------------------------------------------ converters
  def materialize(self, *, validate: bool = True) -> TabularMDP:
    """The same model as a sparse :class:`TabularMDP` (small instances).

    The arrays ``next_states``, ``probs [S, A, K]`` and ``rewards [S, A]``
    (the expected rewards exactly as the backups compute them) are built
    blockwise; the size is checked first against the available memory.

    Raises:
      InsufficientMemoryError: the arrays would need more than half the
        available memory (solve the FunctionalMDP directly instead).
      InvalidMDPError: from the sparse constructor's validation.
    """
    s, a, k = self.num_states, self.num_actions, self.fan_out
    item = np.dtype(self.dtype).itemsize
    need = 2 * (s * a * k * (4 + item) + s * a * (item + 1))  # device + host copy
    avail = available_memory_bytes()
    if avail is not None and need > MATERIALIZE_FRACTION * avail:
      raise InsufficientMemoryError(
          f"FunctionalMDP.materialize(): needs about {need / 2**30:.1f} GiB for "
          f"next_states/probs [S, A, K] = [{s}, {a}, {k}] but only "
          f"{avail / 2**30:.1f} GiB is available: solve the FunctionalMDP "
          f"directly (value_iteration, policy_evaluation(method='iterative'), "
          f"finite_horizon, random_q accept it, in O(S) memory)")
    ns, p, r, m = jax.jit(lambda md: md.map_states(md.transitions))(self)
    return TabularMDP.from_sparse(
        np.asarray(ns), np.asarray(p), np.asarray(r), np.asarray(self.discount),
        initial=np.asarray(self.initial_distribution()), action_mask=np.asarray(m),
        validate=validate, dtype=self.dtype)


# ------------------------------------------------------------- validation
_CHECKS = ("next state out of range", "probability negative or not finite",
           "row sum off", "reward not finite")


def _bad_table(mdp: FunctionalMDP, states, atol):
  """``bool [4, B, A]``: which ``(state, action)`` fail each check of
  :data:`_CHECKS`."""
  ns, p, r, _ = mdp.transitions(states)
  s = mdp.num_states
  sums = jnp.sum(p.astype(jnp.float32) if p.dtype == jnp.float16 else p, axis=-1)
  return jnp.stack([jnp.any((ns < 0) | (ns >= s), axis=-1),
                    jnp.any(~jnp.isfinite(p) | (p < 0), axis=-1),
                    ~(jnp.abs(sums - 1) <= atol),
                    ~jnp.isfinite(r)])


def _bad_flags(mdp: FunctionalMDP, states, valid, atol):
  """``int32 [5]``: the first state of the block failing each check (the
  four of :data:`_CHECKS`, then "no valid action"); ``S`` when none."""
  s = mdp.num_states
  bad = jnp.any(_bad_table(mdp, states, atol), axis=-1) & valid[None]  # [4, B]
  no_action = ~jnp.any(mdp.mask(states), axis=-1) & valid
  bad = jnp.concatenate([bad, no_action[None]], axis=0)
  return jnp.min(jnp.where(bad, states[None], s), axis=1).astype(jnp.int32)


def validate_functional(mdp: FunctionalMDP, *, atol: float = ROW_SUM_ATOL,
                        infinite_horizon: bool = False) -> FunctionalMDP:
  """Sweeps ``fn`` over every ``(s, a)`` in jitted blocks and names the first
  bad one.

  Checks, for every state and action: next states in ``[0, S)``,
  probabilities finite and ``>= 0``, ``|sum_k p_k - 1| <= atol``, the
  (expected) reward finite; every state has a valid action; the discount
  (``[0, 1)`` when ``infinite_horizon``); the initial distribution. The
  first failing ``(s, a)`` (in state-major order; the order of the checks
  above breaks ties) is reported with what ``fn`` returns there.

  Args:
    mdp: the model.
    atol: tolerance on the row sums, a finite number ``>= 0``.
    infinite_horizon: require a discount in ``[0, 1)``.

  Returns:
    ``mdp`` unchanged.

  Raises:
    InvalidMDPError: ``"FunctionalMDP: fn(s=.., a=..) ..."`` naming the check
      and the returned values.
  """
  check_tol(atol, "atol")
  check_discount(mdp.discount, infinite_horizon=infinite_horizon)
  s = mdp.num_states
  flags = np.asarray(jax.jit(
      lambda m: m.reduce_states(lambda st, ok: _bad_flags(m, st, ok, atol),
                                lambda x: jnp.min(x, axis=0)))(mdp))
  first = flags[:4]
  if first.min() < s:
    st = int(first.min())  # the first bad state; its first bad action on the host
    table = np.asarray(jax.jit(lambda m, x: _bad_table(m, x, atol))(
        mdp, jnp.asarray([st], jnp.int32)))[:, 0]  # [4, A]
    ac = int(np.argmax(table.any(axis=0)))
    i = int(np.argmax(table[:, ac]))
    ns, p, r = jax.jit(mdp.fn)(jnp.int32(st), jnp.int32(ac), mdp.params)
    raise InvalidMDPError(
        f"FunctionalMDP: fn(state={st}, action={ac}) fails the check "
        f"'{_CHECKS[i]}' (S={s}, atol={atol}): next_states={np.asarray(ns).tolist()}, "
        f"probs={np.asarray(p).tolist()} (sum {float(np.sum(np.asarray(p, np.float64)))!r}), "
        f"reward={np.asarray(r).tolist()}")
  if flags[4] < s:
    raise InvalidMDPError(
        f"FunctionalMDP: action_mask(state={int(flags[4])}) has no valid action: "
        f"expected at least one True per state")
  if mdp.initial is not None and mdp.initial.ndim == 1 or mdp.initial_fn is not None:
    init = np.asarray(mdp.initial_distribution(), np.float64)
    bad = ~np.isfinite(init) | (init < 0)
    if bad.any():
      j = int(np.argmax(bad))
      raise InvalidMDPError(f"initial[{j}] = {init[j]!r}: expected a probability >= 0")
    if abs(init.sum() - 1) > atol:
      raise InvalidMDPError(f"initial sums to {init.sum()!r}: expected 1 within atol={atol}")
  return mdp


# --------------------------------------------------------------- operator
@flax.struct.dataclass
class FunctionalOperator:
  """The Bellman operator of a :class:`FunctionalMDP` (the methods of
  :class:`~jaxrl_dp.core.operators.NominalOperator`), evaluated blockwise.

  Attributes:
    mdp: one :class:`FunctionalMDP`.
  """

  mdp: FunctionalMDP

  @property
  def discount(self) -> jax.Array:
    return self.mdp.discount

  @property
  def num_states(self) -> int:
    return self.mdp.num_states

  @property
  def dtype(self):
    return self.mdp.dtype

  @property
  def action_mask(self) -> jax.Array:
    return self.mdp.action_mask_table()

  def valid(self) -> jax.Array:
    return discount_ok(self.mdp.discount)

  def _q_block(self, v, states):
    ns, p, r, m = self.mdp.transitions(states)
    q = r + self.mdp.discount * bellman.sparse_expectation(v, ns, p)
    return q, m

  def _backup_block(self, v, states):
    q, m = self._q_block(v, states)
    return bellman.masked_max(q, m), q

  def q_values(self, v: jax.Array) -> jax.Array:
    """``v [S] -> q [S, A]``."""
    return self.mdp.map_states(lambda st: self._q_block(v, st)[0])

  def apply(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One optimality backup: ``v [S] -> (T v [S], q [S, A])`` (a caller that
    drops ``q`` lets XLA drop its computation)."""
    return self.mdp.map_states(lambda st: self._backup_block(v, st))

  def apply_values(self, v: jax.Array) -> jax.Array:
    """``T v [S]`` only (no ``[S, A]`` output)."""
    return self.mdp.map_states(lambda st: self._backup_block(v, st)[0])

  def apply_rows(self, v: jax.Array, start, size: int):
    """``(T v [size], q [size, A])`` for the states ``start .. start + size -
    1`` (``start`` traced, clamped to ``[0, S - size]``)."""
    start = jnp.clip(start, 0, self.mdp.num_states - size).astype(jnp.int32)
    return self.mdp.map_states(lambda st: self._backup_block(v, st), start, size)

  def apply_greedy(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v [S] -> (T v [S], int32 [S])``: :meth:`apply`'s values and
    :meth:`greedy` of its ``q``, one fused reduction per block (no ``[S, A]``
    output)."""
    return self.mdp.map_states(
        lambda st: bellman.masked_max_argmax(*self._q_block(v, st)))

  def greedy(self, q: jax.Array) -> jax.Array:
    """``q [S, A] -> int32 [S]``: first maximizer among valid actions."""
    if self.mdp.action_mask_fn is None:
      return jnp.argmax(q, axis=-1).astype(jnp.int32)
    return bellman.greedy_policy(q, self.mdp.action_mask_table())

  def _policy_block(self, v, policy, states):
    ns, p, r, _ = self.mdp.transitions(states)
    pol = policy[states]
    if bellman.is_deterministic_policy(pol):
      idx = pol[:, None, None]
      p_pi = jnp.take_along_axis(p, idx, axis=1)[:, 0]
      ns_pi = jnp.take_along_axis(ns, idx, axis=1)[:, 0]
      r_pi = jnp.take_along_axis(r, pol[:, None], axis=1)[:, 0]
    else:
      b = states.shape[0]
      p_pi = (pol[:, :, None] * p).reshape(b, -1)
      ns_pi = ns.reshape(b, -1)
      r_pi = bellman.policy_value_from_q(r, pol)
    return r_pi + self.mdp.discount * jnp.sum(p_pi * v[ns_pi], axis=1)

  def policy_apply(self, v: jax.Array, policy: jax.Array) -> jax.Array:
    """``T_pi v [S]`` for ``int [S]`` or ``float [S, A]`` policies."""
    return self.mdp.map_states(lambda st: self._policy_block(v, policy, st))

  def _stats(self, policy=None):
    """``(n, sums_max, dev_max, r_max)`` over the rows a backup uses."""
    mdp = self.mdp

    def block(states, ok):
      ns, p, r, m = mdp.transitions(states)
      if policy is None:
        valid = m & ok[:, None]
        n = jnp.max(jnp.where(valid, jnp.sum(p != 0, axis=-1), 0))
        sums = jnp.sum(p, axis=-1)
      else:
        pol = policy[states]
        valid = ok
        if bellman.is_deterministic_policy(pol):
          row = jnp.take_along_axis(p, pol[:, None, None], axis=1)[:, 0]
          n = jnp.max(jnp.where(ok, jnp.sum(row != 0, axis=-1), 0))
        else:
          row = (pol[:, :, None] * p).reshape(states.shape[0], -1)
          n = jnp.max(jnp.where(ok, jnp.sum(row != 0, axis=-1), 0)) + 1
        sums = jnp.sum(row, axis=-1)
      sums_max = jnp.max(jnp.where(valid, sums, 0.0))
      dev_max = jnp.max(jnp.where(valid, jnp.abs(sums - 1.0), 0.0))
      r_max = jnp.max(jnp.where(m & ok[:, None], jnp.abs(r), 0.0))
      return n, sums_max, dev_max, r_max

    return mdp.reduce_states(block, lambda x: jnp.max(x, axis=0))

  def _n_sum(self, policy) -> int:
    k, a = self.mdp.fan_out, self.mdp.num_actions
    if policy is None or bellman.is_deterministic_policy(policy):
      return k
    return a * k + 1

  def rounding(self, policy: Optional[jax.Array] = None) -> BackupRounding:
    """Bound on the rounding of one computed backup (``T``, or ``T_pi``),
    from one blockwise sweep of the probabilities."""
    n, sums_max, dev_max, r_max = self._stats(policy)
    dt = self.mdp.dtype
    _, row_max, _ = row_bounds(n, sums_max, dev_max, self._n_sum(policy), dt)
    stochastic = policy is not None and not bellman.is_deterministic_policy(policy)
    return rounding_from_stats(n, row_max, self.mdp.discount, dt,
                               r_max=r_max if stochastic else None,
                               num_actions=self.mdp.num_actions)

  def modulus(self, policy: Optional[jax.Array] = None) -> jax.Array:
    """``[]`` gamma times the largest row sum (over valid actions)."""
    n, sums_max, dev_max, _ = self._stats(policy)
    _, row_max, _ = row_bounds(n, sums_max, dev_max, self._n_sum(policy), self.mdp.dtype)
    return self.mdp.discount * row_max

  def reward_max(self) -> jax.Array:
    """``[]`` the largest ``|r(s, a)|`` over valid actions (one sweep)."""
    return self._stats(None)[3]

  def row_deviation(self) -> jax.Array:
    """``[]`` bound on ``max |sum_k p_k - 1|`` over valid rows."""
    n, sums_max, dev_max, _ = self._stats(None)
    return row_bounds(n, sums_max, dev_max, self._n_sum(None), self.mdp.dtype)[2]


# ------------------------------------------------------------------ checks
def is_functional(mdp: Any) -> bool:
  return isinstance(mdp, FunctionalMDP)


def check_functional_input(mdp: Any, *, infinite_horizon: bool) -> None:
  """Boundary check of a solver taking a :class:`FunctionalMDP` (the
  discount, when concrete)."""
  if not isinstance(mdp, FunctionalMDP):
    raise InvalidMDPError(f"mdp: expected a FunctionalMDP, got {type(mdp).__name__}")
  check_discount(mdp.discount, infinite_horizon=infinite_horizon)
