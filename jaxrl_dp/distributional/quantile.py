"""Quantile distributional dynamic programming.

A return distribution is represented by ``N`` locations ``locs [N]`` of mass
``1/N`` each. The projection ``Pi_W1`` onto such distributions that is closest
in the 1-Wasserstein distance puts location i at the quantile of level
``tau_i = (2i - 1) / (2N)`` (Dabney et al., "Distributional RL with Quantile
Regression", AAAI 2018): ``locs_i = F^{-1}(tau_i) = inf{x : F(x) >= tau_i}``.
When ``F`` equals ``tau_i`` exactly on an interval between two atoms (within
a rounding tolerance of ``4 M eps`` on the cumulative sum), every value
between them is equally close in W1 and the midpoint is taken (so a
symmetric distribution projects symmetrically). Locations come out sorted.

Backups (one MDP, pure, jit/vmap): ``eta(s, a) = Pi_W1 sum_k p(k|s, a)
(r(s, a, k) + gamma Z(s'_k))`` on the ``K N`` pushed atoms; for a policy the
state distribution is ``Pi_W1`` of the whole mixture over actions and next
states (``A K N`` atoms; one action for a deterministic policy), not a second
projection of the projected action distributions.

Stopping rule of :func:`quantile_evaluation`: ``Pi_W1 T^pi`` is a
``gamma``-contraction in the supremum-``W_inf`` metric (Dabney et al.
2018); between quantile representations ``W_inf = max_i |locs_i -
locs'_i|``. Once ``gamma / (1 - gamma) * residual <= tol`` the returned
locations are within ``tol`` (sup-``W_inf``) of the projected fixed point.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core.dtypes import float_dtype
from jaxrl_dp.core.reductions import nan_max
from jaxrl_dp.core import bellman
from jaxrl_dp.core.mdp import TabularMDP, check_finite
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import unit_roundoff
from jaxrl_dp.core.options import check_horizon, check_int, is_concrete
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.distributional import evaluation as ev
from jaxrl_dp.distributional.base import (QuantileResult, check_atoms_probs,
                                          quantile_levels, quantile_distribution)
from jaxrl_dp.distributional.risk import as_risk


# -------------------------------------------------------------- projection
def project(atoms: jax.Array, probs: jax.Array, num_quantiles: int) -> jax.Array:
  """Unchecked W1 quantile projection: ``[..., M]`` -> ``[..., N]`` (sorted).

  Sorts the atoms, accumulates their probabilities and reads the generalized
  inverse CDF at the midpoint levels (O(M log M) per distribution). A tie
  (the cumulative probability equals ``tau_i`` within ``4 M eps``) takes the
  midpoint of the two atoms around it.
  """
  shape = jnp.broadcast_shapes(atoms.shape, probs.shape)
  dtype = float_dtype(atoms, probs)  # int atoms and probs: the default float
  atoms = jnp.broadcast_to(atoms, shape).astype(dtype)
  probs = jnp.broadcast_to(probs, shape).astype(dtype)
  order = jnp.argsort(atoms, axis=-1)
  batch, m = shape[:-1], shape[-1]
  b = math.prod(batch)
  xs = jnp.take_along_axis(atoms, order, axis=-1).reshape(b, m)
  c = jnp.cumsum(jnp.take_along_axis(probs, order, axis=-1), axis=-1).reshape(b, m)
  tau = quantile_levels(num_quantiles, dtype)
  tol = 4 * m * jnp.finfo(dtype).eps
  # First atom with F >= tau - tol, first with F > tau + tol: the same atom
  # unless F crosses tau exactly (within tol) between them. Both have mass > 0.
  lo = jax.vmap(lambda ci: jnp.searchsorted(ci, tau - tol, side="left"))(c)
  hi = jax.vmap(lambda ci: jnp.searchsorted(ci, tau + tol, side="right"))(c)
  lo = jnp.minimum(lo, m - 1)
  hi = jnp.minimum(hi, m - 1)
  out = 0.5 * (jnp.take_along_axis(xs, lo, axis=-1) + jnp.take_along_axis(xs, hi, axis=-1))
  return out.reshape(batch + (num_quantiles,))


def quantile_project(atoms: ArrayLike, probs: ArrayLike, num_quantiles: int) -> jax.Array:
  """W1 projection onto ``N`` equally weighted quantiles at ``tau_i = (2i-1)/2N``.

  Args:
    atoms: ``[..., M]`` locations (any order).
    probs: ``[..., M]`` probabilities (broadcastable), a distribution over the
      last axis.
    num_quantiles: N, a static Python int >= 1.

  Returns:
    ``[..., N]`` sorted locations ``F^{-1}(tau_i)``.

  Raises:
    InvalidMDPError: N < 1, mismatched shapes, probabilities not a
      distribution (value checks only on concrete inputs).
  """
  check_int("num_quantiles", num_quantiles)
  atoms, probs = check_atoms_probs(atoms, probs)
  return project(atoms, probs, int(num_quantiles))


def wasserstein_distance(x: jax.Array, y: jax.Array, p: float = 1) -> jax.Array:
  """``W_p`` between quantile representations ``[..., N]`` (same N).

  ``p = 1``: ``mean_i |sort(x)_i - sort(y)_i|``; ``p = inf``: the max.

  Args:
    x: ``[..., N]`` quantile locations (any order).
    y: ``[..., N]`` quantile locations.
    p: the order, ``>= 1`` or ``inf``.

  Returns:
    ``[...]`` distances.
  """
  if (isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating))
      or math.isnan(p) or p < 1):
    raise InvalidMDPError(f"p = {p!r}: expected a Python number >= 1 or inf")
  d = jnp.abs(jnp.sort(x, axis=-1) - jnp.sort(y, axis=-1))
  if p == 1:
    return jnp.mean(d, axis=-1)
  if p == float("inf"):
    return nan_max(d)
  return jnp.mean(d ** p, axis=-1) ** (1.0 / p)


# ------------------------------------------------------------------ backups
def _pushed(mdp: TabularMDP, locs: jax.Array):
  """Atoms ``r_k + gamma locs(s'_k)`` and masses ``p_k / N``: ``[S, A, K, N]``."""
  vals, p = bellman.gather_next(mdp, locs)
  n = locs.shape[-1]
  atoms = ev.slot_rewards(mdp)[..., None] + mdp.discount * vals
  w = jnp.broadcast_to(p[..., None] / n, atoms.shape)
  return atoms, w


def quantile_q_backup(mdp: TabularMDP, locs: jax.Array) -> jax.Array:
  """``eta(s, a) = Pi_W1 sum_k p_k (r_k + gamma Z(s'_k))``: ``[S, N]`` -> ``[S, A, N]``.

  Args:
    mdp: one MDP.
    locs: ``[S, N]`` state quantile locations.

  Returns:
    ``[S, A, N]`` the projected backup per action.
  """
  atoms, w = _pushed(mdp, locs)
  s, a, k, n = atoms.shape
  return project(atoms.reshape(s, a, k * n), w.reshape(s, a, k * n), n)


def quantile_policy_backup(mdp: TabularMDP, policy: jax.Array, locs: jax.Array) -> jax.Array:
  """``eta(s) = Pi_W1 sum_a pi(a|s) sum_k p_k (r_k + gamma Z(s'_k))``: ``[S, N]``.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` or ``float [S, A]``.
    locs: ``[S, N]`` state quantile locations.

  Returns:
    ``[S, N]`` the backed-up quantiles.
  """
  if bellman.is_deterministic_policy(policy):
    return quantile_q_backup(ev.restrict_to_policy(mdp, policy), locs)[:, 0]
  atoms, w = _pushed(mdp, locs)
  s, a, k, n = atoms.shape
  w = w * policy[:, :, None, None]
  return project(atoms.reshape(s, a * k * n), w.reshape(s, a * k * n), n)


def _w_inf(x, y):
  return nan_max(jnp.abs(x - y))


def _risk_on_locs(risk):
  return lambda q: risk(quantile_distribution(q))


# ---------------------------------------------------------------- solvers
def _check_locs0(locs0, s, n, field="locs0"):
  """``[S, N]`` start / terminal quantiles: the shape, and finite values
  where concrete (a NaN gave NaN results, ``converged=True`` at finite
  horizon)."""
  locs0 = ev.check_initial(locs0, (s, n), field)
  if locs0 is not None and is_concrete(locs0):
    check_finite(field, np.asarray(locs0, np.float64))
  return locs0


@solver(infinite_horizon=True, kind="evaluation", reverse_mode=True)
def quantile_evaluation(mdp: TabularMDP, num_quantiles: int, *,
                        policy: ArrayLike | None = None, tol: float = 1e-6,
                        max_iters: int = 10_000, num_iters: int | None = None,
                        locs0: ArrayLike | None = None) -> QuantileResult:
  """Return distribution of a policy (discounted) as N quantiles.

  Iterates ``eta <- Pi_W1 T^pi eta`` from ``locs0`` (default all zeros, the
  point mass at 0). With ``tol`` a number, stops once ``gamma / (1 - gamma)
  * residual <= tol`` (``residual = max_s max_i |locs_{n+1} - locs_n|``),
  which guarantees sup-``W_inf`` distance ``<= tol`` to the projected fixed
  point; ``max_iters`` is never changed (``converged`` False when it runs
  out). ``num_iters`` (a fixed count) runs exactly that many backups.

  Args:
    mdp: one MDP, discount in [0, 1).
    num_quantiles: N (static).
    policy: ``None`` (uniform over valid actions), ``int [S]`` or ``float
      [S, A]``.
    tol, max_iters, num_iters, locs0: as above (``locs0 [S, N]``).

  Returns:
    :class:`QuantileResult`: ``locs [S, N]``, ``q_locs [S, A, N]``.

  Gradients: ``jax.grad`` / ``jax.jvp`` of ``locs`` and ``q_locs`` by the
  implicit function theorem at the projected fixed point (never through the
  iterations; :func:`~jaxrl_dp.planning.implicit.implicit_fixed_point`): each
  quantile is one atom ``r + gamma locs(s', j)`` (or the midpoint of two at a
  tie), so it has derivatives with respect to the rewards,
  ``transition_rewards`` and the discount, while those with respect to
  ``probs`` and a stochastic ``policy`` are zero (the projection is piecewise
  constant in the probabilities: they choose which atom sits at each level).
  ``locs0`` and ``tol`` get zero derivatives. With ``num_iters`` the
  derivative is that of the iterate (through the ``fori_loop``).
  """
  ev.check_mdp(mdp, infinite_horizon=True)
  policy = ev.policy_or_uniform(policy, mdp)  # checked before any int32 cast
  n = check_int("num_quantiles", num_quantiles)
  tol, count, use_tol = ev.check_options(tol, max_iters, num_iters)
  locs0 = _check_locs0(locs0, mdp.rewards.shape[0], n)
  return _evaluation(mdp, policy, locs0, tol, n=n, max_iters=count, use_tol=use_tol)


@functools.partial(jax.jit, static_argnames=("n", "max_iters", "use_tol"))
def _evaluation(mdp, policy, locs0, tol, *, n, max_iters, use_tol):
  if not use_tol:  # a fixed count: ``jax.grad`` differentiates the iterations
    return _iterated(mdp, policy, locs0, tol, n=n, max_iters=max_iters, use_tol=False)

  def solve(a):
    res = _iterated(*a, n=n, max_iters=max_iters, use_tol=True)
    return res.locs, res.q_locs, res

  x, q, res = ev.implicit_evaluation(
      solve, lambda a, x: quantile_policy_backup(a[0], a[1], x),
      lambda a, x: quantile_q_backup(a[0], x), (mdp, policy, locs0, tol),
      (mdp.rewards.shape[0], n))
  return res.replace(locs=x, q_locs=q)


def _rounding_floor(mdp, locs0):
  """``[]`` ``delta / (1 - gamma)``: the W_inf distance between the fixed
  points of the computed and the exact projected backup. Every iterate's
  locations lie in ``[-B, B]``, ``B = max(max |locs0|, max |r| / (1 -
  gamma))`` (the backup maps that box into itself), so each computed atom
  ``fl(r + fl(gamma x))`` is within ``2 u B (1 + u)`` of ``r + gamma x``, a
  midpoint of two atoms adds ``u B``, and the projection's order statistics
  move by at most the atoms' largest error: ``delta = 4 u B`` (``u`` the
  unit roundoff). Without it a float32 iteration that stalls on rounding
  (residual 0) reported ``error_bound = 0``: a single state at gamma 0.9999
  with reward 1 (return 9998.34) gave locations 9993.46, ``converged=True``.
  The atoms' selection itself is taken as exact: near-ties of the
  cumulative weights within :func:`project`'s tolerance are not bounded
  here."""
  g = mdp.discount
  dtype = mdp.rewards.dtype
  u = unit_roundoff(dtype)
  big = nan_max(jnp.abs(ev.slot_rewards(mdp)).ravel()) / (1 - g)
  big = jnp.maximum(big, nan_max(jnp.abs(locs0).ravel()))
  return jnp.where(g < 1, 4 * u * big / (1 - g), jnp.inf).astype(dtype)


def _iterated(mdp, policy, locs0, tol, *, n, max_iters, use_tol):
  s = mdp.rewards.shape[0]
  dtype = mdp.rewards.dtype
  locs0 = jnp.zeros((s, n), dtype) if locs0 is None else locs0.astype(dtype)
  g = mdp.discount
  x, it, res, bound, conv = ev.fixed_point(
      lambda x: quantile_policy_backup(mdp, policy, x), _w_inf, locs0, tol,
      max_iters=max_iters, use_tol=use_tol, factor=g / (1.0 - g),
      floor=_rounding_floor(mdp, locs0))
  q = quantile_q_backup(mdp, x)
  return QuantileResult(locs=x, q_locs=q, policy=None, iterations=it,
                        residual=res, error_bound=bound, converged=conv)


@solver(infinite_horizon=False, kind="finite_horizon")
def quantile_evaluation_finite(mdp: TabularMDP, num_quantiles: int, *, horizon: int,
                               policy: ArrayLike | None = None,
                               terminal_locs: ArrayLike | None = None) -> QuantileResult:
  """Finite-horizon quantile evaluation by backward induction.

  ``locs_T = terminal_locs`` (default zeros), ``eta_t(s) = Pi_W1 sum_a
  pi_t(a|s) sum_k p_k (r_k + gamma eta_{t+1}(s'_k))``, and ``q_locs_t`` the
  projection per action. Discount 1 is allowed. ``horizon`` (T, keyword) is a
  static Python int >= 1; ``policy`` ``None`` is uniform over valid actions,
  else stationary ``int [S]`` / ``float [S, A]`` or time-dependent ``[T,
  S]`` / ``[T, S, A]``. Gradients: ``jax.grad`` works (a ``lax.scan`` of
  sorts and sums).

  Args:
    mdp: one MDP, discount in [0, 1].
    num_quantiles: N (static).
    horizon: T, a static Python int >= 1 (keyword).
    policy: as above.
    terminal_locs: optional ``[S, N]``.

  Returns:
    :class:`QuantileResult` with ``locs [T + 1, S, N]``, ``q_locs
    [T, S, A, N]`` (index t = time step, ``T - t`` steps to go).
  """
  ev.check_mdp(mdp, infinite_horizon=False)
  check_horizon(horizon)
  policy = ev.policy_or_uniform(policy, mdp, horizon=horizon)
  n = check_int("num_quantiles", num_quantiles)
  tl = _check_locs0(terminal_locs, mdp.rewards.shape[0], n, "terminal_locs")
  return _evaluation_finite(mdp, policy, tl, n=n, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("n", "horizon"))
def _evaluation_finite(mdp, policy, terminal, *, n, horizon):
  s = mdp.rewards.shape[0]
  dtype = mdp.rewards.dtype
  terminal = jnp.zeros((s, n), dtype) if terminal is None else terminal.astype(dtype)
  qb = lambda x: quantile_q_backup(mdp, x)
  if bellman.is_deterministic_policy(policy):
    sb = lambda pol, x, q: ev.mix_over_actions(pol, q)
  else:
    sb = lambda pol, x, q: quantile_policy_backup(mdp, pol, x)
  xs, qs = ev.finite_evaluation(qb, sb, terminal, policy, horizon)
  it, res, bound, conv = ev.finite_horizon_info(dtype, horizon)
  return QuantileResult(locs=xs, q_locs=qs, policy=None, iterations=it,
                        residual=res, error_bound=bound, converged=conv)


@solver(infinite_horizon=True, kind="control")
def quantile_control(mdp: TabularMDP, num_quantiles: int,
                     risk: Callable[..., jax.Array] | None = None, *, tol: float = 1e-6,
                     max_iters: int = 10_000, num_iters: int | None = None,
                     locs0: ArrayLike | None = None) -> QuantileResult:
  """Quantile distributional value iteration with a risk-greedy rule.

  As :func:`~jaxrl_dp.distributional.categorical_control` (same caveats:
  no guarantee for risk functionals other than the mean; ``converged``
  means the sup-``W_inf`` change fell to ``tol``; ``error_bound`` is
  ``inf``; ``num_iters`` runs a fixed number of backups). Gradients: forward
  mode only.

  Args:
    mdp: one MDP, discount in [0, 1).
    num_quantiles: N (static).
    risk: as :func:`~jaxrl_dp.distributional.categorical_control`.
    tol, max_iters, num_iters, locs0: as :func:`quantile_evaluation`.

  Returns:
    :class:`QuantileResult` with ``locs [S, N]``, ``q_locs [S, A, N]``,
    ``policy int32 [S]`` greedy on ``q_locs``.
  """
  ev.check_mdp(mdp, infinite_horizon=True)
  n = check_int("num_quantiles", num_quantiles)
  risk = as_risk(risk)
  tol, count, use_tol = ev.check_options(tol, max_iters, num_iters)
  locs0 = _check_locs0(locs0, mdp.rewards.shape[0], n)
  return _control(mdp, risk, locs0, tol, n=n, max_iters=count, use_tol=use_tol)


@functools.partial(jax.jit, static_argnames=("n", "max_iters", "use_tol"))
def _control(mdp, risk, locs0, tol, *, n, max_iters, use_tol):
  s = mdp.rewards.shape[0]
  dtype = mdp.rewards.dtype
  locs0 = jnp.zeros((s, n), dtype) if locs0 is None else locs0.astype(dtype)
  step = ev.greedy_step(lambda x: quantile_q_backup(mdp, x), _risk_on_locs(risk),
                        mdp.action_mask)
  x, it, res, _, conv = ev.fixed_point(
      lambda x: step(x)[0], _w_inf, locs0, tol, max_iters=max_iters,
      use_tol=use_tol, factor=1.0)
  _, q, pol = step(x)
  return QuantileResult(locs=x, q_locs=q, policy=pol, iterations=it,
                        residual=res, error_bound=jnp.asarray(jnp.inf, dtype),
                        converged=conv)


@solver(infinite_horizon=False, kind="finite_horizon")
def quantile_control_finite(mdp: TabularMDP, num_quantiles: int,
                            risk: Callable[..., jax.Array] | None = None, *,
                            horizon: int,
                            terminal_locs: ArrayLike | None = None) -> QuantileResult:
  """Finite-horizon backward induction with a risk-greedy rule (quantiles).

  ``horizon`` (T, keyword) is a static Python int >= 1. Gradients: through
  the quantiles for a fixed greedy policy (the argmax has none).

  Args:
    mdp: one MDP, discount in [0, 1].
    num_quantiles: N (static).
    risk: as :func:`~jaxrl_dp.distributional.categorical_control`.
    horizon: T, a static Python int >= 1 (keyword).
    terminal_locs: optional ``[S, N]``.

  Returns:
    :class:`QuantileResult` with ``locs [T + 1, S, N]``, ``q_locs
    [T, S, A, N]``, ``policy int32 [T, S]``.
  """
  ev.check_mdp(mdp, infinite_horizon=False)
  check_horizon(horizon)
  n = check_int("num_quantiles", num_quantiles)
  risk = as_risk(risk)
  tl = _check_locs0(terminal_locs, mdp.rewards.shape[0], n, "terminal_locs")
  return _control_finite(mdp, risk, tl, n=n, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("n", "horizon"))
def _control_finite(mdp, risk, terminal, *, n, horizon):
  s = mdp.rewards.shape[0]
  dtype = mdp.rewards.dtype
  terminal = jnp.zeros((s, n), dtype) if terminal is None else terminal.astype(dtype)
  xs, qs, pols = ev.finite_control(lambda x: quantile_q_backup(mdp, x),
                                   _risk_on_locs(risk), mdp.action_mask,
                                   terminal, horizon)
  it, res, bound, conv = ev.finite_horizon_info(dtype, horizon)
  return QuantileResult(locs=xs, q_locs=qs, policy=pols, iterations=it,
                        residual=res, error_bound=bound, converged=conv)


__all__ = ["quantile_project", "wasserstein_distance", "quantile_q_backup",
           "quantile_policy_backup", "quantile_evaluation",
           "quantile_evaluation_finite", "quantile_control",
           "quantile_control_finite", "project", "quantile_huber_loss"]


# --------------------------------------------------------------- learning
def quantile_huber_loss(locs: jax.Array, target_locs: jax.Array,
                        kappa: float | jax.Array = 1.0) -> jax.Array:
  """Quantile regression loss of ``N`` quantiles against ``M`` target samples.

  ``L = sum_i mean_j rho^kappa_{tau_i}(u_ij)``, ``u_ij = target_j - locs_i``,
  ``tau_i = (2i - 1) / (2N)`` (:func:`quantile_levels`) and
  ``rho^kappa_tau(u) = |tau - 1{u < 0}| H_kappa(u) / kappa`` with the Huber
  function ``H_kappa(u) = u^2 / 2`` for ``|u| <= kappa``, ``kappa (|u| -
  kappa / 2)`` otherwise (Dabney et al., "Distributional RL with Quantile
  Regression", AAAI 2018, eq. 10; QR-DQN uses ``kappa = 1``). ``kappa = 0``
  is the plain quantile (pinball) loss ``|tau - 1{u < 0}| |u|``. For fixed
  targets and ``kappa = 0`` it is minimized by the ``tau_i``-quantiles of the
  target samples: the learning counterpart of :func:`quantile_project`.

  Args:
    locs: ``[..., N]`` predicted quantiles, index ``i`` at level ``tau_i``
      (the order matters; nothing is sorted).
    target_locs: ``[..., M]`` target samples of equal weight (e.g. ``r +
      gamma * locs'``); wrap them in ``jax.lax.stop_gradient`` to treat them
      as constants.
    kappa: Huber threshold, a finite number ``>= 0`` (may be traced).

  Returns:
    ``[...]`` the loss of each distribution (differentiable in ``locs``).

  Raises:
    InvalidMDPError: ranks below 1, batch shapes that do not broadcast,
      ``kappa`` negative or not finite (concrete values only).
  """
  locs = jnp.asarray(locs) if is_concrete(locs) else locs
  target_locs = jnp.asarray(target_locs) if is_concrete(target_locs) else target_locs
  if locs.ndim < 1 or target_locs.ndim < 1:
    raise InvalidMDPError(
        f"locs, target_locs: expected rank >= 1 [..., N] and [..., M], got shapes "
        f"{tuple(locs.shape)} and {tuple(target_locs.shape)}")
  try:
    jnp.broadcast_shapes(locs.shape[:-1], target_locs.shape[:-1])
  except ValueError:
    raise InvalidMDPError(
        f"target_locs: batch shape {tuple(target_locs.shape[:-1])} does not broadcast "
        f"against locs {tuple(locs.shape[:-1])}") from None
  if is_concrete(kappa):
    k = np.asarray(kappa, np.float64)
    if k.ndim != 0 or not np.isfinite(k) or k < 0:
      raise InvalidMDPError(f"kappa = {kappa!r}: expected a finite number >= 0")
  n = locs.shape[-1]
  dtype = jnp.result_type(locs.dtype, target_locs.dtype, jnp.float32)
  tau = quantile_levels(n, dtype)
  u = target_locs[..., None, :].astype(dtype) - locs[..., :, None].astype(dtype)  # [..., N, M]
  kappa = jnp.asarray(kappa, dtype)
  abs_u = jnp.abs(u)
  safe_kappa = jnp.where(kappa > 0, kappa, 1.0)
  huber = jnp.where(abs_u <= kappa, 0.5 * u * u, kappa * (abs_u - 0.5 * kappa)) / safe_kappa
  elementwise = jnp.where(kappa > 0, huber, abs_u)
  weight = jnp.abs(tau[:, None] - (u < 0).astype(dtype))
  return jnp.sum(jnp.mean(weight * elementwise, axis=-1), axis=-1)
