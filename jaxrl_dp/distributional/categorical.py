"""Categorical distributional dynamic programming on a fixed support.

A return distribution is a probability vector ``probs [N]`` on a strictly
increasing ``support [N]`` ``z_0 < ... < z_{N-1}`` (uniform or not), shared by
all states. The Cramer (L2) projection ``Pi_C`` maps any distribution to the
categorical one closest in Cramer distance ``l2(F, G) = (int (F - G)^2)^(1/2)``:
an atom at ``x`` between ``z_i <= x <= z_{i+1}`` is split between the two
neighbours in proportion to proximity, ``(z_{i+1} - x) / (z_{i+1} - z_i)`` to
``z_i`` and the rest to ``z_{i+1}``; mass below ``z_0`` goes to ``z_0`` and
above ``z_{N-1}`` to ``z_{N-1}`` (Rowland et al., "An Analysis of Categorical
Distributional Reinforcement Learning", AISTATS 2018). Mass is conserved,
atoms already on the support are left in place, and the mean is preserved for
atoms inside ``[z_0, z_{N-1}]``. Equivalently, the projected CDF at ``z_i``
(``i < N - 1``) is the average of the original CDF over ``[z_i, z_{i+1}]``.

Backups (one MDP, pure, jit/vmap): for state distributions ``probs [S, N]``
the state-action distributions are ``eta(s, a) = Pi_C sum_k p(k|s, a)
(r(s, a, k) + gamma Z(s'_k))``, with per-transition rewards when the MDP has
``transition_rewards`` (the projection is linear, so without them the
next-state distributions are mixed first and projected once per (s, a)).
Absorbing zero-reward states keep ``Pi_C delta_0`` (exactly ``delta_0`` when
0 is on the support); masked actions get no mass from a valid policy and never
win a greedy choice.

Stopping rule of :func:`categorical_evaluation`: ``Pi_C T^pi`` is a
``sqrt(gamma)``-contraction in the supremum-Cramer metric ``max_s l2``
(Rowland et al. 2018), so once ``sqrt(gamma) / (1 - sqrt(gamma)) *
residual <= tol`` with ``residual = max_s l2(eta_{n+1}(s), eta_n(s))`` the
returned ``eta_{n+1}`` is within ``tol`` of the projected fixed point
``eta_C``. ``eta_C`` itself differs from the true return distribution: when
the support covers ``[min r / (1 - gamma), max r / (1 - gamma)]``, ``max_s
l2(eta_C(s), eta^pi(s)) <= (max_s l2(Pi_C eta^pi(s), eta^pi(s))) / sqrt(1 -
gamma) <= sqrt(max_i (z_{i+1} - z_i) / (1 - gamma))`` (ibid.), and
its mean equals ``V^pi`` exactly.

Unit mass: the iterative solvers (:func:`categorical_evaluation`,
:func:`categorical_control`) divide every state-action backup by its mass,
the sum of its transition row. Stored float rows sum to 1 only up to
rounding (or the validation's ``atol``), and iterated backups would let the
mass drift by that error at every step; with the division the solvers
iterate, return and bound the backup of the MDP whose rows are divided by
their sums (the same MDP when the rows sum to 1). The public backups
(:func:`categorical_q_backup`, :func:`categorical_policy_backup`) and the
finite-horizon solvers use the rows as stored.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.distributional import evaluation as ev
from jaxrl_dp.distributional.base import (CategoricalResult, categorical_distribution,
                                          check_atoms_probs, check_probs,
                                          check_support)
from jaxrl_dp.distributional.risk import as_risk


# -------------------------------------------------------------- projection
def project(atoms: jax.Array, probs: jax.Array, support: jax.Array) -> jax.Array:
  """Unchecked Cramer projection (the kernel behind :func:`categorical_project`).

  ``atoms, probs [..., M]`` (broadcastable), ``support [N]`` -> ``[..., N]``.
  O(M log N) per distribution: a ``searchsorted`` and a scatter-add.
  """
  shape = jnp.broadcast_shapes(atoms.shape, probs.shape)
  dtype = jnp.result_type(probs.dtype, support.dtype)
  probs = jnp.broadcast_to(probs, shape).astype(dtype)
  n = support.shape[-1]
  if n == 1:
    return jnp.sum(probs, axis=-1, keepdims=True)
  x = jnp.clip(jnp.broadcast_to(atoms, shape).astype(dtype), support[0], support[-1])
  lo = jnp.clip(jnp.searchsorted(support, x, side="right") - 1, 0, n - 2)
  z_lo, z_hi = support[lo], support[lo + 1]
  w_hi = probs * ((x - z_lo) / (z_hi - z_lo))
  w_lo = probs - w_hi
  batch, m = shape[:-1], shape[-1]
  b = math.prod(batch)
  rows = jnp.arange(b)[:, None]
  lo = lo.reshape(b, m)
  out = jnp.zeros((b, n), dtype)
  out = out.at[rows, lo].add(w_lo.reshape(b, m))
  out = out.at[rows, lo + 1].add(w_hi.reshape(b, m))
  return out.reshape(batch + (n,))


def categorical_project(atoms: ArrayLike, probs: ArrayLike, support: ArrayLike) -> jax.Array:
  """Cramer (L2) projection of discrete distributions onto a fixed support.

  Args:
    atoms: ``[..., M]`` locations (any order, any range).
    probs: ``[..., M]`` probabilities (broadcastable against ``atoms``), a
      distribution over the last axis.
    support: ``[N]`` strictly increasing, uniform or not.

  Returns:
    ``[..., N]`` probabilities on ``support``. Mass outside ``[z_0, z_{N-1}]``
    goes to the end atom; the total mass is conserved; atoms on the support
    stay put. Example: atoms ``[0, 1, 2, 3, 4]`` with probs ``[.1, .2, .1,
    .3, .3]`` onto ``[3, 4, 5, 6, 7]`` gives ``[.7, .3, 0, 0, 0]``.

  Raises:
    InvalidMDPError: support not rank 1 / empty / not strictly increasing,
      shapes that do not match, probabilities not a distribution (value
      checks only for concrete inputs; under ``jit`` they are skipped).

  Examples:
    Mass at or below ``z_0 = 3`` goes to 3 (``.1 + .2 + .1 + .3``), the atom
    at 4 stays; a Dirac at 0.25 between support points 0 and 0.5 is split
    in half.

    >>> import jax.numpy as jnp
    >>> from jaxrl_dp import distributional
    >>> p = distributional.categorical_project(
    ...     jnp.arange(5.0), jnp.array([0.1, 0.2, 0.1, 0.3, 0.3]),
    ...     jnp.arange(3.0, 8.0))
    >>> [round(x, 5) for x in p.tolist()]
    [0.7, 0.3, 0.0, 0.0, 0.0]
    >>> distributional.categorical_project(
    ...     jnp.array([0.25]), jnp.array([1.0]), jnp.array([0.0, 0.5, 1.0])).tolist()
    [0.5, 0.5, 0.0]
  """
  support = check_support(support)
  atoms, probs = check_atoms_probs(atoms, probs)
  return project(atoms, probs, support)


def cramer_distance(p: jax.Array, q: jax.Array, support: jax.Array) -> jax.Array:
  """Cramer distance ``(int (F_p - F_q)^2)^(1/2)`` of categorical
  distributions on one support: ``[..., N]`` -> ``[...]``.

  Args:
    p: ``[..., N]`` probabilities.
    q: ``[..., N]`` probabilities (broadcastable against ``p``).
    support: ``[N]`` strictly increasing.

  Returns:
    ``[...]`` distances.

  Raises:
    InvalidMDPError: a support that is not ``[N]`` with the probabilities'
      ``N`` (static shapes), or (concrete) not finite and strictly
      increasing.
  """
  p, q = jnp.asarray(p), jnp.asarray(q)
  checked = check_support(support)
  n = checked.shape[0]
  if p.shape[-1:] != (n,) or q.shape[-1:] != (n,):
    raise InvalidMDPError(f"support: {n} atoms, but p has {p.shape[-1:]} and q has "
                          f"{q.shape[-1:]} probabilities on its last axis (expected {n})")
  return _cramer(p, q, jnp.asarray(support))


def _cramer(p: jax.Array, q: jax.Array, support: jax.Array) -> jax.Array:
  """:func:`cramer_distance` without the checks (the solvers' distance)."""
  cp = jnp.cumsum(p, axis=-1)[..., :-1]
  cq = jnp.cumsum(q, axis=-1)[..., :-1]
  return jnp.sqrt(jnp.sum((cp - cq) ** 2 * jnp.diff(support), axis=-1))


def delta_probs(value, support, batch_shape=()) -> jax.Array:
  """``Pi_C delta_value`` broadcast to ``[*batch_shape, N]``."""
  one = project(jnp.full((1,), value, support.dtype), jnp.ones((1,), support.dtype), support)
  return jnp.broadcast_to(one, tuple(batch_shape) + one.shape)


# ------------------------------------------------------------------ backups
def categorical_q_backup(mdp: TabularMDP, probs: jax.Array, support: jax.Array) -> jax.Array:
  """``eta(s, a) = Pi_C sum_k p_k (r_k + gamma Z(s'_k))``: ``[S, N]`` -> ``[S, A, N]``.

  Args:
    mdp: one MDP.
    probs: ``[S, N]`` state return distributions.
    support: ``[N]`` strictly increasing.

  Returns:
    ``[S, A, N]`` the projected backup per action.
  """
  gamma = mdp.discount
  if mdp.transition_rewards is None:
    mixed = bellman.expected_next(mdp, probs)  # [S, A, N]
    atoms = mdp.rewards[..., None] + gamma * support
    return project(atoms, mixed, support)
  vals, p = bellman.gather_next(mdp, probs)  # [S, A, K, N]
  s, a, k = p.shape
  n = support.shape[0]
  atoms = mdp.transition_rewards[..., None] + gamma * support
  w = p[..., None] * vals
  return project(atoms.reshape(s, a, k * n), w.reshape(s, a, k * n), support)


def categorical_policy_backup(mdp: TabularMDP, policy: jax.Array, probs: jax.Array,
                              support: jax.Array) -> jax.Array:
  """``eta(s) = sum_a pi(a|s) eta(s, a)``: ``[S, N]`` -> ``[S, N]``.

  A deterministic policy backs up only its own action.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` or ``float [S, A]``.
    probs: ``[S, N]`` state return distributions.
    support: ``[N]`` strictly increasing.

  Returns:
    ``[S, N]`` the backed-up distributions.
  """
  if bellman.is_deterministic_policy(policy):
    return categorical_q_backup(ev.restrict_to_policy(mdp, policy), probs, support)[:, 0]
  return ev.mix_over_actions(policy, categorical_q_backup(mdp, probs, support))


def _sup_cramer(support):
  return lambda x, y: _cramer(x, y, support)


def _unit_mass(probs: jax.Array) -> jax.Array:
  """``probs [..., N]`` divided by their total mass over the last axis.

  The iterative categorical solvers apply it after every backup. A backup of
  distributions has the mass of the transition row, ``sum_k p(k|s, a)``, and
  stored float rows sum to 1 only up to rounding (and to the ``atol`` the
  validation accepts): iterated, the mass would drift by that error at every
  backup (float32 rows cast from float64 ones, off by 4e-8, at gamma = 0.99:
  a Cramer error of 4.5e-3 after 3e5 backups, reported with a bound of
  3e-6), and no distributional fixed point exists for rows that do not sum
  to 1. Applied to each state-action backup (before a policy mixes them), on
  distributions, it makes the backup exactly that of the MDP with each row
  divided by its sum; that MDP's projected fixed point is what the solvers
  return and bound.
  """
  return probs / jnp.sum(probs, axis=-1, keepdims=True)


def _unit_policy_backup(mdp, policy, probs, support):
  """:func:`categorical_policy_backup` of the unit-mass state-action backups
  (each ``(s, a)`` divided by its row's mass before the policy mixes them):
  ``[S, N]`` -> ``[S, N]``."""
  if bellman.is_deterministic_policy(policy):
    return _unit_mass(categorical_q_backup(ev.restrict_to_policy(mdp, policy), probs,
                                           support)[:, 0])
  return ev.mix_over_actions(policy, _unit_mass(categorical_q_backup(mdp, probs, support)))


# ---------------------------------------------------------------- solvers
@solver(infinite_horizon=True, kind="evaluation", reverse_mode=True)
def categorical_evaluation(mdp: TabularMDP, support: ArrayLike, *,
                           policy: ArrayLike | None = None, tol: float = 1e-6,
                           max_iters: int = 10_000, num_iters: int | None = None,
                           probs0: ArrayLike | None = None) -> CategoricalResult:
  """Return distribution of a policy, discounted, on a fixed support.

  Iterates ``eta <- Pi_C T^pi eta`` from ``probs0`` (default ``Pi_C
  delta_0``). Stopping (see the module docstring): with ``tol`` a number,
  stop once ``sqrt(gamma)/(1 - sqrt(gamma)) * residual <= tol``, which
  guarantees ``max_s l2(eta(s), eta_C(s)) <= tol`` (``eta_C`` the fixed point
  of the projected operator); ``max_iters`` is never changed and
  ``converged`` is False when it runs out. With ``num_iters`` (a fixed
  count) exactly that many backups run (``converged`` True; ``error_bound``
  still holds; ``tol`` and ``max_iters`` unused). In float32 a ``tol`` below
  about ``1e-6`` may be unreachable.

  Args:
    mdp: one MDP, discount in [0, 1) (``jax.vmap`` for batches).
    support: ``[N]`` strictly increasing.
    policy: ``None`` (uniform over valid actions), ``int [S]`` or ``float
      [S, A]`` (no mass on masked actions).
    tol, max_iters: stopping rule (``tol`` a finite number >= 0,
      ``max_iters`` a static cap).
    num_iters: a fixed number of backups instead of the stopping rule.
    probs0: optional initial ``[S, N]``.

  Returns:
    :class:`CategoricalResult`: ``probs [S, N]``, ``q_probs [S, A, N]``
    (the backup of ``probs``), ``policy`` None, ``iterations``,
    ``residual``, ``error_bound``, ``converged``.

  Gradients: ``jax.grad`` / ``jax.jvp`` of ``probs`` and ``q_probs`` with
  respect to the rewards, ``probs``, ``transition_rewards`` and the discount
  of the MDP, a stochastic ``policy [S, A]`` and the ``support``, by the
  implicit function theorem at the projected fixed point ``eta_C = Pi_C T^pi
  eta_C`` (:func:`~jaxrl_dp.planning.implicit.implicit_fixed_point` in CDF
  coordinates; never through the iterations): the derivative of ``eta_C``,
  exact where no atom ``r + gamma z`` sits on a support point (the projection
  is piecewise linear in the atoms; at a support point the derivative of
  the piece to its left or right is taken). ``probs0`` and ``tol`` get zero
  derivatives. With ``num_iters`` the derivative is that of the iterate
  (through the ``fori_loop``).
  """
  ev.check_mdp(mdp, infinite_horizon=True)
  policy = ev.policy_or_uniform(policy, mdp)  # checked before any int32 cast
  support = check_support(support)
  tol, count, use_tol = ev.check_options(tol, max_iters, num_iters)
  s = mdp.rewards.shape[0]
  probs0 = ev.check_initial(probs0, (s, support.shape[0]), "probs0")
  if probs0 is not None:
    check_probs(probs0, "probs0")
  return _evaluation(mdp, policy, support, probs0, tol, max_iters=count, use_tol=use_tol)


@functools.partial(jax.jit, static_argnames=("max_iters", "use_tol"))
def _evaluation(mdp, policy, support, probs0, tol, *, max_iters, use_tol):
  if not use_tol:  # a fixed count: ``jax.grad`` differentiates the iterations
    return _iterated(mdp, policy, support, probs0, tol, max_iters=max_iters, use_tol=False)
  s, n = mdp.rewards.shape[0], support.shape[0]
  if n == 1:  # every distribution is the one atom: no derivative to carry
    args = jax.lax.stop_gradient((mdp, policy, support, probs0, tol))
    return _iterated(*args, max_iters=max_iters, use_tol=True)

  def solve(a):
    res = _iterated(*a, max_iters=max_iters, use_tol=True)
    return res.probs, res.q_probs, res

  def state_backup(a, x):
    m, pol, z = a[0], a[1], a[2].astype(a[0].rewards.dtype)
    return _unit_policy_backup(m, pol, x, z)

  def q_backup(a, x):
    return _unit_mass(categorical_q_backup(a[0], x, a[2].astype(a[0].rewards.dtype)))

  x, q, res = ev.implicit_evaluation(
      solve, state_backup, q_backup, (mdp, policy, support, probs0, tol), (s, n - 1),
      encode=lambda p: jnp.cumsum(p, axis=-1)[:, :-1], decode=_from_cdf)
  return res.replace(probs=x, q_probs=q)


def _from_cdf(cdf):
  """``probs [S, N]`` from the CDF without its last entry ``[S, N - 1]``."""
  one = jnp.ones(cdf.shape[:-1] + (1,), cdf.dtype)
  return jnp.diff(jnp.concatenate([jnp.zeros_like(one), cdf, one], axis=-1), axis=-1)


def _iterated(mdp, policy, support, probs0, tol, *, max_iters, use_tol):
  support, probs0 = _start(mdp, support, probs0)
  sg = jnp.sqrt(mdp.discount)
  step = lambda x: _unit_policy_backup(mdp, policy, x, support)
  x, it, res, bound, conv = ev.fixed_point(
      step, _sup_cramer(support), probs0, tol, max_iters=max_iters,
      use_tol=use_tol, factor=sg / (1.0 - sg))
  q = _unit_mass(categorical_q_backup(mdp, x, support))
  return CategoricalResult(support=support, probs=x, q_probs=q, policy=None,
                           iterations=it, residual=res, error_bound=bound,
                           converged=conv)


def _start(mdp, support, probs):
  """``support [N]`` in the rewards' dtype and the start distributions ``[S, N]``
  (default ``Pi_C delta_0`` in every state)."""
  support = support.astype(mdp.rewards.dtype)
  if probs is None:
    probs = delta_probs(0.0, support, (mdp.rewards.shape[0],))
  return support, probs.astype(support.dtype)


def _terminal(terminal_probs, support, s):
  if terminal_probs is None:
    return None
  tp = ev.check_initial(terminal_probs, (s, support.shape[0]), "terminal_probs")
  check_probs(tp, "terminal_probs")
  return tp


@solver(infinite_horizon=False, kind="finite_horizon", reverse_mode=True)
def categorical_evaluation_finite(mdp: TabularMDP, support: ArrayLike, *, horizon: int,
                                  policy: ArrayLike | None = None,
                                  terminal_probs: ArrayLike | None = None
                                  ) -> CategoricalResult:
  """Return distributions of a policy over a finite horizon (backward induction).

  ``eta_T = terminal_probs`` (default ``Pi_C delta_0``), ``eta_t(s, a) = Pi_C
  sum_k p_k (r_k + gamma eta_{t+1}(s'_k))``, ``eta_t(s) = sum_a pi_t(a|s)
  eta_t(s, a)``. Discount 1 is allowed. On a support that contains every
  reachable return (a lattice for lattice rewards and gamma = 1) the result is
  exact.

  Args:
    mdp: one MDP, discount in [0, 1].
    support: ``[N]``.
    horizon: T, a static Python int >= 1 (keyword).
    policy: ``None`` (uniform over valid actions), stationary ``int [S]`` /
      ``float [S, A]`` or time-dependent ``int [T, S]`` / ``float [T, S, A]``
      (index t = time step).
    terminal_probs: optional ``[S, N]``.

  Returns:
    :class:`CategoricalResult` with ``probs [T + 1, S, N]`` and ``q_probs
    [T, S, A, N]`` indexed by time step (``T - t`` steps to go).

  Gradients: ``jax.grad`` works (a ``lax.scan``).
  """
  ev.check_mdp(mdp, infinite_horizon=False)
  check_horizon(horizon)
  policy = ev.policy_or_uniform(policy, mdp, horizon=horizon)
  support = check_support(support)
  tp = _terminal(terminal_probs, support, mdp.rewards.shape[0])
  return _evaluation_finite(mdp, policy, support, tp, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _evaluation_finite(mdp, policy, support, terminal, *, horizon):
  support, terminal = _start(mdp, support, terminal)
  qb = lambda x: categorical_q_backup(mdp, x, support)
  sb = lambda pol, x, q: ev.mix_over_actions(pol, q)
  xs, qs = ev.finite_evaluation(qb, sb, terminal, policy, horizon)
  it, res, bound, conv = ev.finite_horizon_info(support.dtype, horizon)
  return CategoricalResult(support=support, probs=xs, q_probs=qs, policy=None,
                           iterations=it, residual=res, error_bound=bound,
                           converged=conv)


@solver(infinite_horizon=True, kind="control")
def categorical_control(mdp: TabularMDP, support: ArrayLike,
                        risk: Callable[..., jax.Array] | None = None, *, tol: float = 1e-6,
                        max_iters: int = 10_000, num_iters: int | None = None,
                        probs0: ArrayLike | None = None) -> CategoricalResult:
  """Distributional value iteration with a risk-greedy rule (discounted).

  ``eta(s, .) <- Pi_C T eta``, ``a*(s) = argmax_a risk(eta(s, a))`` over
  valid actions (first maximizer), ``eta(s) <- eta(s, a*(s))``.

  With ``risk`` the mean (default) the means follow value iteration and the
  greedy policy is optimal in the limit, but the distributions need not
  converge when several actions are optimal. For any other risk functional
  the greedy rule is time-inconsistent: there is no contraction and no
  optimality guarantee (that is what stock augmentation,
  :mod:`jaxrl_dp.distributional.stock`, fixes). ``converged`` means the sup
  Cramer distance between the last two iterates fell to ``tol`` before
  ``max_iters`` (``num_iters``: exactly that many backups);
  ``error_bound`` is ``inf``. Gradients: forward mode only.

  Args:
    mdp: one MDP, discount in [0, 1).
    support: ``[N]``.
    risk: callable ``Distribution [..., N] -> [...]`` (default :class:`Mean`);
      pytree risk objects (:class:`CVaR`, ...) can be vmapped over.
    tol, max_iters, num_iters, probs0: as :func:`categorical_evaluation`.

  Returns:
    :class:`CategoricalResult` with ``probs [S, N]``, ``q_probs [S, A, N]``
    (backup of ``probs``) and ``policy int32 [S]`` greedy on ``q_probs``.
  """
  ev.check_mdp(mdp, infinite_horizon=True)
  support = check_support(support)
  risk = as_risk(risk)
  tol, count, use_tol = ev.check_options(tol, max_iters, num_iters)
  s = mdp.rewards.shape[0]
  probs0 = ev.check_initial(probs0, (s, support.shape[0]), "probs0")
  if probs0 is not None:
    check_probs(probs0, "probs0")
  return _control(mdp, support, risk, probs0, tol, max_iters=count, use_tol=use_tol)


def _risk_on_probs(risk, support):
  return lambda q: risk(categorical_distribution(support, q))


@functools.partial(jax.jit, static_argnames=("max_iters", "use_tol"))
def _control(mdp, support, risk, probs0, tol, *, max_iters, use_tol):
  support, probs0 = _start(mdp, support, probs0)
  qb = lambda x: _unit_mass(categorical_q_backup(mdp, x, support))
  step = ev.greedy_step(qb, _risk_on_probs(risk, support), mdp.action_mask)
  x, it, res, _, conv = ev.fixed_point(
      lambda x: step(x)[0], _sup_cramer(support), probs0, tol,
      max_iters=max_iters, use_tol=use_tol, factor=1.0)
  _, q, pol = step(x)
  return CategoricalResult(support=support, probs=x, q_probs=q, policy=pol,
                           iterations=it, residual=res,
                           error_bound=jnp.asarray(jnp.inf, support.dtype),
                           converged=conv)


@solver(infinite_horizon=False, kind="finite_horizon")
def categorical_control_finite(mdp: TabularMDP, support: ArrayLike,
                               risk: Callable[..., jax.Array] | None = None, *,
                               horizon: int,
                               terminal_probs: ArrayLike | None = None
                               ) -> CategoricalResult:
  """Backward induction with a risk-greedy rule over a finite horizon.

  ``eta_t(s, a) = Pi_C sum_k p_k (r_k + gamma eta_{t+1}(s'_k))``, ``a_t(s) =
  argmax_a risk(eta_t(s, a))`` (valid actions, first maximizer), ``eta_t(s) =
  eta_t(s, a_t(s))``. With the mean this is :func:`jaxrl_dp.finite_horizon`
  (exactly, on a support holding every reachable return); for other risk
  functionals it is the time-inconsistent greedy rule (not optimal for the
  risk of the whole return; see :mod:`~jaxrl_dp.distributional.stock`).
  ``horizon`` (T, keyword) is a static Python int >= 1. Gradients: through
  the distributions for a fixed greedy policy (the argmax has none).

  Args:
    mdp: one MDP, discount in [0, 1].
    support: ``[N]``.
    risk: as :func:`categorical_control` (default the mean).
    horizon: T, a static Python int >= 1 (keyword).
    terminal_probs: optional ``[S, N]``.

  Returns:
    :class:`CategoricalResult` with ``probs [T + 1, S, N]``, ``q_probs
    [T, S, A, N]``, ``policy int32 [T, S]`` (index t = time step).
  """
  ev.check_mdp(mdp, infinite_horizon=False)
  check_horizon(horizon)
  support = check_support(support)
  risk = as_risk(risk)
  tp = _terminal(terminal_probs, support, mdp.rewards.shape[0])
  return _control_finite(mdp, support, risk, tp, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _control_finite(mdp, support, risk, terminal, *, horizon):
  support, terminal = _start(mdp, support, terminal)
  qb = lambda x: categorical_q_backup(mdp, x, support)
  xs, qs, pols = ev.finite_control(qb, _risk_on_probs(risk, support),
                                   mdp.action_mask, terminal, horizon)
  it, res, bound, conv = ev.finite_horizon_info(support.dtype, horizon)
  return CategoricalResult(support=support, probs=xs, q_probs=qs, policy=pols,
                           iterations=it, residual=res, error_bound=bound,
                           converged=conv)


__all__ = ["categorical_project", "cramer_distance", "categorical_q_backup",
           "categorical_policy_backup", "categorical_evaluation",
           "categorical_evaluation_finite", "categorical_control",
           "categorical_control_finite", "delta_probs", "project"]

