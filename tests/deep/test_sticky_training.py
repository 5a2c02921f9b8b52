"""Part-1 agents with sticky actions and T-step scoring (``sticky``, ``score_horizon``).

The agents train on the time-augmented corridor below with sticky actions and
report exact metrics on the sticky, time-augmented MDP by backward induction;
the reference is a float64 NumPy backward induction over (t, s, previous
action) written from the maze's tables directly (it uses neither
``sticky_actions`` nor the time augmentation).
"""

import jax
import numpy as np
import pytest

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep import train_dqn, train_ppo
from jaxrl_dp.figures.mazes import MazeSpec, time_augmented, time_features

P = 0.25
T = 6


def _corridor() -> MazeSpec:
  # 4 cells; 0 = left, 1 = right, 2 = quit (ends, pays 0.3); right from cell 3
  # ends with reward 1.
  s, a = 4, 3
  nxt = np.zeros((s, a), np.int64)
  rew = np.zeros((s, a))
  for i in range(s):
    nxt[i, 0] = max(i - 1, 0)
    nxt[i, 1] = i + 1 if i < s - 1 else -1
    nxt[i, 2] = -1
    rew[i, 2] = 0.3
  rew[s - 1, 1] = 1.0
  return MazeSpec("corridor", nxt, rew, T)


def _numpy_sticky(spec: MazeSpec, policy_ts, p: float):
  """float64 ``(J(policy), J*)`` of the T-step sticky task from state 0;
  ``policy_ts int [T, S]`` (None: only J*)."""
  ns, r = spec.transitions, spec.rewards
  s_n, a_n = r.shape
  v_pi = np.zeros((s_n, a_n))  # V_{t+1}(s, b) of the policy
  v_opt = np.zeros((s_n, a_n))
  j_pi = j_opt = None
  for t in range(T - 1, -1, -1):
    def q_exec(v):  # [S, A]: value of executing e at (t, s)
      out = r.copy()
      for s in range(s_n):
        for e in range(a_n):
          if ns[s, e] >= 0:
            out[s, e] += v[ns[s, e], e]
      return out
    qe_pi, qe_opt = q_exec(v_pi), q_exec(v_opt)
    new_pi = np.zeros((s_n, a_n))
    new_opt = np.zeros((s_n, a_n))
    for s in range(s_n):
      for b in range(a_n):
        if policy_ts is not None:
          a = policy_ts[t, s]
          new_pi[s, b] = (1 - p) * qe_pi[s, a] + p * qe_pi[s, b]
        new_opt[s, b] = max((1 - p) * qe_opt[s, a] + p * qe_opt[s, b] for a in range(a_n))
    if t == 0:  # the start: no previous action, nothing sticks
      j_opt = qe_opt[0].max()
      j_pi = None if policy_ts is None else qe_pi[0, policy_ts[0, 0]]
    v_pi, v_opt = new_pi, new_opt
  return j_pi, j_opt


def _setup():
  spec = _corridor()
  mdp = time_augmented(spec)
  feats = time_features(spec.transitions.shape[0], T)
  return spec, mdp, feats


@pytest.mark.slow
def test_dqn_sticky_scored_on_the_sticky_time_augmented_task():
  spec, mdp, feats = _setup()
  res = train_dqn(jax.random.key(3), mdp, observation=feats, sticky=P, score_horizon=T,
                  horizon=T, num_envs=4, num_updates=60, eval_every=30, buffer_size=200,
                  batch_size=16, learning_starts=16, hidden=(16,))
  assert "q_error" not in res.metrics
  s_n = spec.transitions.shape[0]
  pol = np.asarray(res.policy)[:T * s_n].reshape(T, s_n)
  j_ref, j_star_ref = _numpy_sticky(spec, pol, P)
  j = np.asarray(res.metrics["j"])
  j_star = np.asarray(res.metrics["j_star"])
  np.testing.assert_allclose(j[-1], j_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(j_star, j_star_ref, rtol=1e-5, atol=1e-5)


def test_score_horizon_equals_the_lu_score_without_sticky():
  spec, mdp, feats = _setup()
  kw = dict(observation=feats, horizon=T, num_envs=4, num_updates=40, eval_every=20,
            buffer_size=200, batch_size=16, learning_starts=16, hidden=(16,))
  a = train_dqn(jax.random.key(0), mdp, score_horizon=T, **kw)
  s_n = spec.transitions.shape[0]
  pol = np.asarray(a.policy)[:T * s_n].reshape(T, s_n)
  j_ref, j_star_ref = _numpy_sticky(spec, pol, 0.0)
  np.testing.assert_allclose(np.asarray(a.metrics["j"])[-1], j_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(a.metrics["j_star"]), j_star_ref, rtol=1e-5, atol=1e-5)
  assert "q_error" in a.metrics


@pytest.mark.slow
def test_ppo_sticky_scored_on_the_sticky_time_augmented_task():
  spec, mdp, feats = _setup()
  res = train_ppo(jax.random.key(1), mdp, observation=feats, sticky=P, score_horizon=T,
                  horizon=T, num_envs=4, num_steps=12, num_updates=6, eval_every=3,
                  num_minibatches=2, hidden=(16,))
  s_n = spec.transitions.shape[0]
  j_star = np.asarray(res.metrics["j_star"])
  _, j_star_ref = _numpy_sticky(spec, None, P)
  np.testing.assert_allclose(j_star, j_star_ref, rtol=1e-5, atol=1e-5)
  # the greedy policy's exact score
  probs = np.asarray(res.policy)[:T * s_n].reshape(T, s_n, -1)
  g_ref, _ = _numpy_sticky(spec, probs.argmax(-1), P)
  np.testing.assert_allclose(j_star[-1] - np.asarray(res.metrics["greedy_suboptimality"])[-1],
                             g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [train_dqn, train_ppo])
@pytest.mark.parametrize("bad, field", [({"sticky": 1.0}, "sticky"),
                                        ({"sticky": -0.1}, "sticky"),
                                        ({"score_horizon": 0}, "score_horizon"),
                                        ({"score_horizon": 2.5}, "score_horizon")])
def test_bad_scoring_options_are_refused_by_name(train, bad, field):
  _, mdp, _ = _setup()
  with pytest.raises(InvalidMDPError, match=field):
    train(jax.random.key(0), mdp, **bad)
