"""Returns of acting greedily on ``Q^k`` with worst-case tie-breaking.

``J_k`` (:func:`greedy_returns_kernel`: one MDP, pure, jittable, vmappable;
:func:`greedy_returns`: checked host wrapper, float64 by default) is the
expected T-step return of the greedy policy on ``Q^k`` (``k - 1`` Bellman
optimality backups of the exploration Q, :func:`~jaxrl_dp.random_policy.qvi_backup`)
when every exact tie is broken in the worst way for the true return; the
BRIDGE sticky-action analysis records ``J_1..J_5``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_int
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.random_policy.inputs import check_analysis_inputs, to_float64
from jaxrl_dp.random_policy.q import qvi_backup
from jaxrl_dp.random_policy.values import value_triplet

__all__ = ["greedy_returns", "greedy_returns_kernel"]


@solver(infinite_horizon=False, kind="analysis")
def greedy_returns_kernel(mdp: TabularMDP, horizon: int, *, num_k: int,
                          policy: ArrayLike | None = None,
                          start_with_rewards: bool = False) -> jax.Array:
  """Worst-case returns ``J_1..J_num_k`` of acting greedily on ``Q^k``: ``[num_k]``.

  ``J_k`` is the expected T-step return from the initial distribution when, at
  every (t, s), the greedy policy on ``Q^k`` breaks exact ties in the worst
  way for the true return (backward induction: ``W_t(s) = min over tied argmax
  a of r(s, a) + gamma E[W_{t+1}]``). ``Q^1`` is the Q of the exploration
  ``policy`` (``None``: uniform; or ``R`` when ``start_with_rewards``). Pure
  and jittable (``horizon``, ``num_k``
  static), vmappable; no checks. Ties decide the greedy sets: ``jax.grad``
  differentiates the returns for fixed greedy sets only (zero through the
  argmax).

  Args:
    mdp, horizon, num_k, policy, start_with_rewards: as :func:`greedy_returns`.

  Returns:
    ``[num_k]`` returns in the MDP's dtype.
  """
  T = int(horizon)
  mask = mdp.action_mask
  dtype = mdp.rewards.dtype
  (qx, _, _), _ = value_triplet(mdp, policy, T)
  q1 = jnp.broadcast_to(mdp.rewards, qx.shape).astype(dtype) if start_with_rewards else qx
  init_d = mdp.initial.astype(dtype)

  def worst_greedy_return(q):
    greedy = mask & (q >= bellman.masked_max(q, mask)[..., None])

    def step(w_next, greedy_t):
      qw = bellman.q_values(mdp, w_next)
      w = jnp.min(jnp.where(greedy_t, qw, jnp.inf), axis=-1).astype(dtype)
      return w, None

    w0, _ = jax.lax.scan(step, jnp.zeros(mdp.rewards.shape[:1], dtype), greedy, reverse=True)
    return jnp.sum(jnp.where(init_d > 0, init_d * w0, 0.0))

  def body(q, _):
    return qvi_backup(mdp, q), worst_greedy_return(q)

  _, js = jax.lax.scan(body, q1, None, length=int(num_k))
  return js


@functools.partial(jax.jit, static_argnames=("horizon", "num_k", "start_with_rewards"))
def _greedy_jit(mdp, policy, *, horizon, num_k, start_with_rewards):
  return greedy_returns_kernel(mdp, horizon, num_k=num_k, policy=policy,
                               start_with_rewards=start_with_rewards)


def greedy_returns(mdp: TabularMDP, horizon: int, *, num_k: int = 5,
                   policy: ArrayLike | None = None,
                   start_with_rewards: bool = False, x64: bool = True) -> np.ndarray:
  """``[J_1, ..., J_num_k]``: worst-case-tie-breaking returns of greedy-on-Q^k.

  See :func:`greedy_returns_kernel`. Computed in float64 by default (under
  ``jax.enable_x64(True)``; ``x64=False`` keeps the MDP's dtype). A host
  function (NumPy result): use :func:`greedy_returns_kernel` inside ``jit``,
  ``vmap`` or :func:`jaxrl_dp.batch.solve`.

  Args:
    mdp: one MDP, discount in [0, 1].
    horizon: T, a Python int >= 1.
    num_k: how many ``J_k`` (a fixed count, Python int >= 1).
    policy: the exploration policy (``None``: uniform over valid actions),
      ``[S, A]`` or ``[T, S, A]``.
    start_with_rewards: ``Q^1 = R`` instead of the exploration Q.
    x64: compute in float64.

  Returns:
    ``float [num_k]`` NumPy array ``[J_1, ..., J_num_k]``.

  Raises:
    InvalidMDPError: bad horizon, discount, ``num_k`` or policy.
  """
  pol = check_analysis_inputs(mdp, horizon, policy)
  check_int("num_k", num_k)
  kw = dict(horizon=int(horizon), num_k=int(num_k), start_with_rewards=bool(start_with_rewards))
  if not x64:
    pol = None if pol is None else jnp.asarray(pol, mdp.rewards.dtype)
    return np.asarray(_greedy_jit(mdp, pol, **kw))
  with jax.enable_x64(True):
    m64, p64 = to_float64((mdp, pol))
    return np.asarray(_greedy_jit(m64, p64, **kw))
