"""Result pytrees returned by the solvers (frozen ``flax.struct`` dataclasses)."""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class Solution:
  """Result of an infinite-horizon control solver (one MDP; vmap adds ``B``).

  Attributes:
    values: ``[S]`` value estimate V.
    q: ``[S, A]`` action values ``r + gamma * P V`` of the returned ``values``
      (masked actions keep their computed value; they never win the argmax).
    policy: ``int32 [S]`` greedy policy with respect to ``q`` (valid actions).
    iterations: ``int32 []`` number of Bellman backups (VI, MPI) or policy
      improvement steps (PI) performed.
    residual: ``[]`` the stopping statistic of the last iteration (see each
      solver's docstring).
    converged: ``bool []`` ``error_bound <= tol`` (for policy iteration: the
      policy is stable and ``error_bound`` is finite). Never True with
      non-finite values or a discount outside ``[0, 1)``.
    error_bound: ``[]`` a bound on ``max_s |values(s) - V*(s)|`` that holds in
      floating point (rounding of every backup included; ``V*`` of the MDP
      as stored), whatever ``converged`` says; ``inf`` when none can be given.
  """

  values: jax.Array
  q: jax.Array
  policy: jax.Array
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array
  error_bound: jax.Array


@flax.struct.dataclass
class PolicyEvaluation:
  """Result of :func:`jaxrl_dp.policy_evaluation`.

  Attributes:
    values: ``[S]`` V^pi.
    q: ``[S, A]`` Q^pi.
    iterations: ``int32 []`` backups performed (0 for the exact solve).
    residual: ``[]`` sup-norm of ``T_pi V - V`` at the returned V (exact) or
      the last ``||V_{n+1} - V_n||_inf`` (iterative).
    converged: ``bool []`` ``error_bound <= tol`` (exact: ``error_bound``
      finite); never True with non-finite values or an invalid discount.
    error_bound: ``[]`` a bound on ``max_s |values(s) - V^pi(s)|`` that holds
      in floating point; ``inf`` when none can be given.
  """

  values: jax.Array
  q: jax.Array
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array
  error_bound: jax.Array


@flax.struct.dataclass
class FiniteHorizonSolution:
  """Result of :func:`jaxrl_dp.finite_horizon` (backward induction).

  Index ``t`` is the time step (0 = first decision); ``values[T]`` is the
  terminal value.

  Attributes:
    values: ``[T + 1, S]`` optimal value with ``T - t`` steps to go.
    q: ``[T, S, A]``.
    policy: ``int32 [T, S]`` greedy (first maximizer among valid actions).
  """

  values: jax.Array
  q: jax.Array
  policy: jax.Array
