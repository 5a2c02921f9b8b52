"""Finite-horizon backward induction."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.functional_solvers import functional_finite_horizon
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
# check_horizon is also re-exported here for robust.linear_mdps (one check, in core.options).
from jaxrl_dp.core.options import as_values, check_horizon
from jaxrl_dp.core.protocol import backward_induction
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import FiniteHorizonSolution

__all__ = ["finite_horizon"]


@solver(infinite_horizon=False, kind="finite_horizon", reverse_mode=True)
def finite_horizon(mdp: TabularMDP | FunctionalMDP, horizon: int, *,
                   terminal_values: jax.Array | None = None) -> FiniteHorizonSolution:
  """Optimal T-step values by backward induction (``lax.scan``).

  ``V_T = terminal_values`` (default 0), ``Q_t = r + gamma P V_{t+1}``,
  ``V_t = max_a Q_t`` over valid actions. Discount 1 is allowed here.

  Derivatives: ``jax.grad`` works (a ``lax.scan``; the max passes the
  gradient of the chosen action).

  Args:
    mdp: one MDP (``S`` states, ``A`` actions), discount in [0, 1].
    horizon: T, a static Python int in ``[1, 2**31 - 1]``.
    terminal_values: optional ``[S]`` (array or list).

  Returns:
    :class:`FiniteHorizonSolution`: ``values [T+1, S]``, ``q [T, S, A]``,
    ``policy int32 [T, S]``; index t is the time step (0 = first decision).

  A :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free) is backed
  up blockwise (the ``[T, S, A]`` Q table is still returned).
  """
  # isinstance (is_functional) where mypy must narrow mdp.
  if not isinstance(mdp, FunctionalMDP):
    check_solver_input(mdp, infinite_horizon=False)
  horizon = check_horizon(horizon)
  s = mdp.num_states if isinstance(mdp, FunctionalMDP) else mdp.rewards.shape[0]
  dtype = mdp.dtype if isinstance(mdp, FunctionalMDP) else mdp.rewards.dtype
  if terminal_values is None:
    terminal_values = jnp.zeros((s,), dtype)
  else:
    terminal_values = as_values("terminal_values", terminal_values, (s,), dtype)
  if isinstance(mdp, FunctionalMDP):
    return functional_finite_horizon(mdp, terminal_values, horizon)
  return _finite_horizon(mdp, terminal_values, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _finite_horizon(mdp, terminal_values, *, horizon):
  values, qs = backward_induction(lambda v: bellman.bellman_optimality(mdp, v),
                                   terminal_values, horizon)
  policy = bellman.greedy_policy(qs, mdp.action_mask[None])
  return FiniteHorizonSolution(values=values, q=qs, policy=policy)
