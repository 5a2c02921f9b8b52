"""Result pytrees of the robust solvers (frozen ``flax.struct`` dataclasses).

One policy convention per result type: ``policy`` is always ``int32 [S]``
(``int32 [T, S]`` for the finite horizon). The s-rectangular solver, whose
optimal policies are randomized, returns :class:`SRectangularSolution`, which
adds the randomized policy as ``policy_probs [S, A]``.

Every infinite-horizon result carries the core fields of
:class:`jaxrl_dp.core.types.Solution` (``values, q, policy, iterations,
residual, converged, error_bound``; evaluation results have no ``policy``)
plus the robust ``worst_probs``.
"""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class RobustSolution:
  """Result of a robust control solver (one MDP; ``jax.vmap`` adds axes).

  Attributes:
    values: ``[S]`` robust value estimate V.
    q: ``[S, A]`` robust action values ``sigma_{s,a}(r + gamma V)`` of the
      returned ``values`` (``sigma`` is the inner worst case over the
      per-slot values ``r(s, a, s') + gamma V(s')``; for a penalty set it
      includes the penalty term; with rewards that do not depend on ``s'``
      this is ``r + gamma * sigma_{s,a}(V)``).
    policy: ``int32 [S]`` greedy policy w.r.t. ``q`` (valid actions).
    worst_probs: the worst-case transition kernel at the returned values, in
      the MDP's layout: ``[S, A, S]`` (dense) or ``[S, A, K]`` aligned with
      ``next_states`` (sparse). Rows of masked actions are computed as well.
    iterations: ``int32 []`` robust backups (VI) or improvement steps (MPI).
    residual: ``[]`` ``||V_{n+1} - V_n||_inf`` of the last iteration.
    converged: ``bool []`` whether the stopping rule was met (always False
      for a discount outside ``[0, 1)``, also a traced one).
    error_bound: ``[]`` a bound on ``max_s |values(s) - V*(s)|`` that holds
      whether or not ``converged`` (``inf`` when none is known, e.g. for a
      discount outside ``[0, 1)``); see each solver's docstring.
  """

  values: jax.Array
  q: jax.Array
  policy: jax.Array
  worst_probs: jax.Array
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array
  error_bound: jax.Array


@flax.struct.dataclass
class SRectangularSolution:
  """Result of :func:`jaxrl_dp.robust.s_rectangular_l1_value_iteration`.

  s-rectangular sets need randomized policies: the optimal policy is
  ``policy_probs``. ``policy`` keeps the library's ``int32 [S]`` convention
  and holds the most probable action of ``policy_probs`` (the first one on
  ties); it is NOT an optimal policy in general (a deterministic policy can
  be strictly worse against an s-rectangular adversary).

  Attributes:
    values: ``[S]`` robust value estimate V.
    q: ``[S, A]`` per-action values ``r + gamma * worst_probs[s, a] . V``
      under the adversary's kernel at the returned values (equal to
      ``values`` on the actions ``policy_probs`` plays).
    policy: ``int32 [S]`` ``argmax_a policy_probs`` (see above).
    policy_probs: ``[S, A]`` the optimal randomized policy's action
      probabilities.
    worst_probs: ``[S, A, K]`` the adversary's kernel (MDP layout).
    iterations, residual, converged, error_bound: as in
      :class:`RobustSolution`.
  """

  values: jax.Array
  q: jax.Array
  policy: jax.Array
  policy_probs: jax.Array
  worst_probs: jax.Array
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array
  error_bound: jax.Array


@flax.struct.dataclass
class RobustPolicyEvaluation:
  """Result of :func:`jaxrl_dp.robust.robust_policy_evaluation`.

  Attributes:
    values: ``[S]`` robust value V^pi of the policy.
    q: ``[S, A]`` robust Q^pi ``= sigma_{s,a}(r + gamma V^pi)``.
    worst_probs: the adversary's kernel at ``V^pi`` in the MDP's layout
      (``[S, A, S]`` or ``[S, A, K]``), every action's row included.
    iterations: ``int32 []`` backups performed.
    residual: ``[]`` last ``||V_{n+1} - V_n||_inf``.
    converged: ``bool []`` (False for a discount outside ``[0, 1)``).
    error_bound: ``[]`` a bound on ``max_s |values(s) - V^pi_robust(s)|``.
  """

  values: jax.Array
  q: jax.Array
  worst_probs: jax.Array
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array
  error_bound: jax.Array


@flax.struct.dataclass
class RobustFiniteHorizonSolution:
  """Result of :func:`jaxrl_dp.robust.robust_finite_horizon`.

  Index ``t`` is the time step (0 = first decision); ``values[T]`` is the
  terminal value.

  Attributes:
    values: ``[T + 1, S]``.
    q: ``[T, S, A]``.
    policy: ``int32 [T, S]``.
    worst_probs: ``[T, S, A, K]`` the adversary's kernel used at step t.
  """

  values: jax.Array
  q: jax.Array
  policy: jax.Array
  worst_probs: jax.Array
