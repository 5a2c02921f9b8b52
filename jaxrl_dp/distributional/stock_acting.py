"""Acting with a discounted stock solution at exact (off-grid) stocks, and
sampling the returns of that rule.

:func:`stock_q` and :func:`stock_action` evaluate the interpolated ``W`` one
step ahead (settled stocks use their exact policies);
:func:`sample_stock_returns` samples discounted returns with ``jax.random``.
One MDP and one :class:`~jaxrl_dp.distributional.DiscountedStockSolution`;
pure, jittable and vmappable. ``jax.grad`` of :func:`stock_q` with respect to
the stock or the solution's values works (piecewise-linear interpolation);
actions are integers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxrl_dp.core import bellman
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.distributional import evaluation as ev
from jaxrl_dp.distributional.stock_bounds import next_state_index, settled
from jaxrl_dp.distributional.stock_interpolation import (DiscountedStockSolution, grid_scale,
                                                         state_value)

__all__ = ["stock_q", "stock_action", "sample_stock_returns"]


def stock_q(mdp: TabularMDP, sol: DiscountedStockSolution, s: ArrayLike,
            c: ArrayLike) -> jax.Array:
  """``Q(s, a, c) [..., A]`` at the exact stock ``c`` (one MDP; ``s``, ``c``
  broadcast ``[...]``): ``gamma^p sum_k p_k W(s'_k, (c + r_k) / gamma)`` with
  the interpolated ``W``. Jittable.

  Args:
    mdp: the MDP ``sol`` was computed for.
    sol: a discounted stock solution.
    s: ``int [...]`` states.
    c: ``[...]`` stocks.

  Returns:
    ``[..., A]`` action values.
  """
  s = jnp.asarray(s, jnp.int32)
  c = jnp.asarray(c, sol.values.dtype)
  s, c = jnp.broadcast_arrays(s, c)
  r = ev.slot_rewards(mdp)[s]  # [..., A, K]
  ns = next_state_index(mdp)[s]
  c_next = (c[..., None, None] + r) / mdp.discount
  w = state_value(sol, ns, c_next)
  return grid_scale(mdp, sol.utility) * jnp.sum(mdp.probs[s] * w, axis=-1)


def stock_action(mdp: TabularMDP, sol: DiscountedStockSolution, s: ArrayLike,
                 c: ArrayLike) -> jax.Array:
  """``int32 [...]`` the action at state ``s`` with exact stock ``c``: the
  settled policy where ``c + G`` has a sure sign, else greedy on
  :func:`stock_q`. Jittable.

  Args:
    mdp: the MDP ``sol`` was computed for.
    sol: a discounted stock solution.
    s: ``int [...]`` states.
    c: ``[...]`` stocks.

  Returns:
    ``int32 [...]`` actions.
  """
  s = jnp.asarray(s, jnp.int32)
  c = jnp.asarray(c, sol.values.dtype)
  s, c = jnp.broadcast_arrays(s, c)
  above, below, _ = settled(sol.utility, c, sol.return_lo[s], sol.return_hi[s],
                             sol.mean_above[s], sol.mean_below[s])
  greedy = bellman.greedy_policy(stock_q(mdp, sol, s, c), mdp.action_mask[s])
  return jnp.where(above, sol.policy_above[s], jnp.where(below, sol.policy_below[s], greedy))


@functools.partial(jax.jit, static_argnames=("num_samples", "horizon"))
def sample_stock_returns(mdp: TabularMDP, sol: DiscountedStockSolution, c0: ArrayLike,
                         key: jax.Array, *, num_samples: int, horizon: int) -> jax.Array:
  """Samples ``[num_samples]`` discounted returns ``sum_{t < horizon} gamma^t
  r_t`` of :func:`stock_action` started at stock ``c0`` and ``s_0 ~
  mdp.initial`` (one MDP; truncation error at most ``gamma^horizon *
  max|G|``). The stock ``c_t`` grows like ``gamma^-t``: keep ``horizon *
  log(1/gamma)`` below the float range (about 88 in float32).

  Args:
    mdp: the MDP ``sol`` was computed for.
    sol: a discounted stock solution.
    c0: ``[]`` initial stock.
    key: a ``jax.random`` key.
    num_samples: static number of episodes.
    horizon: static truncation length.

  Returns:
    ``[num_samples]`` returns.
  """
  ns_all, r_all = next_state_index(mdp), ev.slot_rewards(mdp)
  g = mdp.discount
  c0 = jnp.asarray(c0, sol.values.dtype)

  def one(key):
    k0, key = jax.random.split(key)
    s = jax.random.categorical(k0, jnp.log(mdp.initial)).astype(jnp.int32)

    def step(carry, kt):
      s, c, ret, d = carry
      a = stock_action(mdp, sol, s, c)
      k = jax.random.categorical(kt, jnp.log(mdp.probs[s, a])).astype(jnp.int32)
      r = r_all[s, a, k]
      return (ns_all[s, a, k], (c + r) / g, ret + d * r, d * g), None

    init = (s, c0, jnp.zeros((), c0.dtype), jnp.ones((), c0.dtype))
    (_, _, ret, _), _ = jax.lax.scan(step, init, jax.random.split(key, horizon))
    return ret

  return jax.vmap(one)(jax.random.split(key, num_samples))
