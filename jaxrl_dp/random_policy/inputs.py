"""Host-side input handling shared by the effective-horizon analyses.

:func:`check_analysis_inputs` checks an MDP (or a stacked batch), the horizon,
the discount (``[0, 1]``: finite horizon), the optimality tolerance and the
exploration policy with :mod:`jaxrl_dp.core.options`' rules;
:func:`to_float64` casts an MDP and policy to float64 for the analyses that
reproduce the published BRIDGE values (call it inside
``jax.enable_x64(True)``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.mdp import TabularMDP, check_discount, check_mdp_structure, check_transitions
from jaxrl_dp.core.options import check_horizon, check_tol
from jaxrl_dp.random_policy.q import check_exploration_policy

__all__ = ["REWARD_PRECISION", "check_analysis_inputs", "to_float64"]

#: Tolerance of the optimality test (the dataset's REWARD_PRECISION).
REWARD_PRECISION = 1e-4


def to_float64(tree: Any) -> Any:
  """Casts floating leaves to float64 (call inside ``jax.enable_x64(True)``)."""
  def cast(x):
    x = jnp.asarray(x)
    return x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree_util.tree_map(cast, tree)


_UNSET = object()


def check_analysis_inputs(mdp: TabularMDP, horizon: int, policy, *, tol: Any = _UNSET,
                          batched: bool = False):
  """Checks an analysis call; returns the policy (``None`` or an array in the
  caller's precision: a float64 policy stays float64 under x64).

  ``tol`` (when passed) is the optimality tolerance: a finite number ``>= 0``
  (:func:`jaxrl_dp.core.options.check_tol`; ``None`` is refused).

  Raises:
    InvalidMDPError: bad structure, ``horizon`` not a Python int >= 1, a
      discount outside ``[0, 1]``, a negative / NaN / inf / non-numeric
      ``tol``, a policy of the wrong shape, rows that are not distributions
      or mass on masked actions.
  """
  check_mdp_structure(mdp, batched=batched)
  check_transitions(mdp)
  check_horizon(horizon)
  check_discount(mdp.discount, infinite_horizon=False)
  if tol is not _UNSET:
    check_tol(tol)
  if policy is None:
    return None
  check_exploration_policy(policy, mdp, horizon, field="policy", batched=batched)
  return policy if isinstance(policy, jax.Array) else np.asarray(policy)
