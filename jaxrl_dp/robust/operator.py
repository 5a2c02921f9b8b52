"""The robust Bellman operator for the solver protocol.

:class:`RobustOperator` carries one MDP and one :class:`UncertaintySet` and
has the methods of :class:`jaxrl_dp.core.operators.NominalOperator`
(``apply``, ``apply_rows``, ``q_values``, ``greedy``, ``policy_apply``,
``rounding``, ``modulus``, ``row_deviation``, ``valid``), so every solver of
:mod:`jaxrl_dp.core.protocol` (value iteration with the sup or span rule,
and the accelerations written over an operator) runs the robust backup of
:mod:`jaxrl_dp.robust.robust_vi` (transition rewards inside the inner
problem, penalties weighted ``gamma * lam``)::

  from jaxrl_dp.core.protocol import iterative_solve
  from jaxrl_dp.planning.value_iteration import value_iteration_solver
  op = RobustOperator(mdp, l1_ball(0.2))
  sol = iterative_solve(value_iteration_solver("sup"), op, v0, tol, max_iters=1000)

No checks happen here (use :func:`jaxrl_dp.robust.robust_value_iteration`
at a public boundary, or check first with
:func:`jaxrl_dp.robust.check_uset_for_mdp`).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.iteration import BackupRounding, row_sum_stats, unit_roundoff
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.operators import ModelOperator
from jaxrl_dp.robust.certificates import is_numerical
from jaxrl_dp.robust.robust_vi import (certified_result, robust_bellman, robust_modulus,
                                       robust_policy_backup, robust_q_values,
                                       robust_rounding)
from jaxrl_dp.robust.uncertainty_sets import UncertaintySet


class _Given(NamedTuple):
  """A solver's bound, as :func:`certified_result` reads it."""
  error_bound: jax.Array
  converged: jax.Array


@flax.struct.dataclass
class RobustOperator(ModelOperator):
  """``(T v)(s) = max_a sigma_{s,a}(r(s, a, .) + gamma v)`` of one MDP and
  one (s, a)-rectangular set, with what certificates need.

  The steps' bounds cover the rounding of every inner problem and
  ``lp_ball``'s bisection a priori; the numerical inner problems
  (``kl_ball``, ``wasserstein_ball``, ``chi2_ball`` with K > 16, see
  :func:`jaxrl_dp.robust.certificates.is_numerical`) are certified at the
  returned values by :meth:`certify_values`, which every solver's
  ``finalize`` calls (:func:`jaxrl_dp.core.protocol.operator_bound`): a
  step count too small for the tolerance then shows in the result's
  ``error_bound`` and ``converged``, not only in the public solvers'. (A
  state read inside a user's own loop has the steps' bound.)

  Attributes:
    mdp: one :class:`TabularMDP` (dense or sparse).
    uset: an :class:`UncertaintySet`, size ``[]`` or ``[S, A]``.
    certify: static; ``False`` skips :meth:`certify_values` (for a caller
      that certifies the returned values itself, as the public solvers of
      :mod:`jaxrl_dp.robust.robust_vi` do with the action values they
      return).
  """

  mdp: TabularMDP
  uset: UncertaintySet
  certify: bool = flax.struct.field(pytree_node=False, default=True)

  def certify_values(self, v: jax.Array, error_bound: jax.Array, converged: jax.Array,
                     tol, policy: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    """``(error_bound, converged)`` that hold at the returned values ``v [S]``
    (``policy``: the evaluated one, None for optimality): the solver's own
    where the set's inner problems are exact or every inner gap at ``v`` is
    within rounding, else the residual certificate at ``v``
    (:func:`jaxrl_dp.robust.robust_vi.certified_result`)."""
    if not self.certify or not is_numerical(self.uset, self.mdp.probs.shape[-1]):
      return error_bound, converged
    given = _Given(error_bound=error_bound, converged=converged)
    _, _, bound, ok = certified_result(self.mdp, self.uset, v, given, tol, policy)
    return bound, ok

  def q_values(self, v: jax.Array) -> jax.Array:
    """``v [S] -> q [S, A]``: the robust action values."""
    return robust_q_values(self.mdp, v, self.uset)[0]

  def apply(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One robust optimality backup: ``v [S] -> (T v [S], q [S, A])``."""
    tv, q, _ = robust_bellman(self.mdp, v, self.uset)
    return tv, q

  def apply_rows(self, v: jax.Array, start, size: int) -> tuple[jax.Array, jax.Array]:
    """The backup of ``size`` (static) consecutive states from ``start``
    (traced, clamped to ``[0, S - size]``): rows of :meth:`apply`, solving
    only those rows' inner problems."""
    s = self.num_states
    start = jnp.clip(start, 0, s - size)
    rows = lambda x: None if x is None else jax.lax.dynamic_slice_in_dim(x, start, size, 0)
    m = self.mdp
    sub = m.replace(probs=rows(m.probs), rewards=rows(m.rewards),
                    action_mask=rows(m.action_mask), next_states=rows(m.next_states),
                    transition_rewards=rows(m.transition_rewards))
    size_ = jnp.asarray(self.uset.size)
    uset = self.uset.replace(size=rows(size_) if size_.ndim else size_)
    tv, q, _ = robust_bellman(sub, v, uset)
    return tv, q

  def greedy(self, q: jax.Array) -> jax.Array:
    """``q [S, A] -> int32 [S]``: first maximizer among valid actions."""
    return bellman.greedy_policy(q, self.mdp.action_mask)

  def policy_apply(self, v: jax.Array, policy: jax.Array) -> jax.Array:
    """``T_pi v [S]`` (the adversary moves too) for ``int [S]`` or ``float
    [S, A]`` policies."""
    return robust_policy_backup(self.mdp, policy, v, self.uset)

  def rounding(self, policy: Optional[jax.Array] = None) -> BackupRounding:
    """Bound on the rounding of one computed robust backup, with the set's
    a-priori inner accuracy (:func:`jaxrl_dp.robust.robust_vi.robust_rounding`;
    the numerical inner problems are certified at the returned values by
    :meth:`certify_values`, not here)."""
    return robust_rounding(self.mdp, policy, uset=self.uset)

  def modulus(self, policy: Optional[jax.Array] = None) -> jax.Array:
    """``[]`` the robust backup's sup-norm modulus (gamma times the largest
    row sum of the adversary's kernels)."""
    return robust_modulus(self.mdp, policy)

  def row_deviation(self) -> jax.Array:
    """``[]`` bound on ``max |sum_k p_k - 1|`` over the adversary's rows:
    the nominal rows' (mass-moving sets keep the sums) or the rounding of a
    renormalised row (``(K + 1) u``)."""
    k = self.mdp.probs.shape[-1]
    u = unit_roundoff(self.dtype)
    return jnp.maximum(row_sum_stats(self.mdp)[2], (k + 1) * u)
