"""Implicit gradients through the (s, a)-rectangular robust solvers.

The robust value ``V`` is the fixed point of ``V = T V`` with ``(T V)(s) =
max_a sigma_{s,a}(r(s, a, .) + gamma V)``. By the implicit function theorem
(:func:`jaxrl_dp.planning.implicit.implicit_fixed_point`) its derivative is

  ``dV = (I - gamma P*_pi)^{-1} d_theta T_pi``

where ``pi`` is the returned greedy policy (hard max: the envelope theorem
over actions, the first maximizer at ties) and ``P*`` the adversary's kernel
at the fixed point: the derivative of each inner value ``sigma`` w.r.t. the
slot values is its worst-case distribution (Danskin). ``d_theta T_pi`` is the
derivative of one robust policy backup at the fixed point w.r.t. the rewards,
the nominal probabilities (their stored entries, dense or sparse), the
discount, the set's size (radius or penalty weight) and a float policy:
that of the OPTIMAL inner value, i.e. with the inner problem's solution
moving with its inputs (its Lagrangian's derivative). Per set:

  * ``tv_penalty``, ``kl_penalty``, ``chi2_penalty``, ``l1_ball``, ``lp_ball``:
    the inner value is an exact closed form (up to the bisection of ``lp_ball``
    for p not in {1, 2, inf}, whose centre enters only at its optimum), so JAX
    differentiates it directly: exact at points where the worst case and its
    active set (the sort order, the clipped slots) are locally constant;
  * ``chi2_ball``: its custom JVP (multiplier of the chi-square constraint);
  * ``kl_ball``: the envelope JVP of :mod:`jaxrl_dp.robust.envelope` (the
    multiplier recovered from ``P*``);
  * ``wasserstein_ball``: derivatives w.r.t. rewards, discount, initial
    distribution and a float policy only; asking for the probabilities',
    radius' or cost's raises :class:`~jaxrl_dp.InvalidMDPError` naming the
    set.

The linear solve uses the adjoint of :class:`~jaxrl_dp.planning.ImplicitAdjoint`
(GMRES by default) with the transposed matvec of the linearized backup
(``gamma P*_pi^T``, a scatter-add on the sparse layout); memory ``O(S A K)``,
never the solver's iterations. Every output that is recomputed from the
differentiable values carries derivatives (``values``, ``q``); the others
(``worst_probs``, ``policy``, ``iterations``, ``residual``, ``error_bound``,
``converged``) have zero derivatives. The derivative is that of the exact
fixed point evaluated at the returned values (error of the order of the
solve's ``tol`` times ``1 / (1 - gamma)``).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax

from jaxrl_dp.planning.implicit import ImplicitAdjoint, implicit_fixed_point
from jaxrl_dp.robust.robust_vi import robust_policy_backup, robust_q_values


@jax.jit
def _robust_q(mdp, v, uset):
  return robust_q_values(mdp, v, uset)[0]


def implicit_robust_solution(solve: Callable, mdp, uset, *args,
                             adjoint: Optional[ImplicitAdjoint] = None):
  """A robust control solver with implicit derivatives.

  ``solve(mdp, uset, *args)`` returns a
  :class:`~jaxrl_dp.robust.RobustSolution` (values, greedy ``int32 [S]``
  policy, ``q``, ``worst_probs``, ...) by any method (robust VI, MPI).
  Returns the same result whose ``values`` carry the derivative of the fixed
  point of the robust policy backup of the RETURNED policy (module
  docstring), and ``q`` recomputed from them (so it carries derivatives).
  Every array ``solve`` needs must be in ``args`` (static options:
  ``functools.partial``).
  """
  def run(a):
    sol = solve(*a)
    return sol.values, sol

  def backup(a, sol, v):
    return robust_policy_backup(a[0], sol.policy, v, a[1])

  v, sol = implicit_fixed_point(run, backup, (mdp, uset) + tuple(args), adjoint=adjoint)
  return sol.replace(values=v, q=_robust_q(mdp, v, uset))


def implicit_robust_evaluation(solve: Callable, mdp, policy, uset, *args,
                               adjoint: Optional[ImplicitAdjoint] = None):
  """Robust policy evaluation with implicit derivatives.

  ``solve(mdp, policy, uset, *args)`` returns a
  :class:`~jaxrl_dp.robust.RobustPolicyEvaluation`; the returned ``values``
  carry the derivative of the fixed point of ``T_pi`` (the adversary moves
  with the inputs, module docstring) w.r.t. ``mdp``, ``uset`` and a float
  ``policy [S, A]``; ``q`` is recomputed from them.
  """
  def run(a):
    res = solve(*a)
    return res.values, res

  def backup(a, _res, v):
    return robust_policy_backup(a[0], a[1], v, a[2])

  v, res = implicit_fixed_point(run, backup, (mdp, policy, uset) + tuple(args),
                                adjoint=adjoint)
  return res.replace(values=v, q=_robust_q(mdp, v, uset))
