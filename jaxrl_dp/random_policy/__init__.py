"""Random-policy valuation: Q of a fixed exploration policy, k-step QVI and the
effective-horizon analysis ("Bridging RL Theory and Practice with the Effective
Horizon"; "The Effective Horizon Explains Deep RL Performance in Stochastic
Environments"), sticky actions, GORP and SQIRL, and ROVER-style learning on
tree MDPs ("Random Policy Valuation is Enough for LLM Reasoning with Verifiable
Rewards").

Conventions: ``horizon`` is the argument right after the MDP (``key`` first
for samplers); ``policy=None`` is the uniform policy over valid actions
wherever a policy is optional (GORP and SQIRL call theirs
``exploration_policy``, since their result holds the learned policy); fixed
counts are ``num_k`` / ``num_iters`` and caps ``max_*``. Kernels take ONE MDP;
batches go through ``jax.vmap`` / ``jax.lax.map`` or :mod:`jaxrl_dp.batch`
(:func:`analyze_effective_horizon_batch` is that layer for the analysis).
Gradients: ``random_q``, ``qvi_steps``, occupancies and tree metrics are
differentiable; the analyses, GORP, SQIRL and the learners are discrete
(tests, argmaxes, samples) and have none.
"""

from jaxrl_dp.random_policy.q import policy_expectation, qvi_backup, qvi_steps, random_q
from jaxrl_dp.random_policy.values import value_triplet
from jaxrl_dp.random_policy.reach import reach, successors, terminal_states
from jaxrl_dp.random_policy.covering import covering_length, covering_length_bounds
from jaxrl_dp.random_policy.horizon_kernel import (EffectiveHorizonAnalysis,
                                                   effective_horizon_kernel)
from jaxrl_dp.random_policy.greedy import greedy_returns, greedy_returns_kernel
from jaxrl_dp.random_policy.effective_horizon import (REWARD_PRECISION,
                                                      analyze_effective_horizon,
                                                      analyze_effective_horizon_batch)

__all__ = [
    "random_q", "qvi_steps", "qvi_backup", "policy_expectation",
    "REWARD_PRECISION", "EffectiveHorizonAnalysis", "analyze_effective_horizon",
    "analyze_effective_horizon_batch", "effective_horizon_kernel", "greedy_returns",
    "greedy_returns_kernel", "terminal_states", "reach", "successors", "value_triplet",
    "covering_length", "covering_length_bounds",
]

from jaxrl_dp.random_policy.sticky import (StickyAnalysis, analyze_sticky_actions,
                                           sticky_actions, sticky_state_index)

__all__ += ["StickyAnalysis", "sticky_actions", "analyze_sticky_actions", "sticky_state_index"]

from jaxrl_dp.random_policy.gorp import (GORPResult, SampleComplexity, gorp, gorp_kernel,
                                         gorp_sample_complexity)

__all__ += ["GORPResult", "SampleComplexity", "gorp", "gorp_kernel",
            "gorp_sample_complexity"]

from jaxrl_dp.random_policy.rollout import (Trajectories, returns_to_go,
                                            sample_trajectories, state_occupancies)
from jaxrl_dp.random_policy.sqirl import (SQIRLResult, policy_return, sqirl,
                                          sqirl_kernel, sqirl_sample_complexity)

__all__ += ["Trajectories", "sample_trajectories", "state_occupancies", "returns_to_go",
            "SQIRLResult", "sqirl", "sqirl_kernel", "sqirl_sample_complexity",
            "policy_return"]

from jaxrl_dp.random_policy.rover import (LearnerResult, TreeMetrics, correct_pairs, pass_at_k,
                                          reinforce_kernel, reinforce_train, reinforce_update,
                                          rover_kernel, rover_train, rover_update,
                                          softmax_policy, tree_metrics, tree_metrics_kernel)

__all__ += ["LearnerResult", "TreeMetrics", "correct_pairs", "pass_at_k", "reinforce_kernel",
            "reinforce_train", "reinforce_update", "rover_kernel", "rover_train", "rover_update",
            "softmax_policy", "tree_metrics", "tree_metrics_kernel"]
