"""Effective-horizon analysis of a finite-horizon MDP.

Implements, in JAX, the definitions of "Bridging RL Theory and Practice with
the Effective Horizon" (Laidlaw, Zhu, Russell, Dragan, NeurIPS 2023) as the
BRIDGE dataset's analysis computes them (the golden values of
``shared/data/bridge``). Let ``T`` be the horizon, ``Q^1`` the Q-function of the
exploration policy (uniform over valid actions by default) and
``Q^{i+1} = backup(Q^i)`` (:func:`jaxrl_dp.random_policy.qvi_backup`: step
``t < T - 1`` uses ``max_a Q^i_{t+1}``, the last step is kept).

* ``min_k``: the smallest ``k`` such that acting greedily on ``Q^k`` -- every
  exactly-tied argmax -- takes only optimal actions (``Q*_t(s, a) >=
  V*_t(s) - tol``) at every (t, s) reached that way from the initial support.
* ``epw`` (effective planning window ``W``): the same test starting from
  ``Q^1 = R`` (zero leaf values).
* Simple effective-horizon bound (Theorem 5.4): for ``k = 1, 2, ...`` while
  ``k < H`` (``H`` starts at ``T``), with ``var_t(s, a) = (Q^1 - Qworst) *
  (Q* - Qworst)`` backed up by ``max`` over the next state's actions, walk the
  (t, s) reached from the start by every action whose ``Q^k`` beats the best
  suboptimal action; ``k`` works if at every such (t, s) the best action beats
  the best suboptimal one by ``gap > 0``; then
  ``m_t(s) = max(1, ceil(16 * var / gap^2 * log(2 T A^k)))`` with ``var`` the max
  over the actions at (t, s), ``m_k = max_{t,s} m_t(s)`` (``gaps`` / ``vars``
  report the values at the maximizing (t, s), the first one in state-major,
  time-minor order), ``H_k = k + log_A m_k`` and ``H = min(H, H_k)``.
  ``gap = inf`` when no action is suboptimal.
* Occupancy statistics of the exploration policy from the initial
  distribution, with absorbing zero-reward ("terminal") states excluded and
  zero occupancies ignored (``d_t`` at steps ``t = 0..T-1``):
  ``min_state_occupancy = min_s max_t d_t(s)``,
  ``min_sum_state_occupancy = min_s sum_t d_t(s)``, and the same for
  state-action pairs ``d_t(s, a) = d_t(s) pi_t(a|s)``.
  ``covering_length_bound = log(2 N) / min_state_action_occupancy`` with ``N``
  the number of such (s, a) pairs: a union bound on the number of exploration
  episodes after which every pair has been visited with probability >= 1/2
  (the bound the authors' code documents for the covering length ``L`` of the
  stochastic-environments paper, with ``N`` in place of their ``S * A``).
* Covering length ``L`` ("Bridging", following Liu and Brunskill): the
  number of independent exploration episodes after which every such pair has
  been visited at least once with probability >= 1/2. From the occupancies
  alone ``L`` is not determined (it depends on the joint law of the pairs an
  episode visits), but two bounds are exact integers:
  ``covering_length_lower <= L <= covering_length_upper`` (see
  :func:`covering_length_bounds`; the upper one is the union bound solved
  exactly by bisection, never above ``ceil(covering_length_bound)``).
  :func:`covering_length` computes ``L`` itself by inclusion-exclusion over
  the reachable pairs (``2^N`` forward passes: small MDPs only).

Modules. This module holds the checked host entry points
(:func:`analyze_effective_horizon`, :func:`analyze_effective_horizon_batch`);
the one-MDP kernel and its result type are in
:mod:`~jaxrl_dp.random_policy.horizon_kernel`, the value tables in
:mod:`~jaxrl_dp.random_policy.values`, reachability in
:mod:`~jaxrl_dp.random_policy.reach`, occupancies and the covering length in
:mod:`~jaxrl_dp.random_policy.covering` and the greedy returns in
:mod:`~jaxrl_dp.random_policy.greedy`.

Precision. The golden comparison needs float64: gaps of 1e-11 between Q values
and exact ties decide ``min_k``. :func:`analyze_effective_horizon` and
:func:`analyze_effective_horizon_batch` therefore cast to float64 and trace
under ``jax.enable_x64(True)`` (leaving the global flag alone); the kernel
:func:`~jaxrl_dp.random_policy.effective_horizon_kernel` runs in whatever
dtype the MDP has.

Gradients: none (the results are decided by integer and boolean tests).

Generalizations beyond the paper's deterministic, unmasked setting: maxima,
minima and the uniform policy respect ``action_mask``; ``A`` in ``log(2 T A^k)``
and ``log_A`` is the largest number of valid actions of any state (so a padded
batch from :func:`jaxrl_dp.stack` analyzes each MDP as unpadded); for
stochastic transitions a (t, s) is reached if any next state with positive
probability is, and the variance bound is backed up by the max over those next
states; the discount of the MDP is applied (BRIDGE MDPs have discount 1); the
walk starts from every state with positive initial probability.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_choice, check_int, tol_arg
from jaxrl_dp.random_policy.horizon_kernel import (EffectiveHorizonAnalysis,
                                                   effective_horizon_kernel)
from jaxrl_dp.random_policy.inputs import (REWARD_PRECISION, check_analysis_inputs,
                                           to_float64)

__all__ = ["REWARD_PRECISION", "analyze_effective_horizon", "analyze_effective_horizon_batch"]


@functools.partial(jax.jit, static_argnames=("horizon",))
def _analyze_jit(mdp, policy, tol, *, horizon):
  return effective_horizon_kernel(mdp, horizon, policy=policy, tol=tol)


def analyze_effective_horizon(mdp: TabularMDP | FunctionalMDP, horizon: int, *,
                              policy: ArrayLike | None = None,
                              tol: float = REWARD_PRECISION,
                              x64: bool = True) -> EffectiveHorizonAnalysis:
  """min_k, effective planning window W, and the simple effective-horizon bound.

  See the module docstring for the definitions (they follow the BRIDGE
  dataset's analysis, whose published values this reproduces exactly). A
  host function (NumPy leaves); inside ``jit``/``vmap`` use
  :func:`~jaxrl_dp.random_policy.effective_horizon_kernel`. No gradients.

  Args:
    mdp: one MDP, discount in [0, 1] (BRIDGE: 1).
    horizon: T, a Python int >= 1.
    policy: the exploration policy: ``None`` (uniform over valid actions),
      ``[S, A]`` or ``[T, S, A]``.
    tol: optimality tolerance of the tests, a finite number >= 0.
    x64: compute in float64 under ``jax.enable_x64(True)`` (default; needed
      for the published values). With ``False`` the MDP's dtype is used.

  A :class:`~jaxrl_dp.core.functional.FunctionalMDP` is analyzed through
  ``mdp.materialize()`` (size-checked): the analysis's ``[T, S, A]`` tables
  are larger than the stored model.

  Returns:
    :class:`EffectiveHorizonAnalysis` with NumPy leaves (host values);
    ``result.to_dict()`` gives the dataset's JSON layout.

  Raises:
    InvalidMDPError: horizon < 1, bad discount, ``tol`` negative, NaN, inf or
      not a number, bad exploration policy.
  """
  if isinstance(mdp, FunctionalMDP):  # its [T, S, A] tables outgrow the model: materialize
    mdp = mdp.materialize()
  pol = check_analysis_inputs(mdp, horizon, policy, tol=tol)
  if not x64:
    pol = None if pol is None else jnp.asarray(pol, mdp.rewards.dtype)
    return jax.device_get(_analyze_jit(mdp, pol, tol_arg(tol, mdp.rewards.dtype),
                                       horizon=int(horizon)))
  with jax.enable_x64(True):
    m64, p64 = to_float64((mdp, pol))
    return jax.device_get(_analyze_jit(m64, p64, jnp.float64(tol), horizon=int(horizon)))


STRATEGIES = ("auto", "vmap", "map")


def analyze_effective_horizon_batch(mdps: TabularMDP, horizon: int, *,
                                    policy: ArrayLike | None = None,
                                    tol: float = REWARD_PRECISION, x64: bool = True,
                                    strategy: str = "auto", chunk_size: int = 256,
                                    progress: bool | None = None) -> EffectiveHorizonAnalysis:
  """:func:`analyze_effective_horizon` of every MDP of a stacked batch.

  A thin layer over the one-MDP kernel
  :func:`~jaxrl_dp.random_policy.effective_horizon_kernel`: the same checks
  as the one-MDP call (on the whole batch), the float64 cast, then
  :func:`jaxrl_dp.batch.solve` (chunked, sharded over the devices;
  ``strategy="auto"`` is ``jax.lax.map`` on CPU, where each MDP's loop over k
  stops at its own k, and ``jax.vmap`` on accelerators). With per-MDP
  exploration policies it is :func:`jaxrl_dp.batch.make_batched` of the same
  kernel, the policies passed per MDP.

  ``mdps`` is a batched :class:`TabularMDP` (leaves with a leading ``B``, e.g.
  from :func:`jaxrl_dp.stack`, which pads to common sizes; padding does not
  change any result: padded states are unreachable and padded actions masked).
  All leaves of the result get a leading ``B``; the per-k arrays have fixed
  length T and ``k_valid`` marks the entries each MDP actually produced.

  Args:
    mdps: batched MDP.
    horizon: T shared by the batch (a Python int >= 1).
    policy: ``None`` (uniform) or ``[B, S, A]`` / ``[B, T, S, A]``.
    tol, x64: as in :func:`analyze_effective_horizon`.
    strategy: ``"auto"``, ``"vmap"`` or ``"map"`` (``jax.lax.map``).
    chunk_size: MDPs per compiled chunk of :func:`jaxrl_dp.batch.solve`
      (policy-free case).
    progress: the progress bar of :func:`jaxrl_dp.batch.solve` (one update
      per chunk): ``None`` (auto: on a terminal with more than one chunk),
      ``True`` or ``False``. The per-MDP-policy case has none (one call).

  Returns:
    :class:`EffectiveHorizonAnalysis` whose every field has a leading axis
    ``B``.
  """
  pol = check_analysis_inputs(mdps, horizon, policy, tol=tol, batched=True)
  check_choice("strategy", strategy, STRATEGIES)
  check_int("chunk_size", chunk_size)
  from jaxrl_dp import batch  # local: keeps `import jaxrl_dp.random_policy` light

  def run(m, p, t):
    if p is None:
      return batch.solve(m, effective_horizon_kernel, chunk_size=chunk_size, strategy=strategy,
                         progress=progress, horizon=int(horizon), tol=t)
    batched = batch.make_batched(effective_horizon_kernel, strategy=strategy,
                                 horizon=int(horizon), tol=t)
    return jax.device_get(batched(m, policy=jnp.asarray(p)))

  if not x64:
    pol = None if pol is None else jnp.asarray(pol, mdps.rewards.dtype)
    return run(mdps, pol, float(tol))
  with jax.enable_x64(True):
    m64, p64 = to_float64((mdps, pol))
    return run(m64, p64, float(tol))
