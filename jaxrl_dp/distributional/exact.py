"""Exact (unprojected) return distributions over a finite horizon.

When every return ``sum_{t<T} gamma^t r_t`` lies on a finite set (finitely
many reward values and a finite horizon; the set stays small for lattice
rewards with ``gamma = 1``, as in BRIDGE's deterministic MDPs with rewards in
{0, 1}), the return distribution of any policy is a probability vector on that
set and backward induction computes it without any projection:

  ``eta_T(s) = delta_0``, ``eta_t(s, a) = sum_k p_k (r_k + gamma eta_{t+1}(s'_k))``,
  ``eta_t(s) = sum_a pi_t(a|s) eta_t(s, a)``

where ``r + gamma z`` is looked up on the support (nearest atom, with a
report of any mass that had no matching atom). :func:`return_support`
enumerates the set on the host (all values reachable with at most T rewards,
over all states and actions); :func:`exact_return_distribution` is jittable
given the support.

Convention of the BRIDGE ``value_dists`` files (Laidlaw et al.'s
``distributional_value_iteration``): the file for timestep ``t`` (1..T) holds
the distributions with ``T - t + 1`` steps to go, i.e. our ``probs[t - 1]``;
each file is ``[2, n, S + 1]`` (row 0 returns, row 1 probabilities); a state's
column lists its distinct returns (in the order the dataset's code first meets
them, increasing in the KeyCorridor files) padded with (return 0, probability
0); the last column is the absorbing terminal state (return 0 with
probability 1). :func:`exact_return_distribution` with the uniform policy (``policy=None``),
``horizon = T`` and ``load_bridge``'s MDP reproduces them to 1e-14 (float64);
``timesteps=[t - 1 for t in (1, 2, 50, 100)]`` keeps only those four.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

from jax.typing import ArrayLike

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.distributional import evaluation as ev
from jaxrl_dp.core.options import check_horizon, check_int, check_tol, is_concrete
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.distributional.base import categorical_distribution, check_support

__all__ = ["ExactReturnDistribution", "exact_return_distribution", "return_support"]


@flax.struct.dataclass
class ExactReturnDistribution:
  """Exact finite-horizon return distributions on a finite support.

  Attributes:
    support: ``[M]`` sorted return values.
    timesteps: ``int32 [L]`` the time steps kept (all ``0..T`` by default).
    probs: ``[L, S, M]``; ``probs[i]`` is for time step ``timesteps[i]``,
      which has ``T - timesteps[i]`` steps to go (time step T is ``delta_0``).
      With the default ``L = T + 1`` and ``probs[t]`` is time step t.
    q_probs: ``[L', S, A, M]`` for the kept time steps below T (first action
      fixed, then the policy) when ``with_q``, else ``None``.
    off_support_mass: ``[]`` the largest probability, over time steps and
      states, that was put on a support atom farther than the tolerance from
      the true return (0 when the support holds every reachable return).
  """

  support: jax.Array
  timesteps: jax.Array
  probs: jax.Array
  q_probs: Optional[jax.Array]
  off_support_mass: jax.Array

  def distribution(self):
    return categorical_distribution(self.support, self.probs)

  def q_distribution(self):
    return categorical_distribution(self.support, self.q_probs)


def _merge(x: np.ndarray, atol: float) -> np.ndarray:
  x = np.sort(x)
  if x.size == 0:
    return x
  keep = np.concatenate([[True], np.diff(x) > atol * np.maximum(1.0, np.abs(x[1:]))])
  return x[keep]


def return_support(mdp: TabularMDP, *, horizon: int, atol: float = 1e-6,
                   max_atoms: int = 100_000) -> np.ndarray:
  """Every value ``sum_{t<h} gamma^t r_t``, ``h <= T``, with ``r_t`` among
  the MDP's reward values (host-side, float64, sorted).

  Values closer than ``atol`` (relative above 1) are merged.

  Args:
    mdp: one concrete MDP.
    horizon: T >= 1.
    atol: merging tolerance, a finite number ``>= 0``.
    max_atoms: the largest number of values allowed.

  Returns:
    ``float64 [M]`` sorted values.

  Raises:
    InvalidMDPError: the set exceeds ``max_atoms`` (the returns do not lie on
      a small finite set: use categorical evaluation instead).
  """
  check_horizon(horizon)
  check_int("max_atoms", max_atoms)
  check_tol(atol, "atol")
  if not is_concrete(mdp.rewards, mdp.probs, mdp.discount):
    raise InvalidMDPError("mdp: return_support needs a concrete MDP (call it outside jit)")
  r = np.asarray(ev.slot_rewards(mdp), np.float64)
  p = np.asarray(mdp.probs, np.float64)
  values = _merge(r[p > 0].reshape(-1), atol)
  gamma = float(np.asarray(mdp.discount))
  level = np.zeros(1)
  everything = level
  for h in range(horizon):
    level = _merge((values[:, None] + gamma * level[None, :]).reshape(-1), atol)
    everything = _merge(np.concatenate([everything, level]), atol)
    if everything.size > max_atoms:
      raise InvalidMDPError(
          f"rewards: the returns of {h + 1} steps already take "
          f"{everything.size} > max_atoms = {max_atoms} values (reward values "
          f"{values[:8].tolist()}{'...' if values.size > 8 else ''}, discount "
          f"{gamma}): expected returns on a small finite set (lattice rewards); "
          f"use categorical_evaluation_finite on a fixed support instead")
  return everything


@solver(infinite_horizon=False, kind="finite_horizon", reverse_mode=True)
def exact_return_distribution(mdp: TabularMDP, *, horizon: int,
                              policy: ArrayLike | None = None,
                              support: ArrayLike | None = None,
                              timesteps: Sequence[int] | None = None, with_q: bool = False,
                              atol: float = 1e-6) -> ExactReturnDistribution:
  """Exact return distributions of a policy over ``horizon`` steps.

  Example: ``exact_return_distribution(mdp, horizon=20)`` (uniform policy).

  Args:
    mdp: one MDP (any layout; deterministic BRIDGE MDPs are ``K = 1``),
      discount in [0, 1].
    horizon: T, a static Python int >= 1 (keyword).
    policy: ``None`` (default: uniform over valid actions, the random policy
      of BRIDGE), stationary ``int [S]`` / ``float [S, A]`` or time-dependent
      ``[T, S]`` / ``[T, S, A]``.
    support: ``[M]`` strictly increasing values holding every reachable
      return and 0 (the terminal return; without it ``off_support_mass``
      is 1); default :func:`return_support` (host-side enumeration).
    timesteps: optional static sequence of time steps in ``[0, T]`` to keep
      (memory ``[L, S, M]`` instead of ``[T + 1, S, M]``); default all.
    with_q: also return the state-action distributions (static).
    atol: matching tolerance of ``r + gamma z`` to a support atom (relative
      above 1), a finite number ``>= 0``.

  Returns:
    :class:`ExactReturnDistribution`.

  The default ``support`` is enumerated on the host (a concrete MDP); pass
  ``support`` to run under ``jit``/``vmap``/:func:`jaxrl_dp.batch.solve`.
  Gradients: ``jax.grad`` with respect to the transition probabilities and
  the policy works (scatter-adds in a ``lax.scan``); the atoms are fixed.
  """
  ev.check_mdp(mdp, infinite_horizon=False)
  check_horizon(horizon)
  check_tol(atol, "atol")
  policy = ev.policy_or_uniform(policy, mdp, horizon=horizon)
  if timesteps is not None:
    ts = tuple(int(t) for t in np.atleast_1d(np.asarray(timesteps)))
    bad = [t for t in ts if not 0 <= t <= horizon]
    if bad or not ts:
      raise InvalidMDPError(
          f"timesteps = {timesteps!r}: expected a non-empty sequence of time "
          f"steps in [0, {horizon}]")
    timesteps = ts
  if support is None:
    support = return_support(mdp, horizon=horizon, atol=atol)
  support = check_support(support)
  return _exact(mdp, policy, support, jnp.asarray(atol, mdp.rewards.dtype),
                horizon=horizon, timesteps=timesteps, with_q=bool(with_q))


def _nearest(support, x):
  m = support.shape[0]
  if m == 1:
    return jnp.zeros(x.shape, jnp.int32)
  i = jnp.clip(jnp.searchsorted(support, x), 1, m - 1)
  left = support[i - 1]
  right = support[i]
  return jnp.where(jnp.abs(x - left) <= jnp.abs(right - x), i - 1, i).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("horizon", "timesteps", "with_q"))
def _exact(mdp, policy, support, atol, *, horizon, timesteps, with_q):
  support = support.astype(mdp.rewards.dtype)
  s, a = mdp.rewards.shape
  m = support.shape[0]
  target = ev.slot_rewards(mdp)[..., None] + mdp.discount * support  # [S, A, K, M]
  idx = _nearest(support, target)
  miss = jnp.abs(support[idx] - target) > atol * jnp.maximum(1.0, jnp.abs(target))
  k = target.shape[2]
  rows = jnp.arange(s * a)[:, None]
  flat_idx = idx.reshape(s * a, k * m)
  at_zero = _nearest(support, jnp.zeros((), support.dtype))
  terminal = jnp.zeros((s, m), support.dtype).at[:, at_zero].set(1.0)
  det = bellman.is_deterministic_policy(policy)
  time_dependent = policy.ndim == (2 if det else 3)
  pol_at = (lambda t: policy[t]) if time_dependent else (lambda t: policy)

  def step(x_next, t):
    """Time step t from t + 1: ``(x [S, M], q [S, A, M], lost [])``."""
    pol = pol_at(t)
    vals, p = bellman.gather_next(mdp, x_next)  # [S, A, K, M]
    w = p[..., None] * vals
    q = jnp.zeros((s * a, m), support.dtype).at[rows, flat_idx].add(
        w.reshape(s * a, k * m)).reshape(s, a, m)
    lost_q = jnp.sum(jnp.where(miss, w, 0.0), axis=(2, 3))  # [S, A]
    return ev.mix_over_actions(pol, q), q, jnp.max(ev.mix_over_actions(pol, lost_q))

  # The terminal delta_0 is off the support when no atom is 0 (within atol):
  # all of its mass counts (it was not counted, and a support without 0 gave
  # shifted distributions with off_support_mass 0).
  zero = jnp.where(jnp.abs(support[at_zero]) > atol, 1.0, 0.0).astype(support.dtype)
  if timesteps is None:
    def body(carry, t):
      x_next, lost_max = carry
      x, q, lost = step(x_next, t)
      return (x, jnp.maximum(lost_max, lost)), (x, q if with_q else None)

    (_, lost), (xs, qs) = jax.lax.scan(body, (terminal, zero), jnp.arange(horizon),
                                       reverse=True)
    probs = jnp.concatenate([xs, terminal[None]], axis=0)
    kept = jnp.arange(horizon + 1, dtype=jnp.int32)
    return ExactReturnDistribution(support=support, timesteps=kept, probs=probs,
                                   q_probs=qs, off_support_mass=lost)

  # Only some time steps: run the segments between them, keep their ends.
  out_x, out_q = {}, {}
  x, lost, t = terminal, zero, horizon
  out_x[horizon] = terminal
  for target in sorted(set(timesteps), reverse=True):
    if target == horizon:
      continue

    def seg(j, c, t=t):
      x_next, lost_max = c
      x_new, _, l = step(x_next, t - 1 - j)
      return x_new, jnp.maximum(lost_max, l)

    x, lost = jax.lax.fori_loop(0, t - target - 1, seg, (x, lost))
    x, q, l = step(x, target)
    lost = jnp.maximum(lost, l)
    out_x[target], out_q[target] = x, q
    t = target
  probs = jnp.stack([out_x[t] for t in timesteps])
  below = [t for t in timesteps if t < horizon]
  qs = jnp.stack([out_q[t] for t in below]) if with_q and below else None
  return ExactReturnDistribution(
      support=support, timesteps=jnp.asarray(timesteps, jnp.int32), probs=probs,
      q_probs=qs, off_support_mass=lost)
