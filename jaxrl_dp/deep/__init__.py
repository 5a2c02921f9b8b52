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

# agents (networks, replay, DQN family, PPO, fitted-Q iteration)
from jaxrl_dp.deep.common import TrainResult  # noqa: E402
from jaxrl_dp.deep.networks import (ActorCritic, CategoricalQNetwork, MLP,  # noqa: E402
                                    QNetwork, QuantileQNetwork)
from jaxrl_dp.deep.replay import (ReplayBuffer, Transition, replay_add,  # noqa: E402
                                  replay_init, replay_sample)
from jaxrl_dp.deep.dqn import train_dqn  # noqa: E402
from jaxrl_dp.deep.c51 import train_c51  # noqa: E402
from jaxrl_dp.deep.qr_dqn import train_qr_dqn  # noqa: E402
from jaxrl_dp.deep.ppo import train_ppo  # noqa: E402
from jaxrl_dp.deep.fqi import (OfflineDataset, dataset_from_model,  # noqa: E402
                               dataset_from_trajectories, fitted_q_iteration)

__all__ += [
    "TrainResult", "train_dqn", "train_c51", "train_qr_dqn", "train_ppo",
    "fitted_q_iteration", "OfflineDataset", "dataset_from_model",
    "dataset_from_trajectories", "MLP", "QNetwork", "CategoricalQNetwork",
    "QuantileQNetwork", "ActorCritic", "ReplayBuffer", "Transition", "replay_init",
    "replay_add", "replay_sample",
]
