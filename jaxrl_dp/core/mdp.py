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

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError

#: Default tolerance on ``|sum_k probs[s, a, k] - 1|`` (and on ``sum(initial)``).
ROW_SUM_ATOL = 1e-5


def default_float_dtype():
  """float32, or float64 when ``jax_enable_x64`` is on."""
  return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


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
      atol: tolerance on row sums of ``probs`` and on ``sum(initial)``.
      dtype: float dtype; default float32 (float64 under ``jax_enable_x64``).
    """
    probs_np = np.asarray(probs)
    rewards_np = np.asarray(rewards)
    return cls._build(probs_np, rewards_np, discount, initial, action_mask,
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
    return cls._build(np.asarray(probs), np.asarray(rewards), discount,
                      initial, action_mask, np.asarray(next_states), validate,
                      atol, dtype)

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
      rewards: ``[S, A]``.
      discount: scalar; default 1 (finite-horizon use, as in BRIDGE).
      initial: ``[S]`` (or ``[S + 1]``) start distribution; default one-hot on
        state 0, the BRIDGE convention.
      action_mask: bool ``[S, A]`` (extended with all-valid for the terminal).
    """
    ns = np.asarray(next_state)
    r = np.asarray(rewards)
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
      initial = np.asarray(initial, dtype=np.float64)
      if terminal and initial.shape == (s,):
        initial = np.concatenate([initial, [0.0]])
    return cls._build(np.ones((n, a, 1)), r, discount, initial, action_mask,
                      ns[..., None], validate, ROW_SUM_ATOL, dtype)

  @classmethod
  def _build(cls, probs, rewards, discount, initial, action_mask, next_states,
             validate, atol, dtype):
    dtype = dtype or default_float_dtype()
    if probs.ndim != 3:
      raise InvalidMDPError(
          f"probs: expected rank 3 [S, A, {'K' if next_states is not None else 'S'}],"
          f" got shape {probs.shape}")
    s, a = probs.shape[:2]
    transition_rewards = None
    if rewards.ndim == 3:
      if rewards.shape != probs.shape:
        raise InvalidMDPError(
            f"rewards: per-transition rewards must have the shape of probs "
            f"{probs.shape}, got {rewards.shape}")
      transition_rewards = rewards
      with np.errstate(invalid="ignore"):
        rewards = np.sum(np.where(probs == 0, 0.0, probs * rewards), axis=-1)
    if initial is None:
      initial = np.full((s,), 1.0 / max(s, 1))
    if action_mask is None:
      action_mask = np.ones((s, a), bool)
    mdp = cls(
        probs=probs, rewards=rewards, discount=np.asarray(discount),
        initial=np.asarray(initial), action_mask=np.asarray(action_mask),
        next_states=next_states, transition_rewards=transition_rewards)
    if validate:
      validate_mdp(mdp, atol=atol)
    return jax.tree_util.tree_map(lambda x: _to_jnp(x, dtype), mdp)

  # -------------------------------------------------------------- converters
  def to_dense(self) -> "TabularMDP":
    """Explicit conversion to the dense layout (one MDP, no batch axis)."""
    if not self.is_sparse:
      return self
    s, a, k = self.probs.shape
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


def _to_jnp(x, dtype):
  x = np.asarray(x)
  if x.dtype == bool:
    return jnp.asarray(x)
  if np.issubdtype(x.dtype, np.integer):
    return jnp.asarray(x, jnp.int32)
  return jnp.asarray(x, dtype)


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
  """Raises InvalidMDPError naming the first NaN/inf entry of ``x``."""
  _first_bad(field, ~np.isfinite(x), x, "a finite number")


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
  """Checks ``p [..., K]`` is finite, non-negative and sums to 1 on the last axis."""
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


def check_discount(discount, *, infinite_horizon: bool, field="discount") -> None:
  """Checks a (concrete) discount: [0, 1) for infinite horizon, [0, 1] else.

  Traced discounts (inside ``jit``/``vmap``) cannot be checked here; validate
  the MDP before tracing.
  """
  if not _is_concrete(discount):
    return
  d = np.asarray(discount)
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


def validate_mdp(mdp: TabularMDP, *, atol: float = ROW_SUM_ATOL,
                 infinite_horizon: bool = False, entries: bool = True) -> TabularMDP:
  """Host-side validation of a (possibly batched) MDP.

  Checks ranks and shapes, empty inputs, probabilities (finite, >= 0, rows
  summing to 1 within ``atol``), next-state indices in range, finite rewards,
  the discount (``[0, 1]``, or ``[0, 1)`` when ``infinite_horizon``), the
  initial distribution, and that every state has at least one valid action.

  With ``entries=False`` the per-entry checks of the large arrays (``probs``,
  ``next_states``, ``rewards``, ``transition_rewards``, ``action_mask``) are
  skipped and only shapes, dtypes, ``discount`` and ``initial`` are checked;
  :func:`entries_ok` is the jittable counterpart of the skipped part (used by
  ``batch.solve``, which fuses it into its compiled program and comes back
  here with ``entries=True`` to name the entry when it fails).

  Returns the MDP unchanged. Raises :class:`InvalidMDPError` naming the field,
  the first offending index and value, and what was expected. Leaves that are
  tracers are skipped (validate before ``jit``).
  """
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
  if entries:
    check_distribution("probs", probs, atol, axis_name="next-state axis")
    check_finite("rewards", rewards)
  if mdp.transition_rewards is not None:
    tr = big(mdp.transition_rewards)
    if tr.shape != probs.shape:
      raise InvalidMDPError(
          f"transition_rewards: expected shape {probs.shape}, got {tr.shape}")
    if entries:
      check_finite("transition_rewards", tr)
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
  no_action = ~mask.any(axis=-1) if entries else np.zeros((), bool)
  if no_action.any():
    idx = tuple(np.argwhere(no_action)[0])
    raise InvalidMDPError(
        f"action_mask{_fmt_idx(idx)[:-1]}, :] has no valid action: expected at "
        f"least one True per state")
  return mdp


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
    ok &= jnp.all(jnp.isfinite(mdp.transition_rewards))
  return ok


def check_mdp_structure(mdp: Any, *, batched: bool = False) -> None:
  """Cheap shape check at a kernel boundary (works on tracers)."""
  if not isinstance(mdp, TabularMDP):
    raise InvalidMDPError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
  want = 3 if batched else 2
  if mdp.rewards.ndim != want:
    what = "a batched MDP [B, S, A]" if batched else "one MDP [S, A] (use jax.vmap or batch.solve for batches)"
    raise InvalidMDPError(
        f"rewards: expected {what}, got shape {mdp.rewards.shape}")


def check_solver_input(mdp: Any, *, infinite_horizon: bool) -> None:
  """Boundary checks shared by the solvers (one unbatched MDP).

  Shapes are always checked; the discount only when concrete (``[0, 1)`` for
  infinite-horizon solvers, ``[0, 1]`` for finite-horizon ones).
  """
  check_mdp_structure(mdp)
  check_discount(mdp.discount, infinite_horizon=infinite_horizon)


def check_policy(policy: Any, mdp: TabularMDP, *, atol: float = ROW_SUM_ATOL,
                 field: str = "policy") -> None:
  """Checks a policy against an MDP: ``int [S]`` or ``float [S, A]``.

  Deterministic: integer dtype, shape ``[S]``, actions in ``[0, A)`` and
  valid under ``action_mask``. Stochastic: shape ``[S, A]``, rows are
  distributions within ``atol``, no probability on masked actions. Value checks
  are skipped for traced policies.
  """
  s, a = mdp.rewards.shape[-2:]
  shape = tuple(policy.shape)
  if jnp.issubdtype(policy.dtype, jnp.integer):
    if shape != (s,):
      raise InvalidMDPError(
          f"{field}: a deterministic policy must have shape [S] = ({s},), got {shape}")
    if not _is_concrete(policy) or not _is_concrete(mdp.action_mask):
      return
    pi = np.asarray(policy)
    _first_bad(field, (pi < 0) | (pi >= a), pi, f"an action index in [0, {a})")
    mask = np.asarray(mdp.action_mask)
    bad = ~mask[np.arange(s), pi]
    _first_bad(field, bad, pi, "a valid action (action_mask is False there)")
    return
  if not jnp.issubdtype(policy.dtype, jnp.floating):
    raise InvalidMDPError(
        f"{field}: expected int [S] or float [S, A], got dtype {policy.dtype}")
  if shape != (s, a):
    raise InvalidMDPError(
        f"{field}: a stochastic policy must have shape [S, A] = ({s}, {a}), got {shape}")
  if not _is_concrete(policy) or not _is_concrete(mdp.action_mask):
    return
  pi = np.asarray(policy)
  check_distribution(field, pi, atol, axis_name="action axis")
  mask = np.asarray(mdp.action_mask)
  _first_bad(field, (~mask) & (pi > 0), pi, "probability 0 on a masked action")
