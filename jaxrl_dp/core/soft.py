"""Entropy-regularized (soft) Bellman primitives and the soft operator.

With temperature ``tau > 0`` and an optional reference policy ``ref [S, A]``
(the KL-regularized / mirror-descent form; default: the entropy form, i.e.
``ref = 1`` on every valid action), the soft backup of ``q [S, A]`` is

  ``soft_max(q)(s) = tau * log sum_{a valid, ref > 0} ref(a|s) exp(q(s, a) / tau)``

and the soft-greedy policy is ``pi(a|s) = ref(a|s) exp((q(s, a) - soft_max(q)(s))
/ tau)`` (a softmax; zero on masked actions and where ``ref = 0``). It is
the value of ``max_pi sum_a pi (q - tau log(pi / ref))`` (without ``ref``:
``+ tau H(pi)``), so ``V_soft = max_pi E[sum_t gamma^t (r - tau
KL(pi || ref))]``.

Stable evaluation: with ``x(s, a) = q(s, a) + tau log ref(a|s)`` and ``m(s)
= max_a x`` over the actions that count, ``soft_max(q) = m + tau log sum_a
exp((x - m) / tau)``; the largest term is exactly ``exp(0) = 1``, so the sum
is in ``[1, A]``: no overflow, no ``log 0``, for any ``|q| / tau`` (``q ~
1e4``, ``tau = 1e-3`` is fine). Masked actions never enter the sum. As ``tau
-> 0`` (without ``ref``) ``max_a q <= soft_max(q) <= max_a q + tau log A``.

The soft backup ``T v = soft_max(r + gamma P v)`` is monotone and
translation-equivariant (``T(v + c) = T v + gamma c``), hence a
gamma-contraction in the sup norm with the same modulus as the hard backup
(gamma times the largest stored row sum): the certified bounds of
:mod:`jaxrl_dp.core.iteration` apply, with the rounding bound
:func:`soft_backup_rounding`.
"""

from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.iteration import (BackupRounding, gamma_n, contraction_modulus,
                                     discount_ok, matmul_roundoff, row_sum_stats,
                                     unit_roundoff)
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.operators import ModelOperator

#: Accuracy assumed of the computed ``exp`` and ``log`` (in units of ``u =
#: eps / 2``: 8 u = 4 ulps; XLA's are within 1 to 2 ulps on CPU and GPU).
ELEMENTARY_ULPS = 8.0


# ------------------------------------------------------------- results
@flax.struct.dataclass
class SoftSolution:
  """Result of the soft (entropy-regularized) control solvers (one MDP).

  Attributes:
    values: ``[S]`` soft values ``V``.
    q: ``[S, A]`` soft action values ``r + gamma P V`` of the returned values.
    policy: ``[S, A]`` the soft-greedy (softmax) policy of ``q``:
      probabilities, zero on masked actions (and where ``ref = 0``).
    iterations: ``int32 []`` backups (soft VI) or improvement steps (soft PI).
    residual: ``[]`` the last step's stopping statistic.
    converged: ``bool []`` ``error_bound <= tol``.
    error_bound: ``[]`` a floating-point-safe bound on ``max_s |values(s) -
      V_soft(s)|`` (rounding of the log-sum-exp included); ``inf`` when none.
  """

  values: jax.Array
  q: jax.Array
  policy: jax.Array
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array
  error_bound: jax.Array


@flax.struct.dataclass
class SoftFiniteHorizonSolution:
  """Result of :func:`jaxrl_dp.planning.soft_finite_horizon`.

  Attributes:
    values: ``[T + 1, S]`` soft values with ``T - t`` steps to go
      (``values[T]`` the terminal values).
    q: ``[T, S, A]``.
    policy: ``[T, S, A]`` softmax probabilities (zero on masked actions).
  """

  values: jax.Array
  q: jax.Array
  policy: jax.Array


# ---------------------------------------------------------- primitives
def _counted(action_mask, ref):
  """bool ``[..., A]``: actions that enter the log-sum-exp."""
  return action_mask if ref is None else action_mask & (ref > 0)


def _exponents(q, action_mask, temperature, ref):
  """``(z, m, counted)``: ``z = (x - m) / tau`` with ``x = q + tau log ref``
  and ``m`` its row max over the counted actions (``[...]``, held constant for
  differentiation: the result does not depend on it); ``z = -inf`` where not
  counted. Nothing infinite enters an arithmetic operation (NaN-free
  gradients, also with respect to ``tau``)."""
  counted = _counted(action_mask, ref)
  x = q
  if ref is not None:
    x = q + temperature * jnp.log(jnp.where(counted, ref, 1.0))
  m = jnp.max(jnp.where(counted, x, -jnp.inf), axis=-1)
  m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
  x = jnp.where(counted, x, m[..., None])
  z = jnp.where(counted, (x - m[..., None]) / temperature, -jnp.inf)
  return z, m, counted


def soft_max(q: jax.Array, action_mask: jax.Array, temperature,
             ref: Optional[jax.Array] = None) -> jax.Array:
  """``tau log sum_a ref exp(q / tau)`` over valid actions: ``[..., A] ->
  [...]`` (stable; see the module docstring). Differentiable: the gradient
  with respect to ``q`` is :func:`soft_policy`."""
  z, m, _ = _exponents(q, action_mask, temperature, ref)
  return m + temperature * jnp.log(jnp.sum(jnp.exp(z), axis=-1))


def soft_policy(q: jax.Array, action_mask: jax.Array, temperature,
                ref: Optional[jax.Array] = None) -> jax.Array:
  """The softmax policy ``ref exp((q - soft_max(q)) / tau)``, ``[..., A]``,
  zero on masked actions (rows sum to 1)."""
  z, _, counted = _exponents(q, action_mask, temperature, ref)
  w = jnp.exp(z)
  return jnp.where(counted, w / jnp.sum(w, axis=-1, keepdims=True), 0.0)


def log_ratio(policy: jax.Array, ref: Optional[jax.Array] = None) -> jax.Array:
  """``log(pi / ref)`` ``[S, A]`` where ``pi > 0`` (0 elsewhere; a safe log:
  the gradient with respect to a zero probability is that of ``log 1``);
  ``+inf`` where ``pi > 0`` and ``ref = 0`` (an infinite KL)."""
  pos = policy > 0
  out = jnp.log(jnp.where(pos, policy, 1.0))
  if ref is not None:
    out = out - jnp.log(jnp.where(pos & (ref > 0), ref, 1.0))
    out = jnp.where(pos & ~(ref > 0), jnp.inf, out)
  return jnp.where(pos, out, 0.0)


def regularized_rewards(mdp: TabularMDP, policy: jax.Array, temperature,
                        ref: Optional[jax.Array] = None) -> jax.Array:
  """``r(s, a) - tau log(pi(a|s) / ref(a|s))`` ``[S, A]`` (``r`` where ``pi =
  0``): ``sum_a pi (.)`` is the entropy-regularized reward ``r_pi + tau H(pi)``
  (``r_pi - tau KL(pi || ref)`` with ``ref``)."""
  lr = log_ratio(policy, ref)
  # tau = 0 is plain evaluation even where the KL is infinite (no 0 * inf).
  return mdp.rewards - jnp.where(jnp.isinf(lr) & (temperature == 0), 0.0, temperature * lr)


def soft_backup_rounding(mdp: TabularMDP, temperature,
                         ref: Optional[jax.Array] = None) -> BackupRounding:
  """Bound on the rounding of one computed soft backup ``v -> fl(T v)``.

  ``||fl(T v) - T v|| <= value_coeff ||v|| + next_coeff ||T v|| + offset``.
  Derivation (``u`` the unit roundoff, ``u_mm`` a dense ``dot``'s input
  rounding, ``n`` the largest number of terms of one expectation, ``rho`` the
  largest row sum, ``A'`` the number of actions, ``c = ELEMENTARY_ULPS``
  bounds the relative error of ``exp`` and ``log`` in units of ``u``,
  ``R = max |r|``, ``L = max |log ref|`` over counted actions, 0 without
  ``ref``):

  1. ``q = r + gamma E[v]``: ``|fl(q) - q| <= gamma rho (gamma_n + 2 u_mm +
     u) ||v|| + u |q|`` (as :func:`jaxrl_dp.core.iteration.backup_rounding`).
  2. ``x = q + tau log ref``: adds ``(c + 2) u tau L + u |q|``. The
     log-sum-exp is 1-Lipschitz in the sup norm of ``x``, so these errors
     pass through with their max over actions, and ``|q| <= R + gamma rho
     ||v||``.
  3. ``m = max x`` is exact; the largest term is exactly 1. Each other term
     ``exp(fl(fl(x - m) / tau))`` has the exponent's relative error ``<=
     gamma_2`` and ``exp``'s ``c u``: absolute error ``<= exp(t)(e^{gamma_2
     |t|} - 1) + c u <= (gamma_2 + c u)(1 + 2 u)`` (``t e^{-t} <= 1/e``), and
     underflow adds at most ``tiny`` per term; summing adds ``gamma_{A'-1}``
     relative. The sum ``S >= 1``, so ``|log fl(S) - log S| <= eta (1 + 2
     eta)`` with ``eta = A' (gamma_2 + c u) + gamma_{A'-1} + A' tiny``; the
     computed log adds ``c u log A'``; multiplying by ``tau`` adds ``u tau
     log A'``; adding ``m`` adds ``u |T v|``.

  Hence ``value_coeff = gamma rho (gamma_n + 2 u_mm + 3 u)``, ``next_coeff =
  u`` and ``offset = 2 u R + (c + 2) u tau L + tau (eta (1 + 2 eta) + (c +
  1) u log A')``, each times ``1 + 8 u`` (second-order terms).
  """
  dtype = mdp.probs.dtype
  u = unit_roundoff(dtype)
  c = ELEMENTARY_ULPS
  u_mm = 0.0 if mdp.is_sparse else matmul_roundoff(dtype)
  n, row_max, _ = row_sum_stats(mdp)
  a = mdp.rewards.shape[-1]
  gamma = jnp.abs(mdp.discount)
  tau = jnp.abs(jnp.asarray(temperature, dtype))
  slack = 1 + 8 * u
  counted = _counted(mdp.action_mask, ref)
  r_max = jnp.max(jnp.where(mdp.action_mask, jnp.abs(mdp.rewards), 0.0))
  if ref is None:
    l_max = jnp.zeros((), dtype)
  else:
    l_max = jnp.max(jnp.where(counted, jnp.abs(jnp.log(jnp.where(counted, ref, 1.0))), 0.0))
  tiny = float(np.finfo(np.dtype(dtype)).tiny)
  eta = a * (gamma_n(2, u) + c * u) * (1 + 2 * u) + gamma_n(max(a - 1, 1), u) + a * tiny
  log_a = float(np.log(max(a, 1)))
  value_coeff = gamma * row_max * (gamma_n(n, u) + 2 * u_mm + 3 * u) * slack
  offset = (2 * u * r_max + (c + 2) * u * tau * l_max
            + tau * (eta * (1 + 2 * eta) + (c + 1) * u * log_a)) * slack
  return BackupRounding(jnp.asarray(value_coeff, dtype), jnp.asarray(u * slack, dtype),
                        jnp.asarray(offset, dtype))


# ------------------------------------------------------------ operator
@flax.struct.dataclass
class SoftOperator(ModelOperator):
  """The soft Bellman operator ``(T v)(s) = tau log sum_a ref exp((r + gamma
  P v)(s, a) / tau)`` of one MDP, with the methods of
  :class:`jaxrl_dp.core.operators.NominalOperator` (so
  :func:`jaxrl_dp.planning.value_iteration.value_iteration_solver` runs it).

  Attributes:
    mdp: one :class:`TabularMDP`.
    temperature: ``[]`` ``tau > 0`` (traced: differentiable).
    ref_policy: optional ``[S, A]`` reference policy (KL-regularized form);
      ``None``: entropy regularization.
  """

  mdp: TabularMDP
  temperature: jax.Array
  ref_policy: Optional[jax.Array] = None

  def q_values(self, v: jax.Array) -> jax.Array:
    """``v [S] -> q [S, A]``: ``r + gamma E[v]``."""
    return bellman.q_values(self.mdp, v)

  def soft_max(self, q: jax.Array) -> jax.Array:
    return soft_max(q, self.mdp.action_mask, self.temperature, self.ref_policy)

  def apply(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One soft backup: ``v [S] -> (T v [S], q [S, A])``."""
    q = self.q_values(v)
    return self.soft_max(q), q

  def greedy(self, q: jax.Array) -> jax.Array:
    """``q [S, A] -> [S, A]``: the softmax policy."""
    return soft_policy(q, self.mdp.action_mask, self.temperature, self.ref_policy)

  def policy_apply(self, v: jax.Array, policy: jax.Array) -> jax.Array:
    """The regularized policy backup ``sum_a pi (r - tau log(pi / ref)) +
    gamma P_pi v`` of a stochastic ``policy [S, A]``."""
    rr = regularized_rewards(self.mdp, policy, self.temperature, self.ref_policy)
    return bellman.policy_backup(self.mdp.replace(rewards=rr), policy, v)

  def rounding(self, policy: Optional[jax.Array] = None) -> BackupRounding:
    """Rounding bound of one computed soft backup (:func:`soft_backup_rounding`)."""
    return soft_backup_rounding(self.mdp, self.temperature, self.ref_policy)

  def modulus(self, policy: Optional[jax.Array] = None) -> jax.Array:
    """``[]`` gamma times the largest stored row sum (the soft max is
    1-Lipschitz in the sup norm)."""
    return contraction_modulus(self.mdp)

  def row_deviation(self) -> jax.Array:
    """``[]`` bound on ``max |sum_k p_k - 1|`` over valid rows."""
    return row_sum_stats(self.mdp)[2]

  def valid(self) -> jax.Array:
    """``bool []``: discount in ``[0, 1)`` and ``temperature > 0`` (finite)."""
    t = jnp.asarray(self.temperature)
    return discount_ok(self.mdp.discount) & (t > 0) & jnp.isfinite(t)
