"""Q of a fixed exploration policy, and k steps of Q-value iteration on a Q table.

Conventions (shared by the whole ``random_policy`` family):
  * A finite horizon ``T`` is a static Python int. Finite-horizon tables are
    ``[T, S, A]`` and index ``t`` is the time step (``t = 0`` is the first
    decision, ``t = T - 1`` the last one, whose Q is the immediate reward).
  * An exploration policy is ``None`` (uniform over the valid actions of
    ``action_mask``), stationary ``float [S, A]``, or time-dependent
    ``float [T, S, A]`` (finite horizon only). Rows are distributions with no
    mass on masked actions.
  * The expectation of Q under the policy is summed over actions left to right
    (``a = 0, 1, ...``), and the uniform one is ``sum(valid Q) / n_valid``. This
    fixed order makes float64 results bit-for-bit reproducible against the
    published BRIDGE analysis, which relies on exact ties between Q values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.functional import (FunctionalMDP, FunctionalOperator,
                                      check_functional_input)
from jaxrl_dp.core.functional_solvers import functional_policy_evaluation
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.mdp import (ROW_SUM_ATOL, TabularMDP, check_discount,
                               check_distribution, check_mdp_structure, check_transitions)
from jaxrl_dp.core.options import check_horizon, check_int, is_concrete
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.planning.evaluation import exact_policy_values

__all__ = ["random_q", "random_q_finite_kernel", "qvi_steps", "qvi_backup",
           "policy_expectation", "policy_at", "policy_probs_at", "masked_min", "sum_actions",
           "check_exploration_policy"]

#: Above this many actions, sums over actions use ``jnp.sum`` (XLA's order)
#: instead of an unrolled left-to-right chain.
_UNROLL_MAX_ACTIONS = 64


# ------------------------------------------------------------------ checks
def check_exploration_policy(policy, mdp: TabularMDP, horizon: int | None,
                             *, field: str = "policy",
                             atol: float = ROW_SUM_ATOL, batched: bool = False):
  """Validates an exploration policy and returns it as a jax array (or None).

  Accepts ``None`` (uniform over valid actions), ``[S, A]`` or, when
  ``horizon`` is given, ``[T, S, A]`` with ``T == horizon``. Rows must be
  distributions (within ``atol``) with no mass on masked actions; value checks
  run only on concrete (non-traced) input. With ``batched=True`` the MDP is a
  stacked batch and the policy has the same leading ``B`` (``[B, S, A]`` or
  ``[B, T, S, A]``).

  Raises:
    InvalidMDPError naming the field, the first offending index and value.
  """
  if policy is None:
    return None
  s, a = mdp.rewards.shape[-2:]
  lead = tuple(mdp.rewards.shape[:-2]) if batched else ()
  pol = policy if isinstance(policy, jax.Array) else np.asarray(policy)
  if not jnp.issubdtype(pol.dtype, jnp.floating):
    raise InvalidMDPError(
        f"{field}: expected a float array of action probabilities, got dtype {pol.dtype}")
  shapes = [lead + (s, a)] + ([lead + (horizon, s, a)] if horizon is not None else [])
  if tuple(pol.shape) not in shapes:
    want = " or ".join(str(x) for x in shapes)
    extra = ("" if horizon is not None else
             " (a time-dependent [T, S, A] policy needs a finite horizon)")
    if lead:
      extra += " (a leading batch axis)"
    raise InvalidMDPError(f"{field}: expected shape {want}, got {tuple(pol.shape)}{extra}")
  if is_concrete(pol, mdp.action_mask):
    p = np.asarray(pol, np.float64)
    check_distribution(field, p, atol, axis_name="action axis")
    mask = np.asarray(mdp.action_mask)
    if p.ndim == len(lead) + 3:  # time-dependent: the mask repeats over T
      mask = np.expand_dims(mask, len(lead))
    mask = np.broadcast_to(mask, p.shape)
    bad = (~mask) & (p > 0)
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise InvalidMDPError(
          f"{field}{list(idx)} = {float(p[idx])!r}: expected probability 0 on a masked action")
  return jnp.asarray(pol, mdp.rewards.dtype)


# --------------------------------------------------------------- primitives
def sum_actions(x: jax.Array) -> jax.Array:
  """``sum_a x[..., a]`` accumulated left to right (a fixed, documented order)."""
  n = x.shape[-1]
  if n > _UNROLL_MAX_ACTIONS:
    return jnp.sum(x, axis=-1)
  acc = x[..., 0]
  for i in range(1, n):
    acc = acc + x[..., i]
  return acc


def policy_expectation(q: jax.Array, policy: jax.Array | None,
                       action_mask: jax.Array) -> jax.Array:
  """``sum_a pi(a|s) q[s, a]``: ``[..., S, A]`` -> ``[..., S]``.

  ``policy=None`` is the uniform policy over valid actions, computed as the
  left-to-right sum of the valid entries divided by their count.

  Args:
    q: ``[..., S, A]`` action values.
    policy: ``[..., S, A]`` probabilities, or None (uniform).
    action_mask: bool ``[S, A]`` valid actions.

  Returns:
    ``[..., S]`` expected values.
  """
  if policy is None:
    n = jnp.sum(action_mask, axis=-1).astype(q.dtype)
    return sum_actions(jnp.where(action_mask, q, 0.0)) / n
  return sum_actions(jnp.where(policy > 0, q * policy, 0.0))


def policy_at(policy: jax.Array | None, t) -> jax.Array | None:
  """The ``[S, A]`` slice of a stationary or time-dependent policy at step t."""
  if policy is None:
    return None
  policy = jnp.asarray(policy)  # (a NumPy policy cannot be indexed by a traced t)
  return policy if policy.ndim == 2 else policy[t]


def policy_probs_at(policy: jax.Array | None, t, action_mask: jax.Array):
  """Like :func:`policy_at` but the uniform policy is materialized."""
  if policy is None:
    return bellman.uniform_policy(action_mask)
  return policy_at(policy, t)


def _uniform(action_mask):
  return bellman.uniform_policy(action_mask)


def masked_min(q: jax.Array, action_mask: jax.Array) -> jax.Array:
  """``min_a q[..., a]`` over valid actions."""
  return jnp.min(jnp.where(action_mask, q, jnp.inf), axis=-1)


def qvi_backup(mdp: TabularMDP, q: jax.Array) -> jax.Array:
  """One Bellman optimality backup of a Q table (no checks; jittable).

  * ``q [S, A]``: ``Q'(s, a) = r(s, a) + gamma * E[max_a' Q(s', a')]``.
  * ``q [T, S, A]``: for ``t < T - 1``,
    ``Q'_t(s, a) = r(s, a) + gamma * E[max_a' Q_{t+1}(s', a')]`` (all steps
    from the *old* table, i.e. a synchronous sweep); the last step
    ``Q'_{T-1} = Q_{T-1}`` is kept. Starting from the uniform policy's Q this is
    exactly the paper's ``Q^{i+1} = Q^i`` backed up once, and after ``T - 1``
    backups the table is ``Q*``.

  Maxima are over valid actions only.

  Args:
    mdp: one MDP.
    q: ``[S, A]`` or ``[T, S, A]`` table.

  Returns:
    The backed-up table, same shape.
  """
  if q.ndim == 2:
    return bellman.q_values(mdp, bellman.masked_max(q, mdp.action_mask))
  v_next = bellman.masked_max(q[1:], mdp.action_mask)  # [T-1, S]
  head = jax.vmap(lambda v: bellman.q_values(mdp, v))(v_next)
  return jnp.concatenate([head.astype(q.dtype), q[-1:]], axis=0)


# ------------------------------------------------------------------- random_q
@solver(infinite_horizon=True, kind="evaluation", reverse_mode=True)
def random_q(mdp: TabularMDP | FunctionalMDP, horizon: int | None = None,
             policy: ArrayLike | None = None) -> jax.Array:
  """Q-function of the uniform random policy or of a given exploration policy.

  Finite horizon (``horizon = T``, a static int >= 1): backward induction
  with ``lax.scan``, ``V_T = 0``, ``Q_t = r + gamma * E[V_{t+1}]``,
  ``V_t(s) = sum_a pi_t(a|s) Q_t(s, a)``; discount 1 (undiscounted) is allowed.
  Infinite horizon (``horizon=None``): ``V^pi = (I - gamma P_pi)^{-1} r_pi`` by
  a linear solve (needs discount < 1), then ``Q = r + gamma P V^pi``.

  Args:
    mdp: one MDP (use ``jax.vmap`` over a stacked batch).
    horizon: ``T`` or ``None`` for the discounted infinite horizon.
    policy: ``None`` (uniform over valid actions), ``[S, A]``, or ``[T, S, A]``
      (finite horizon only).

  Returns:
    ``[T, S, A]`` (index t = time step, t = 0 first) or ``[S, A]``.

  Gradients: ``jax.grad`` works in both modes (a ``lax.scan``, or a linear
  solve).

  Solver metadata: ``infinite_horizon=True``, so that
  :func:`jaxrl_dp.batch.solve` refuses discount 1 (which only the
  finite-horizon mode accepts, and which cannot be checked inside the batch);
  for a batch of finite-horizon MDPs with discount 1 use ``jax.vmap``.

  A :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free) is backed
  up blockwise; its infinite-horizon Q comes from iterative evaluation of the
  policy run to the float rounding floor (no linear solve).

  Raises:
    InvalidMDPError: horizon < 1, a discount out of range, a policy of the
      wrong shape, rows that are not distributions or mass on masked actions.
    InsufficientMemoryError: infinite horizon on a stored MDP whose dense
      ``[S, S]`` system would not fit (the message says what would).
  """
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    return _random_q_functional(mdp, horizon, policy)
  check_mdp_structure(mdp)
  check_transitions(mdp)
  if horizon is None:
    check_discount(mdp.discount, infinite_horizon=True)
    pol = check_exploration_policy(policy, mdp, None)
    s = mdp.rewards.shape[0]
    check_dense_size("random_q(horizon=None): I - gamma P_pi [S, S]", (s, s),
                     mdp.rewards.dtype, copies=3,
                     instead="policy_evaluation(mdp, policy, method='krylov') and "
                     "its q (O(S*A*K) memory), or a FunctionalMDP")
    return _random_q_infinite(mdp, pol)
  check_horizon(horizon)
  check_discount(mdp.discount, infinite_horizon=False)
  pol = check_exploration_policy(policy, mdp, horizon)
  return _random_q_finite(mdp, pol, horizon=int(horizon))


def random_q_finite_kernel(mdp: TabularMDP, policy, horizon: int) -> jax.Array:
  """Unchecked, unjitted finite-horizon kernel behind :func:`random_q`."""
  s = mdp.rewards.shape[0]

  def step(v_next, t):
    q = bellman.q_values(mdp, v_next)
    v = policy_expectation(q, policy_at(policy, t), mdp.action_mask)
    return v.astype(v_next.dtype), q

  v_end = jnp.zeros((s,), mdp.rewards.dtype)
  _, qs = jax.lax.scan(step, v_end, jnp.arange(horizon), reverse=True)
  return qs


_random_q_finite = jax.jit(random_q_finite_kernel, static_argnames=("horizon",))


@jax.jit
def _random_q_infinite(mdp, policy):
  pi = _uniform(mdp.action_mask).astype(mdp.rewards.dtype) if policy is None else policy
  v = exact_policy_values(mdp, pi)
  return bellman.q_values(mdp, v)


def _random_q_functional(mdp, horizon, policy):
  """:func:`random_q` of a FunctionalMDP (checks, then blockwise kernels)."""
  import types  # noqa: PLC0415
  check_functional_input(mdp, infinite_horizon=horizon is None)
  if horizon is not None:
    check_horizon(horizon)
  pol = None
  if policy is not None:  # checked against an [S, A] view (the mask materialized)
    view = types.SimpleNamespace(
        rewards=jax.ShapeDtypeStruct((mdp.num_states, mdp.num_actions), mdp.dtype),
        action_mask=jax.jit(lambda m: m.action_mask_table())(mdp))
    pol = check_exploration_policy(policy, view, horizon)
  if horizon is not None:
    return _random_q_functional_finite(mdp, pol, horizon=int(horizon))
  if pol is None:
    pol = jax.jit(lambda m: bellman.uniform_policy(m.action_mask_table()).astype(m.dtype))(mdp)
  ev = functional_policy_evaluation(mdp, pol, tol=0.0, max_iters=2**31 - 1)
  return jax.jit(lambda m, v: FunctionalOperator(m).q_values(v))(mdp, ev.values)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _random_q_functional_finite(mdp, policy, *, horizon):
  op = FunctionalOperator(mdp)
  mask = mdp.action_mask_table()

  def step(v_next, t):
    q = op.q_values(v_next)
    v = policy_expectation(q, policy_at(policy, t), mask)
    return v.astype(v_next.dtype), q

  v_end = jnp.zeros((mdp.num_states,), mdp.dtype)
  _, qs = jax.lax.scan(step, v_end, jnp.arange(horizon), reverse=True)
  return qs


# ------------------------------------------------------------------ qvi_steps
@solver(infinite_horizon=False, kind="analysis", reverse_mode=True)
def qvi_steps(mdp: TabularMDP, q: jax.Array, k: int) -> jax.Array:
  """Applies ``k`` Bellman optimality backups to a Q table.

  See :func:`qvi_backup` for the exact convention: ``[S, A]`` tables are backed
  up as infinite-horizon Q functions; ``[T, S, A]`` tables are finite-horizon,
  step ``t < T - 1`` takes the max of the table at ``t + 1`` and the last step
  is kept. ``qvi_steps(mdp, random_q(mdp, T), k - 1)`` is the paper's ``Q^k``.

  Args:
    mdp: one MDP.
    q: ``[S, A]`` or ``[T, S, A]``.
    k: number of backups, a static int >= 1.

  Returns:
    A table of the same shape. ``jax.grad`` works (a ``fori_loop`` of
    backups; the max over actions has subgradients).
  """
  check_mdp_structure(mdp)
  check_transitions(mdp)
  check_int("k", k)
  check_discount(mdp.discount, infinite_horizon=False)
  q = jnp.asarray(q)
  if not jnp.issubdtype(q.dtype, jnp.floating):  # as qvi_backup: the MDP's float dtype
    q = q.astype(mdp.rewards.dtype)
  s, a = mdp.rewards.shape
  if q.ndim not in (2, 3) or q.shape[-2:] != (s, a) or (q.ndim == 3 and q.shape[0] < 1):
    raise InvalidMDPError(f"q: expected shape [S, A] = {(s, a)} or [T, S, A], got {q.shape}")
  return _qvi_steps(mdp, q, k=int(k))


@functools.partial(jax.jit, static_argnames=("k",))
def _qvi_steps(mdp, q, *, k):
  return jax.lax.fori_loop(0, k, lambda _, x: qvi_backup(mdp, x), q)
