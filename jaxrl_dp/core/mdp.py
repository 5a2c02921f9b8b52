"""The tabular MDP model: one immutable pytree, two transition layouts.

Shapes use letters: B batch, S states, A actions, K fan-out (K = S for the
dense layout).

Layouts
  * dense:  ``probs [S, A, S]``; ``next_states`` is ``None``.
  * sparse: ``next_states int32 [S, A, K]`` and ``probs [S, A, K]``; unused
    slots have probability 0 and any valid index. Deterministic MDPs are K = 1.

The layout is part of the pytree *structure* (``next_states`` is ``None`` or an
array), so it is static under ``jax.jit`` and ``jax.vmap``: a dense and a sparse
MDP never share a compiled program, and no kernel converts one layout into the
other behind the user's back (``to_dense`` / ``to_sparse`` are explicit).

A batch of MDPs is the same class with a leading axis on every leaf (see
:func:`jaxrl_dp.stack`); the kernels are written for one MDP and batched by
``jax.vmap``.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.options import _real_array, as_index_array, check_tol, is_concrete

#: Default tolerance on ``|sum_k probs[s, a, k] - 1|`` (and on ``sum(initial)``).
ROW_SUM_ATOL = 1e-5


def default_float_dtype() -> Any:
  """float32, or float64 when ``jax_enable_x64`` is on.

  Returns:
    ``jnp.float32`` or ``jnp.float64``: the dtype the constructors cast to by
    default.
  """
  # jax.config's options are properties added at runtime (unknown to mypy).
  return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32  # type: ignore[attr-defined]


@flax.struct.dataclass
class TabularMDP:
  """A finite MDP (or a batch of them, with leading axes on every field).

  Attributes:
    probs: transition probabilities, ``[S, A, S]`` (dense) or ``[S, A, K]``
      (sparse, aligned with ``next_states``).
    rewards: expected immediate reward ``[S, A]``. When per-transition rewards
      are given this is their expectation under ``probs``.
    discount: scalar discount factor (an array, so it can be traced/vmapped).
    initial: start-state distribution ``[S]``.
    action_mask: bool ``[S, A]``; ``False`` marks an invalid (or padded) action,
      which never wins a max and gets no probability from a uniform policy.
    next_states: ``int32 [S, A, K]`` for the sparse layout, ``None`` for dense.
    transition_rewards: optional reward depending on the next state,
      ``[S, A, S]`` (dense) or ``[S, A, K]`` (sparse), or ``None``.
  """

  probs: jax.Array
  rewards: jax.Array
  discount: jax.Array
  initial: jax.Array
  action_mask: jax.Array
  next_states: Optional[jax.Array] = None
  transition_rewards: Optional[jax.Array] = None

  if TYPE_CHECKING:  # added by flax.struct.dataclass at run time
    def replace(self, **updates: Any) -> TabularMDP: ...

  # ------------------------------------------------------------------ shapes
  @property
  def is_sparse(self) -> bool:
    return self.next_states is not None

  @property
  def num_states(self) -> int:
    return self.rewards.shape[-2]

  @property
  def num_actions(self) -> int:
    return self.rewards.shape[-1]

  @property
  def fan_out(self) -> int:
    """K: next-state slots per (s, a) (equals S for the dense layout)."""
    return self.probs.shape[-1]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return tuple(self.rewards.shape[:-2])

  # ------------------------------------------------------------ constructors
  @classmethod
  def from_dense(cls, probs, rewards, discount, *, initial=None,
                 action_mask=None, validate: bool = True,
                 atol: float = ROW_SUM_ATOL, dtype=None) -> "TabularMDP":
    """Builds a dense MDP.

    Args:
      probs: ``[S, A, S]`` with ``probs[s, a, s']`` = P(s' | s, a).
      rewards: ``[S, A]`` expected rewards, or ``[S, A, S]`` rewards r(s, a, s')
        (stored as ``transition_rewards``; ``rewards`` becomes their
        expectation).
      discount: scalar in [0, 1] (1 is only legal for finite-horizon solves).
      initial: ``[S]`` start distribution; default uniform over states.
      action_mask: bool ``[S, A]``; default all valid.
      validate: run the host-side validator (raises :class:`InvalidMDPError`).
      atol: tolerance on row sums of ``probs`` and on ``sum(initial)``: a
        finite number ``>= 0`` (NaN, inf, negative values are refused).
      dtype: a floating dtype; default float32 (float64 under
        ``jax_enable_x64``; float64 without it is refused).

    Dtypes: ``probs``, ``rewards``, ``discount`` and ``initial`` may be given
    as lists or arrays of any real type (int and bool become floats); they are
    cast to ``dtype`` first and validated after the cast, so a reward of
    ``1e300`` is refused in float32 (naming the entry) instead of becoming
    inf. Complex input, strings and ``None`` are refused. Nothing is copied
    twice: at most one host cast, then the transfer to the device.

    Examples:
      Two states, two actions: in state 0, action 0 stays (reward 1) and
      action 1 moves to state 1 (reward 0); state 1 is absorbing, reward 2
      for action 0 and 0 for action 1.

      >>> import numpy as np
      >>> import jaxrl_dp as jd
      >>> probs = np.zeros((2, 2, 2))
      >>> probs[0, 0, 0] = probs[0, 1, 1] = probs[1, :, 1] = 1.0
      >>> rewards = np.array([[1.0, 0.0], [2.0, 0.0]])
      >>> mdp = jd.TabularMDP.from_dense(probs, rewards, discount=0.9)
      >>> mdp.num_states, mdp.num_actions, mdp.is_sparse
      (2, 2, False)
      >>> str(mdp.rewards.dtype)
      'float32'
    """
    return cls._build(probs, rewards, discount, initial, action_mask,
                      None, validate, atol, dtype)

  @classmethod
  def from_sparse(cls, next_states, probs, rewards, discount, *, initial=None,
                  action_mask=None, validate: bool = True,
                  atol: float = ROW_SUM_ATOL, dtype=None) -> "TabularMDP":
    """Builds a sparse MDP with fixed fan-out K.

    Args:
      next_states: int ``[S, A, K]`` next-state indices in ``[0, S)``.
      probs: ``[S, A, K]`` probabilities aligned with ``next_states``.
      rewards: ``[S, A]`` expected rewards or ``[S, A, K]`` per-transition.
      discount, initial, action_mask, validate, atol, dtype: as in
        :meth:`from_dense`.
    """
    if next_states is None or isinstance(next_states, (str, bytes)):
      raise InvalidMDPError(
          f"next_states = {next_states!r}: expected an int array [S, A, K]")
    return cls._build(probs, rewards, discount, initial, action_mask,
                      _real_array("next_states", next_states), validate, atol,
                      dtype)

  @classmethod
  def from_deterministic(cls, next_state, rewards, discount=1.0, *,
                         initial=None, action_mask=None,
                         validate: bool = True, dtype=None) -> "TabularMDP":
    """Builds a deterministic MDP (sparse layout, K = 1).

    A ``-1`` next state means the episode terminates: if any is present, one
    absorbing zero-reward state is appended at index ``S`` (so the MDP has
    ``S + 1`` states) and every ``-1`` points to it.

    Args:
      next_state: int ``[S, A]``; ``-1`` for termination.
      rewards: ``[S, A]``, any real dtype (int and bool rewards, as in some
        BRIDGE files, are cast to ``dtype``).
      discount: scalar; default 1 (finite-horizon use, as in BRIDGE).
      initial: ``[S]`` (or ``[S + 1]``) start distribution; default one-hot on
        state 0, the BRIDGE convention.
      action_mask: bool ``[S, A]`` (extended with all-valid for the terminal).
      validate, dtype: as in :meth:`from_dense`.
    """
    ns = _real_array("next_state", next_state)
    r = _real_array("rewards", rewards)
    if ns.ndim != 2:
      raise InvalidMDPError(
          f"next_state: expected rank 2 [S, A], got shape {ns.shape}")
    if not np.issubdtype(ns.dtype, np.integer):
      raise InvalidMDPError(
          f"next_state: expected an integer array, got dtype {ns.dtype}")
    if ns.size == 0:
      raise InvalidMDPError(f"next_state: empty array of shape {ns.shape}")
    s, a = ns.shape
    bad = (ns < -1) | (ns >= s)
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise InvalidMDPError(
          f"next_state{list(idx)} = {int(ns[idx])}: expected -1 (terminal) or "
          f"an index in [0, {s})")
    if r.shape != (s, a):
      raise InvalidMDPError(
          f"rewards: expected shape {(s, a)} matching next_state, got {r.shape}")
    terminal = bool((ns == -1).any())
    if terminal:
      ns = np.where(ns == -1, s, ns)
      ns = np.concatenate([ns, np.full((1, a), s, ns.dtype)], axis=0)
      r = np.concatenate([r, np.zeros((1, a), r.dtype)], axis=0)
      if action_mask is not None:
        action_mask = np.concatenate(
            [np.asarray(action_mask), np.ones((1, a), bool)], axis=0)
    n = ns.shape[0]
    if initial is None:
      initial = np.zeros(n)
      initial[0] = 1.0
    else:
      initial = _real_array("initial", initial)
      if terminal and initial.shape == (s,):
        initial = np.concatenate([initial, np.zeros(1, initial.dtype)])
    return cls._build(np.ones((n, a, 1)), r, discount, initial, action_mask,
                      ns[..., None], validate, ROW_SUM_ATOL, dtype)

  @classmethod
  def _build(cls, probs, rewards, discount, initial, action_mask, next_states,
             validate, atol, dtype):
    # Everything float is cast to the storage dtype FIRST and validated after
    # the cast (so what is checked is what the solvers will see); integer and
    # bool inputs become floats; complex, strings and objects are refused.
    dtype = float_dtype(dtype)
    atol = check_tol(atol, "atol")
    probs = cast_float("probs", probs, dtype, check=validate)
    if probs.ndim != 3:
      raise InvalidMDPError(
          f"probs: expected rank 3 [S, A, {'K' if next_states is not None else 'S'}],"
          f" got shape {probs.shape}")
    s, a = probs.shape[:2]
    rewards = cast_float("rewards", rewards, dtype, check=validate)
    transition_rewards = None
    if rewards.ndim == 3:
      if rewards.shape != probs.shape:
        raise InvalidMDPError(
            f"rewards: per-transition rewards must have the shape of probs "
            f"{probs.shape}, got {rewards.shape}")
      transition_rewards = rewards
      with np.errstate(invalid="ignore", over="ignore"):
        expected = np.sum(np.where(probs == 0, 0.0, probs * rewards), axis=-1,
                          dtype=np.float64)
      rewards = cast_float("rewards (expectation of the per-transition rewards)",
                           expected, dtype, check=validate)
    check_discount(discount, infinite_horizon=False)
    discount = cast_float("discount", discount, dtype, check=validate)
    if initial is None:
      initial = np.full((s,), 1.0 / max(s, 1))
    initial = cast_float("initial", initial, dtype, check=validate)
    if action_mask is None:
      action_mask = np.ones((s, a), bool)
    mdp = cls(
        probs=probs, rewards=rewards, discount=discount, initial=initial,
        action_mask=np.asarray(action_mask),
        next_states=None if next_states is None else np.asarray(next_states),
        transition_rewards=transition_rewards)
    if validate:
      validate_mdp(mdp, atol=atol)
    # next_states are range-checked above (on their original integer values)
    # before this int32 cast; the floats are already in `dtype`.
    out = cls(
        probs=jnp.asarray(mdp.probs), rewards=jnp.asarray(mdp.rewards),
        discount=jnp.asarray(mdp.discount), initial=jnp.asarray(mdp.initial),
        action_mask=jnp.asarray(mdp.action_mask),
        next_states=(None if mdp.next_states is None else
                     jnp.asarray(_int32_indices(mdp.next_states))),
        transition_rewards=(None if transition_rewards is None else
                            jnp.asarray(transition_rewards)))
    if validate:
      _record_transitions(out)
    return out

  # -------------------------------------------------------------- converters
  def to_dense(self) -> "TabularMDP":
    """Explicit conversion to the dense layout (one MDP, no batch axis).

    Builds ``probs [S, A, S]`` (and ``transition_rewards [S, A, S]`` when
    present). The size is checked first against the available memory (see
    :func:`jaxrl_dp.core.memory.check_dense_size`; static shapes, so this also
    works under ``jit``): :class:`InsufficientMemoryError` says what would fit
    instead of the process being killed.
    """
    if not self.is_sparse:
      return self
    s, a, k = self.probs.shape
    check_dense_size(
        "TabularMDP.to_dense(): probs [S, A, S]", (s, a, s), self.probs.dtype,
        copies=2 if self.transition_rewards is None else 5,
        instead="the sparse layout (every solver accepts it, in O(S*A*K) memory)")
    rows = jnp.arange(s)[:, None, None]
    cols = jnp.arange(a)[None, :, None]
    dense = jnp.zeros((s, a, s), self.probs.dtype)
    dense = dense.at[rows, cols, self.next_states].add(self.probs)
    tr = None
    if self.transition_rewards is not None:
      # Probability-weighted average of the rewards of slots that share s'.
      num = jnp.zeros((s, a, s), self.probs.dtype).at[
          rows, cols, self.next_states].add(self.probs * self.transition_rewards)
      tr = jnp.where(dense > 0, num / jnp.where(dense > 0, dense, 1), 0.0)
    return self.replace(probs=dense, next_states=None, transition_rewards=tr)

  def to_sparse(self) -> "TabularMDP":
    """Explicit conversion to the sparse layout with K = S (one MDP)."""
    if self.is_sparse:
      return self
    s, a, _ = self.probs.shape
    ns = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (s, a, s))
    return self.replace(next_states=ns)


def _int32_indices(x) -> np.ndarray:
  x = np.asarray(x)
  return x if x.dtype == np.int32 else x.astype(np.int32)


def float_dtype(dtype=None) -> np.dtype:
  """The float dtype MDP arrays are stored in: ``dtype``, checked, or the default.

  ``None`` gives float32 (float64 under ``jax_enable_x64``). Integer, bool and
  complex dtypes are refused (probabilities would be zeroed or booleanized,
  imaginary parts dropped), and so is float64 without ``jax_enable_x64``
  (JAX would store float32 behind the caller's back).

  Raises:
    InvalidMDPError: naming ``dtype``.
  """
  if dtype is None:
    return np.dtype(default_float_dtype())
  try:
    dt = np.dtype(dtype)
  except TypeError:
    raise InvalidMDPError(
        f"dtype = {dtype!r}: expected a floating dtype (float32, or float64 "
        f"with jax_enable_x64)") from None
  if not jnp.issubdtype(dt, jnp.floating):
    raise InvalidMDPError(
        f"dtype = {dt.name}: expected a floating dtype (float32, or float64 "
        f"with jax_enable_x64): probabilities and rewards are stored as floats")
  canon = np.dtype(jax.dtypes.canonicalize_dtype(dt))
  if canon != dt:
    raise InvalidMDPError(
        f"dtype = {dt.name}: needs jax_enable_x64 (jax.config.update("
        f"'jax_enable_x64', True)); without it JAX would store {canon.name}")
  return dt


def cast_float(field: str, x, dtype, *, check: bool = True) -> np.ndarray:
  """``x`` (list or array of real numbers) as a NumPy array of float ``dtype``.

  Integer and bool input is converted; complex, string and object input is
  refused. With ``check``, a finite value that overflows ``dtype`` (``1e300``
  in float32) is refused naming its index and original value (NaN and inf
  that were already there are left to the validator). At most one copy is
  made (none when ``x`` already is an array of ``dtype``).

  Raises:
    InvalidMDPError: naming the field (and entry).
  """
  if isinstance(x, (str, bytes)) or x is None:
    raise InvalidMDPError(f"{field} = {x!r}: expected real numbers")
  arr = _real_array(field, x)
  dtype = np.dtype(dtype)
  with np.errstate(over="ignore", invalid="ignore"):
    out = np.asarray(arr, dtype)
  if (check and out.size and arr.dtype != dtype
      and np.issubdtype(arr.dtype, np.floating)
      and not np.isfinite(out).all()):
    bad = ~np.isfinite(out) & np.isfinite(arr)
    if bad.any():
      idx = tuple(np.argwhere(bad)[0])
      raise InvalidMDPError(
          f"{field}{_fmt_idx(idx) if idx else ''} = {arr[idx].item()!r}: "
          f"overflows {dtype.name} (largest finite "
          f"{float(jnp.finfo(dtype).max):.4g}): expected a finite number in "
          f"range (rescale, or use float64 with jax_enable_x64)")
  return out


# ---------------------------------------------------------------- validation
def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _fmt_idx(idx) -> str:
  return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _first_bad(field: str, bad: np.ndarray, values: np.ndarray, expected: str):
  if bad.any():
    idx = tuple(np.argwhere(bad)[0])
    val = np.asarray(values[idx]).item()
    raise InvalidMDPError(f"{field}{_fmt_idx(idx)} = {val!r}: expected {expected}")


def check_finite(field: str, x: np.ndarray) -> None:
  """Raises InvalidMDPError naming the first NaN/inf entry of ``x``.

  Args:
    field: the name used in the error message.
    x: a host array.

  Raises:
    InvalidMDPError: ``x`` has a NaN or infinite entry.
  """
  _first_bad(field, ~np.isfinite(x), x, "a finite number")


def check_finite_rewards(field: str, x: np.ndarray) -> None:
  """:func:`check_finite` for rewards; a ``-inf`` (QuantEcon's mark of an
  infeasible action) is refused with a pointer to ``action_mask``."""
  if not np.isfinite(x).all():
    ninf = np.isneginf(x)
    if ninf.any():
      idx = tuple(int(i) for i in np.argwhere(ninf)[0])
      pair = _fmt_idx(idx[:-1] if field == "transition_rewards" else idx)
      raise InvalidMDPError(
          f"{field}{_fmt_idx(idx)} = -inf: expected a finite number; to mark an "
          f"infeasible action pass action_mask{pair} = False and any finite reward "
          f"(jaxrl_dp.suites.from_quantecon converts QuantEcon's -inf rewards this way)")
    check_finite(field, x)


def _row_sums(p: np.ndarray) -> np.ndarray:
  """Sums over the last axis in float64 (slot by slot when it is short, which
  is several times faster than numpy's strided reduction for small K)."""
  k = p.shape[-1]
  if 0 < k <= 16:
    out = p[..., 0].astype(np.float64)
    for i in range(1, k):
      out += p[..., i]
    return out
  return p.sum(axis=-1, dtype=np.float64)


def check_distribution(field: str, p: np.ndarray, atol: float = ROW_SUM_ATOL,
                       axis_name: str = "last axis") -> None:
  """Checks ``p [..., K]`` is finite, non-negative and sums to 1 on the last axis.

  ``atol`` must be a finite number ``>= 0`` (NaN or inf would switch the check
  off).

  Args:
    field: the name used in the error message.
    p: ``[..., K]`` probabilities (host array).
    atol: tolerance on the row sums.
    axis_name: how the message names the summed axis.

  Raises:
    InvalidMDPError: naming the first bad entry or row.
  """
  check_tol(atol, "atol")
  p = np.asarray(p)
  if not (np.isfinite(p).all() and (p >= 0).all()):  # slow path names the entry
    check_finite(field, p)
    _first_bad(field, p < 0, p, "a probability >= 0")
  sums = _row_sums(p)
  bad = np.abs(sums - 1.0) > atol
  if bad.any():
    idx = tuple(np.argwhere(bad)[0])
    raise InvalidMDPError(
        f"{field}{_fmt_idx(idx)[:-1]}{', ' if idx else ''}:] sums to "
        f"{float(sums[idx])!r} over the {axis_name}: expected 1 within "
        f"atol={atol}")


def check_discount(discount: Any, *, infinite_horizon: bool,
                   field: str = "discount") -> None:
  """Checks a (concrete) discount: [0, 1) for infinite horizon, [0, 1] else.

  ``None``, strings, bools, complex numbers and other non-real values are
  refused by name, like out-of-range values.

  Traced discounts (inside ``jit``/``vmap``) cannot be checked here; validate
  the MDP before tracing.

  Args:
    discount: a real scalar or an array of them (a batch's ``[B]``).
    infinite_horizon: whether 1 is refused.
    field: the name used in the error message.

  Raises:
    InvalidMDPError: a non-real or out-of-range discount, naming ``field``.
  """
  if not _is_concrete(discount):
    return
  want = "a real number in [0, 1)" if infinite_horizon else "a real number in [0, 1]"
  if discount is None or isinstance(discount, (str, bytes, bool, np.bool_)):
    raise InvalidMDPError(f"{field} = {discount!r}: expected {want}")
  try:
    d = np.asarray(discount)
  except Exception:  # ragged sequences, unconvertible objects
    raise InvalidMDPError(f"{field} = {discount!r}: expected {want}") from None
  if d.dtype == bool or not (np.issubdtype(d.dtype, np.integer)
                             or jnp.issubdtype(d.dtype, jnp.floating)):
    raise InvalidMDPError(
        f"{field} = {discount!r}: expected {want} (got dtype {d.dtype})")
  check_finite(field, d.reshape(-1) if d.ndim else d.reshape(1))
  flat = d.reshape(-1)
  hi_ok = (flat < 1.0) if infinite_horizon else (flat <= 1.0)
  bad = (flat < 0.0) | ~hi_ok
  if bad.any():
    i = int(np.argwhere(bad)[0, 0])
    where = f"[{i}]" if d.ndim else ""
    if infinite_horizon and flat[i] == 1.0:
      expected = ("a value in [0, 1) for an infinite-horizon solve; discount 1 "
                  "is legal only with a finite horizon (pass horizon=T to "
                  "finite_horizon) or when every policy reaches an absorbing "
                  "zero-reward set, which this solver cannot verify")
    else:
      expected = ("a value in [0, 1)" if infinite_horizon else
                  "a value in [0, 1]")
    raise InvalidMDPError(f"{field}{where} = {float(flat[i])!r}: expected {expected}")


def _check_float_field(field: str, x) -> None:
  """Solvers need floats: an int / bool field (built with ``TabularMDP(...)``
  directly, bypassing the constructors' cast) gets a named error here instead
  of a crash deep inside JAX."""
  dt = getattr(x, "dtype", None)
  if dt is None or not jnp.issubdtype(dt, jnp.floating):
    raise InvalidMDPError(
        f"{field}: expected a floating dtype, got {dt}: build the MDP with "
        f"TabularMDP.from_dense / from_sparse / from_deterministic (which cast "
        f"to float), or cast it yourself")


def validate_mdp(mdp: TabularMDP, *, atol: float = ROW_SUM_ATOL,
                 infinite_horizon: bool = False, entries: bool = True) -> TabularMDP:
  """Host-side validation of a (possibly batched) MDP.

  Checks ranks, shapes and dtypes (``probs``, ``rewards`` and
  ``transition_rewards`` must be floating: the constructors cast int and bool
  input; every float field in one dtype), empty inputs, probabilities (finite, >= 0, rows
  summing to 1 within ``atol``), next-state indices in range, finite rewards,
  the discount (``[0, 1]``, or ``[0, 1)`` when ``infinite_horizon``), the
  initial distribution, and that every state has at least one valid action.

  With ``entries=False`` the per-entry checks of the large arrays (``probs``,
  ``next_states``, ``rewards``, ``transition_rewards``, ``action_mask``) are
  skipped and only shapes, dtypes, ``discount`` and ``initial`` are checked;
  :func:`entries_ok` is the jittable counterpart of the skipped part (used by
  ``batch.solve``, which fuses it into its compiled program and comes back
  here with ``entries=True`` to name the entry when it fails).

  Leaves that are tracers are skipped (validate before ``jit``).

  Args:
    mdp: one MDP or a batch of them (leading axis ``B`` on every leaf).
    atol: tolerance on the row sums of ``probs`` and on ``sum(initial)``.
    infinite_horizon: refuse a discount of 1.
    entries: check the entries of the large arrays (not only shapes).

  Returns:
    The MDP unchanged.

  Raises:
    InvalidMDPError: naming the field, the first offending index and value,
      and what was expected.
  """
  check_tol(atol, "atol")
  leaves = jax.tree_util.tree_leaves(mdp)
  if not all(_is_concrete(x) for x in leaves):
    return mdp
  # Without entries, the big arrays are never copied to the host (shapes
  # and dtypes of device arrays are enough).
  big = np.asarray if entries else (lambda x: x if hasattr(x, "shape") else np.asarray(x))
  probs = big(mdp.probs)
  rewards = big(mdp.rewards)
  if rewards.ndim < 2:
    raise InvalidMDPError(f"rewards: expected rank >= 2 [S, A], got shape {rewards.shape}")
  batch = rewards.shape[:-2]
  nb = len(batch)
  s, a = rewards.shape[-2:]
  if s == 0 or a == 0:
    raise InvalidMDPError(f"rewards: empty MDP with S={s}, A={a}: expected S >= 1 and A >= 1")
  if probs.ndim != nb + 3 or probs.shape[:-1] != rewards.shape:
    raise InvalidMDPError(
        f"probs: expected shape {batch + (s, a)} + (K,) matching rewards "
        f"{rewards.shape}, got {probs.shape}")
  k = probs.shape[-1]
  if k == 0:
    raise InvalidMDPError(f"probs: empty fan-out K=0 in shape {probs.shape}")
  if mdp.next_states is None:
    if k != s:
      raise InvalidMDPError(
          f"probs: dense layout needs shape {batch + (s, a, s)}, got "
          f"{probs.shape} (pass next_states for the sparse layout)")
  else:
    ns = big(mdp.next_states)
    if ns.shape != probs.shape:
      raise InvalidMDPError(
          f"next_states: expected shape {probs.shape} matching probs, got {ns.shape}")
    if not np.issubdtype(ns.dtype, np.integer):
      raise InvalidMDPError(f"next_states: expected an integer array, got dtype {ns.dtype}")
    if entries:
      _first_bad("next_states", (ns < 0) | (ns >= s), ns,
                 f"a state index in [0, {s})")
  _check_float_field("probs", probs)
  _check_float_field("rewards", rewards)
  if entries:
    check_distribution("probs", probs, atol, axis_name="next-state axis")
  tr = None
  if mdp.transition_rewards is not None:
    tr = big(mdp.transition_rewards)
    if tr.shape != probs.shape:
      raise InvalidMDPError(
          f"transition_rewards: expected shape {probs.shape}, got {tr.shape}")
    _check_float_field("transition_rewards", tr)
  _check_same_dtype(mdp)
  if entries:  # finite transition rewards (named first: rewards are their expectation),
    check_rewards(mdp)  # finite rewards, and rewards = E[transition_rewards]
  disc = np.asarray(mdp.discount)
  if disc.shape != batch:
    raise InvalidMDPError(f"discount: expected shape {batch}, got {disc.shape}")
  check_discount(disc, infinite_horizon=infinite_horizon)
  init = np.asarray(mdp.initial)
  if init.shape != batch + (s,):
    raise InvalidMDPError(f"initial: expected shape {batch + (s,)}, got {init.shape}")
  check_distribution("initial", init, atol, axis_name="state axis")
  mask = big(mdp.action_mask)
  if mask.shape != rewards.shape:
    raise InvalidMDPError(
        f"action_mask: expected shape {rewards.shape} matching rewards, got {mask.shape}")
  if mask.dtype != bool:
    raise InvalidMDPError(f"action_mask: expected a bool array, got dtype {mask.dtype}")
  if entries:
    _check_some_action(mask)
  return mdp


def _check_some_action(mask: np.ndarray) -> None:
  """Raises naming the first state of ``mask [..., S, A]`` with no valid action."""
  no_action = ~mask.any(axis=-1)
  if no_action.any():
    idx = tuple(np.argwhere(no_action)[0])
    raise InvalidMDPError(
        f"action_mask{_fmt_idx(idx)[:-1]}, :] has no valid action: expected at "
        f"least one True per state")


def entries_ok(mdp: TabularMDP, *, atol: float = ROW_SUM_ATOL) -> jax.Array:
  """Jittable check of the entries that ``validate_mdp(..., entries=False)`` skips.

  For ONE MDP (use ``jax.vmap`` for a batch): every probability finite and
  ``>= 0``, every row summing to 1 within ``0.9 * atol`` (a margin for the
  rounding of a float32 sum: when this returns False, the exact host check
  :func:`validate_mdp` decides and names the entry), next-state indices in
  ``[0, S)``, rewards (and transition rewards) finite, and at least one valid
  action per state. The arrays are read once, fused into one reduction.

  Args:
    mdp: one MDP (``probs [S, A, K]``, ``rewards [S, A]``, ...).
    atol: the row-sum tolerance of :func:`validate_mdp`.

  Returns:
    A bool scalar: True when all those entries are valid.
  """
  p = mdp.probs
  s = mdp.rewards.shape[-2]
  ok = jnp.all(jnp.isfinite(p) & (p >= 0))
  ok &= jnp.all(jnp.abs(jnp.sum(p, axis=-1) - 1) <= 0.9 * atol)
  ok &= jnp.all(jnp.isfinite(mdp.rewards))
  ok &= jnp.all(jnp.any(mdp.action_mask, axis=-1))
  if mdp.next_states is not None:
    ok &= jnp.all((mdp.next_states >= 0) & (mdp.next_states < s))
  if mdp.transition_rewards is not None:
    t = mdp.transition_rewards
    ok &= jnp.all(jnp.isfinite(t))
    # rewards = E[transition_rewards]: twice the host tolerance (this sum's own
    # rounding); when it fails, the host check decides and names the entry.
    expected = jnp.sum(jnp.where(p == 0, 0.0, p * t), axis=-1)
    tol = 2 * reward_expectation_tolerance(p, t, jnp)
    ok &= jnp.all((jnp.abs(mdp.rewards - expected) <= tol) | ~mdp.action_mask)
  return ok


def check_mdp_structure(mdp: Any, *, batched: bool = False) -> None:
  """Cheap shape and dtype check at a kernel boundary (works on tracers).
  Entry points follow it with :func:`check_transitions` (or call
  :func:`check_solver_input`, which does both); ``stack`` / ``batch.solve``
  check a list's entries inside their compiled program instead.

  Args:
    mdp: the kernel's MDP argument.
    batched: whether a leading batch axis ``B`` is expected.

  Raises:
    InvalidMDPError: not a :class:`TabularMDP`, or inconsistent ranks,
      shapes or dtypes.
  """
  if type(mdp).__name__ == "FunctionalMDP":  # core.functional imports this module
    raise InvalidMDPError(
        "mdp: this function needs stored transition arrays and does not accept a "
        "FunctionalMDP (matrix-free): use value_iteration, gauss_seidel / anderson / "
        "anchored_value_iteration, modified_policy_iteration, "
        "policy_iteration(evaluation='krylov'), policy_evaluation(method='iterative' "
        "or 'krylov'), finite_horizon or random_q, which accept it, or "
        "mdp.materialize() for a small instance")
  if not isinstance(mdp, TabularMDP):
    raise InvalidMDPError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
  want = 3 if batched else 2
  if mdp.rewards.ndim != want:
    what = ("a batched MDP [B, S, A]" if batched
            else "one MDP [S, A] (use jax.vmap or batch.solve for batches)")
    raise InvalidMDPError(
        f"rewards: expected {what}, got shape {mdp.rewards.shape}")
  _check_float_field("probs", mdp.probs)
  _check_float_field("rewards", mdp.rewards)
  if mdp.transition_rewards is not None:
    _check_float_field("transition_rewards", mdp.transition_rewards)
  _check_same_dtype(mdp)
  _check_field_shapes(mdp)


def _check_field_shapes(mdp: TabularMDP) -> None:
  """The other fields' shapes and the mask's dtype against ``rewards [..., S,
  A]`` (shapes only: works on tracers). A ``[1]`` discount of one MDP, an
  ``initial`` of another size or an int mask otherwise failed deep inside
  JAX (``cond_fun must return a boolean scalar``) or were misread."""
  shape = tuple(mdp.rewards.shape)
  batch = shape[:-2]
  checks = (("probs", tuple(jnp.shape(mdp.probs))[:-1], shape, "[..., S, A, K]"),
            ("discount", tuple(jnp.shape(mdp.discount)), batch, "one per MDP"),
            ("initial", tuple(jnp.shape(mdp.initial)), shape[:-1], "[..., S]"),
            ("action_mask", tuple(jnp.shape(mdp.action_mask)), shape, "[..., S, A]"))
  for field, got, want, what in checks:
    if field == "probs":
      ok = len(tuple(jnp.shape(mdp.probs))) == len(shape) + 1 and got == want
      want_s = f"{want} + (K,)"
    else:
      ok = got == want
      want_s = str(want)
    if not ok:
      raise InvalidMDPError(
          f"{field}: expected shape {want_s} ({what}) for rewards of shape {shape}, "
          f"got {tuple(jnp.shape(getattr(mdp, field)))}")
  if jnp.dtype(mdp.action_mask.dtype) != jnp.bool_:
    raise InvalidMDPError(
        f"action_mask: expected a bool array, got dtype {jnp.dtype(mdp.action_mask.dtype).name}")
  if mdp.next_states is None and jnp.shape(mdp.probs)[-1] != shape[-2]:
    raise InvalidMDPError(
        f"probs: dense layout needs shape {shape + shape[-2:-1]}, got "
        f"{tuple(jnp.shape(mdp.probs))} (pass next_states for the sparse layout)")
  if mdp.next_states is not None and tuple(jnp.shape(mdp.next_states)) != tuple(
      jnp.shape(mdp.probs)):
    raise InvalidMDPError(
        f"next_states: expected shape {tuple(jnp.shape(mdp.probs))} matching probs, got "
        f"{tuple(jnp.shape(mdp.next_states))}")


def _check_same_dtype(mdp: TabularMDP) -> None:
  """Every float field in the rewards' dtype: a float64 discount beside
  float32 arrays (``mdp.replace(...)`` of some fields under x64) otherwise
  promotes part of a solve and fails deep inside JAX (a ``lax.while_loop``
  carry or ``lax.cond`` branches of two dtypes), or runs in a precision the
  model does not have. Nothing is cast silently: the field is named."""
  want = jnp.dtype(mdp.rewards.dtype)
  initial_dt = getattr(mdp.initial, "dtype", None)
  if initial_dt is not None and not jnp.issubdtype(initial_dt, jnp.floating):
    # (an int initial distribution passed validation and then failed inside
    # the solvers: ``finfo`` of an int dtype)
    raise InvalidMDPError(
        f"initial: expected a float array in rewards' dtype {want.name}, got dtype "
        f"{jnp.dtype(initial_dt).name}: e.g. mdp.replace(initial=mdp.initial.astype("
        f"{want.name}))")
  for field in ("probs", "transition_rewards", "discount", "initial"):
    x = getattr(mdp, field)
    dt = getattr(x, "dtype", None)
    if dt is None or not jnp.issubdtype(dt, jnp.floating) or jnp.dtype(dt) == want:
      continue
    raise InvalidMDPError(
        f"{field}: dtype {jnp.dtype(dt).name} differs from rewards' {want.name}: every "
        f"float field of an MDP is stored in one dtype (the constructors' dtype=...); "
        f"cast all of them, e.g. mdp.replace({field}=mdp.{field}.astype({want.name}), ...)")


#: MDPs that passed :func:`check_solver_input`: ``(id(mdp), infinite_horizon)``
#: -> a weak reference to the MDP (removed when the MDP is collected).
_PASSED: dict[tuple, tuple[weakref.ref, ...]] = {}

#: Transition arrays (``probs``, ``next_states``) whose entries passed
#: :func:`check_transitions` (or a validating constructor), by identity:
#: ``(id(probs), id(next_states) or 0) -> weak references to them``. Keyed on
#: the arrays, not the MDP object, so that ``mdp.replace(rewards=...)``
#: (a new object sharing the transitions) is not checked again.
_TRANSITIONS_OK: dict[tuple, tuple[weakref.ref, ...]] = {}


def _immutable(xs) -> bool:
  """Whether every one of ``xs`` is a concrete ``jax.Array`` (immutable: a
  record of it stays true); NumPy arrays (mutable) and tracers are not."""
  return all(isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) for x in xs)


def _remember(table: dict, key: tuple, objs: tuple) -> None:
  """Records ``objs`` under ``key`` by weak references; the entry goes when
  one of them is collected."""
  def forget(r: weakref.ref, key: tuple = key) -> None:
    if r in table.get(key, ()):
      table.pop(key, None)
  table[key] = tuple(weakref.ref(x, forget) for x in objs)


def _remembered(table: dict, key: tuple, objs: tuple) -> bool:
  """Whether ``table[key]`` records exactly these objects (by identity)."""
  refs = table.get(key)
  return (refs is not None and len(refs) == len(objs)
          and all(r() is x for r, x in zip(refs, objs)))


def _transitions(mdp: Any) -> tuple[tuple, tuple]:
  """``(key, arrays)`` of ``mdp``'s checked arrays for :data:`_TRANSITIONS_OK`:
  the transitions, the action mask and the initial distribution."""
  arrays = tuple(x for x in (mdp.probs, mdp.next_states, mdp.action_mask, mdp.initial)
                 if x is not None)
  return tuple(id(x) for x in arrays), arrays


def _transitions_recorded(mdp: Any) -> bool:
  return _remembered(_TRANSITIONS_OK, *_transitions(mdp))


def _record_transitions(mdp: Any) -> None:
  """Records ``mdp``'s transition arrays as checked when they are
  immutable (:func:`_immutable`)."""
  key, arrays = _transitions(mdp)
  if _immutable(arrays):
    _remember(_TRANSITIONS_OK, key, arrays)


def check_transitions(mdp: TabularMDP) -> None:
  """The transition entries every solver's certificate relies on, checked at
  its boundary: finite, nonnegative ``probs`` (the contraction modulus is
  ``gamma`` times the largest row sum only for nonnegative rows),
  ``next_states`` in ``[0, S)`` (the gathers clamp an index out of range, which
  would solve another model), at least one valid action per state (a state
  without one backs up ``-inf``) and ``initial`` a distribution (the
  distributional and return-optimization families weigh by it; within
  :data:`ROW_SUM_ATOL` or ``S eps`` of its dtype, whichever is larger). One
  MDP or a stacked batch, concrete leaves (tracers, and arrays
  spread over several processes, are skipped: validate before ``jit`` or
  sharding).

  The constructors validate everything (:func:`validate_mdp`) and record
  their arrays; an MDP made with ``replace`` (or ``validate=False``) is
  checked here on its first solve, and its transition arrays, when they are
  ``jax.Array`` s, are recorded by identity (a later ``replace`` of the
  rewards shares them: no new check). Row sums are not required to be 1 here
  (a bfloat16 copy of a model is not, within :data:`ROW_SUM_ATOL`): the
  certificates use the stored row sums. Host cost on a 2-core Intel Xeon: 0.1
  ms for 10^5 entries.

  Raises:
    InvalidMDPError: naming the first bad entry.
  """
  probs, ns = mdp.probs, mdp.next_states
  if isinstance(probs, jax.core.Tracer) or isinstance(ns, jax.core.Tracer):
    return
  if _transitions_recorded(mdp):
    return
  if not all(getattr(x, "is_fully_addressable", True) for x in (probs, ns)):
    return  # spread over processes: no host holds it (validate before sharding)
  if not all(not isinstance(x, jax.core.Tracer) and getattr(x, "is_fully_addressable", True)
             for x in (mdp.action_mask, mdp.initial) if x is not None):
    return
  p = np.asarray(probs)
  with np.errstate(invalid="ignore"):
    _first_bad("probs", ~(np.isfinite(p) & (p >= 0)), p, "a finite probability >= 0")
  if ns is not None:
    n = np.asarray(ns)
    s = int(np.shape(mdp.rewards)[-2])
    _first_bad("next_states", (n < 0) | (n >= s), n, f"a state index in [0, {s})")
  _check_some_action(np.asarray(mdp.action_mask))
  if mdp.initial is not None:
    # The sum's rounding in the stored dtype (a bfloat16 copy of a model sums
    # to 1 only within S eps) on top of the constructors' tolerance.
    init = np.asarray(mdp.initial)
    eps = float(jnp.finfo(mdp.initial.dtype).eps)
    check_distribution("initial", init, max(ROW_SUM_ATOL, init.shape[-1] * eps),
                       axis_name="state axis")
  _record_transitions(mdp)


#: MDPs whose rewards passed :func:`check_rewards`, by the identity of the
#: arrays it reads (as :data:`_TRANSITIONS_OK`).
_REWARDS_OK: dict[tuple, tuple[weakref.ref, ...]] = {}


def reward_expectation_tolerance(probs, transition_rewards, xp=np):
  """``[..., S, A]``: how far ``rewards`` may sit from the expectation of
  ``transition_rewards`` under ``probs`` (``[..., S, A, K]``, either layout):
  ``(K + 2) (eps sum_k p_k |r_k| + tiny)`` with the stored dtype's ``eps``
  and smallest normal number ``tiny``: the rounding of the expectation and
  of casting each of the three fields to the storage dtype on their own (a
  bfloat16 copy of a model), and the absolute rounding of subnormal
  products (rewards near ``1e-40`` in float32). ``xp``: ``numpy`` (the host
  check, in float64) or ``jax.numpy``."""
  info = jnp.finfo(probs.dtype)
  scale = xp.sum(xp.where(probs == 0, 0.0, probs * xp.abs(transition_rewards)), axis=-1)
  return (probs.shape[-1] + 2) * (float(info.eps) * scale + float(info.tiny))


def check_rewards(mdp: Any) -> None:
  """The rewards every solver's result relies on, checked at its boundary:
  ``rewards`` (and ``transition_rewards``) finite, and with
  ``transition_rewards``, ``rewards`` (which every expected-value solver
  reads) their expectation under ``probs`` on valid actions, within
  :func:`reward_expectation_tolerance`: ``mdp.replace(transition_rewards=t)``
  alone leaves the old ``rewards``, and the distributional solvers (which
  read ``transition_rewards``) and the planning ones would then solve two
  different models. One MDP or a batch, concrete leaves (tracers are
  skipped: under ``jit`` a NaN reward gives ``converged=False``); checked
  arrays that are ``jax.Array`` s are recorded by identity (checked once).

  Raises:
    InvalidMDPError: naming the first bad entry.
  """
  tr = mdp.transition_rewards
  arrays = tuple(x for x in (mdp.probs, mdp.rewards, tr, mdp.action_mask) if x is not None)
  if not all(_is_concrete(x) and getattr(x, "is_fully_addressable", True) for x in arrays):
    return
  key = tuple(id(x) for x in arrays)
  if _remembered(_REWARDS_OK, key, arrays):
    return
  r = np.asarray(mdp.rewards)
  if tr is not None:
    check_finite_rewards("transition_rewards", np.asarray(tr))
  check_finite_rewards("rewards", r)
  if tr is not None:
    p = np.asarray(mdp.probs)
    r, t = r.astype(np.float64), np.asarray(tr, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
      expected = np.sum(np.where(p == 0, 0.0, p.astype(np.float64) * t), axis=-1)
      tol = reward_expectation_tolerance(p, t)
      bad = (np.abs(r - expected) > tol) & np.asarray(mdp.action_mask, bool)
    if bad.any():
      idx = tuple(np.argwhere(bad)[0])
      raise InvalidMDPError(
          f"rewards{_fmt_idx(idx)} = {float(r[idx])!r}: expected the expectation of "
          f"transition_rewards under probs, {float(expected[idx])!r} (within "
          f"{tol[idx]:.3g}); after mdp.replace(transition_rewards=t), set rewards too: "
          "mdp.replace(transition_rewards=t, rewards=(mdp.probs * t).sum(-1))")
  if _immutable(arrays):
    _remember(_REWARDS_OK, key, arrays)


def check_solver_input(mdp: Any, *, infinite_horizon: bool) -> None:
  """Boundary checks shared by the solvers (one unbatched MDP).

  Shapes are always checked; the discount only when concrete (``[0, 1)`` for
  infinite-horizon solvers, ``[0, 1]`` for finite-horizon ones); the
  transition entries only when concrete and not yet checked
  (:func:`check_transitions`).

  A :class:`TabularMDP` whose every leaf is a concrete ``jax.Array``
  (immutable, and the dataclass is frozen) is checked once: the same object
  passes again without the checks (~13 us of Python per call on a 2-core
  Xeon: :func:`~jaxrl_dp.solve` checks the MDP, then the method it runs checks
  it again). An MDP holding NumPy arrays (mutable in place) or tracers is
  checked on every call.

  Args:
    mdp: the solver's MDP argument.
    infinite_horizon: whether the solver needs a discount below 1.

  Raises:
    InvalidMDPError: not one :class:`TabularMDP`, or a bad discount.
  """
  key = (id(mdp), bool(infinite_horizon))
  if _remembered(_PASSED, key, (mdp,)):
    return
  check_mdp_structure(mdp)
  check_discount(mdp.discount, infinite_horizon=infinite_horizon)
  check_transitions(mdp)
  check_rewards(mdp)
  if _immutable(jax.tree_util.tree_leaves(mdp)):
    _remember(_PASSED, key, (mdp,))


def as_policy(policy: Any, mdp: TabularMDP, *, field: str = "policy",
              horizon: Optional[int] = None, deterministic: bool = False,
              atol: float = ROW_SUM_ATOL) -> jax.Array:
  """Checks a policy against an MDP and returns it as a JAX array.

  The one way every public function takes a policy. The checks run on the
  ORIGINAL values, before any conversion to a JAX array: an int64 action of
  ``2**32`` is refused, not wrapped to action 0 by the int32 cast.

  Accepted (lists, NumPy or JAX arrays):
    * deterministic: an integer array ``[S]`` of actions in ``[0, A)``, valid
      under ``action_mask``; returned as ``int32 [S]``;
    * stochastic: a float array ``[S, A]`` whose rows are distributions within
      ``atol`` with no mass on masked actions; returned as ``[S, A]`` in the
      MDP's float dtype;
    * with ``horizon=T`` also a time-dependent ``int [T, S]`` / ``float
      [T, S, A]`` policy (index t = time step).

  Refused with :class:`InvalidMDPError` (naming the field, and the entry): a
  float ``[S]`` array (hint: cast it to int), bool, complex, strings, wrong
  shapes, out-of-range or masked actions, and with ``deterministic`` any
  stochastic policy. Traced policies (inside the caller's ``jit``) get the
  dtype and shape checks only.

  Args:
    policy: the policy, as above.
    mdp: one MDP (``rewards [S, A]``).
    field: the name used in error messages.
    horizon: static ``T`` when time-dependent policies are accepted.
    deterministic: accept only ``int`` policies.
    atol: row-sum tolerance of stochastic policies.

  Returns:
    ``int32 [S]`` / ``[T, S]`` or float ``[S, A]`` / ``[T, S, A]``.
  """
  s, a = mdp.rewards.shape[-2:]
  det_shapes = [(s,)] + ([(horizon, s)] if horizon is not None else [])
  sto_shapes = [(s, a)] + ([(horizon, s, a)] if horizon is not None else [])
  det_want = " or ".join(f"[{'T, ' if len(x) == 2 else ''}S] = {x}" for x in det_shapes)
  sto_want = " or ".join(f"[{'T, ' if len(x) == 3 else ''}S, A] = {x}" for x in sto_shapes)
  if policy is None or isinstance(policy, (str, bytes)):
    raise InvalidMDPError(
        f"{field} = {policy!r}: expected int {det_want} actions"
        + ("" if deterministic else f" or float {sto_want} probabilities"))
  concrete = is_concrete(policy)
  # A checked host np.ndarray, or (traced) the caller's tracer as it is.
  arr: Any = _real_array(field, policy) if concrete else policy
  shape, dtype = tuple(arr.shape), arr.dtype
  if jnp.issubdtype(dtype, jnp.integer) and dtype != jnp.bool_:
    if shape not in det_shapes:
      raise InvalidMDPError(
          f"{field}: a deterministic policy must have shape {det_want}, got {shape}")
    if not concrete:
      return arr.astype(jnp.int32)
    out = as_index_array(field, arr, upper=a, what="an action index")
    if is_concrete(mdp.action_mask):
      mask = np.asarray(mdp.action_mask)
      _first_bad(field, ~mask[np.arange(s), arr], arr,
                 "a valid action (action_mask is False there)")
    return out
  if not jnp.issubdtype(dtype, jnp.floating):
    raise InvalidMDPError(
        f"{field}: expected int {det_want}"
        + ("" if deterministic else f" or float {sto_want}")
        + f", got dtype {dtype}")
  # (A float [S, A] is a stochastic policy even when [T, S] has the same
  # shape, S = A = T: it used to be refused there.)
  if shape in det_shapes and (deterministic or shape not in sto_shapes):
    raise InvalidMDPError(
        f"{field}: a float array of shape {shape} is not a policy: a "
        f"deterministic policy holds action indices as integers (cast it with "
        f".astype(int) if it holds actions)"
        + ("" if deterministic else f"; a stochastic one is float {sto_want}"))
  if deterministic:
    raise InvalidMDPError(
        f"{field}: expected a deterministic int {det_want} policy, got a float "
        f"array of shape {shape}")
  if shape not in sto_shapes:
    raise InvalidMDPError(
        f"{field}: a stochastic policy must have shape {sto_want}, got {shape}")
  if concrete:
    check_distribution(field, arr, atol, axis_name="action axis")
    if is_concrete(mdp.action_mask):
      mask = np.asarray(mdp.action_mask)
      _first_bad(field, (~mask) & (arr > 0), arr, "probability 0 on a masked action")
  return jnp.asarray(arr, mdp.rewards.dtype)


def check_policy(policy: Any, mdp: TabularMDP, *, atol: float = ROW_SUM_ATOL,
                 field: str = "policy") -> None:
  """Checks a stationary policy (``int [S]`` or ``float [S, A]``) against an MDP.

  The checks of :func:`as_policy` (which also converts; use it at public
  boundaries so the checks see the original values).

  Args:
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.
    mdp: the MDP it is for (its ``S``, ``A`` and action mask).
    atol: tolerance on the row sums of a stochastic policy.
    field: the name used in the error message.

  Raises:
    InvalidMDPError: wrong shape or dtype, an action out of range or masked,
      or rows that are not distributions on the valid actions.
  """
  as_policy(policy, mdp, field=field, atol=atol)
