"""Deep variants: tabular MDPs as environments for Flax agents, scored exactly.

* :mod:`~jaxrl_dp.deep.env`: :class:`TabularEnv`, a pure functional
  environment (gymnax conventions, auto-reset) on any :class:`TabularMDP`,
  with one-hot / index / feature observations, sticky actions and stock
  augmentation; jittable and vmappable over environments and over MDPs.
* :mod:`~jaxrl_dp.deep.views`: the same dynamics behind gymnax's
  ``Environment`` (:func:`to_gymnax`) and a NumPy ``gymnasium.Env``
  (:func:`to_gymnasium`); gymnax and gymnasium are imported only there.
* :mod:`~jaxrl_dp.deep.scoring`: exact scoring of any policy
  (:func:`evaluate_policy`; :func:`exact_reference` + :func:`score_policy`
  inside training scans), :func:`q_error`, :func:`steps_to_optimal`.
"""

from jaxrl_dp.deep.env import OBSERVATIONS, EnvState, TabularEnv
from jaxrl_dp.deep.scoring import (OPTIMAL_ACTION_RTOL, ExactReference, PolicyScore,
                                   evaluate_policy, exact_reference, q_error,
                                   score_policy, steps_to_optimal, sticky_policy)
from jaxrl_dp.deep.views import to_gymnasium, to_gymnax

__all__ = [
    # environment
    "EnvState", "TabularEnv", "OBSERVATIONS", "to_gymnax", "to_gymnasium",
    # exact scoring
    "ExactReference", "PolicyScore", "exact_reference", "score_policy",
    "evaluate_policy", "q_error", "steps_to_optimal", "sticky_policy",
    "OPTIMAL_ACTION_RTOL",
]
