"""deep.robust_dqn: the robust target on hand-built batches against float64
NumPy worst cases (TV / KL penalty closed forms, the L1 ball by
scipy.optimize.linprog), the loss of a hand-built batch against NumPy, the
exact robust metrics against a NumPy robust evaluation, option checks;
slow: vmapped seeds equal a loop, and the learning target on the windy walk
(>= 12 of 16 seeds within 5% of the robust optimum, recounted in NumPy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from jaxrl_dp import robust
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep.replay import Transition
from jaxrl_dp.deep.robust_dqn import (RobustDQNConfig, make_robust_dqn, robust_metrics,
                                      robust_target, state_index, train_robust_dqn)
from jaxrl_dp.suites.windy_walk import windy_walk


# ------------------------------------------------------ float64 references
def np_tv(v, p, lam):
  """``sum P0 min(V, V_min + lam)``, V_min over supp(P0); rows ``[..., K]``."""
  live = p > 0
  m = np.min(np.where(live, v, np.inf), axis=-1, keepdims=True)
  return np.sum(np.where(live, p * np.minimum(v, m + np.asarray(lam)[..., None]), 0.0), -1)


def np_kl(v, p, lam):
  """``-lam log E_P0 exp(-V / lam)`` (shifted by V_min); rows ``[..., K]``."""
  live = p > 0
  m = np.min(np.where(live, v, np.inf), axis=-1, keepdims=True)
  lam = np.asarray(lam)[..., None]
  e = np.where(live, p * np.exp(-(np.where(live, v, m) - m) / lam), 0.0)
  return m[..., 0] - lam[..., 0] * np.log(np.sum(e, -1))


def np_l1(v, p, radius):
  """min p.v over the simplex restricted to supp(P0), ||p - p0||_1 <= radius:
  variables (p [K], t [K]), t >= |p - p0|, sum t <= radius."""
  k = v.size
  c = np.concatenate([v, np.zeros(k)])
  eye = np.eye(k)
  a_ub = np.block([[eye, -eye], [-eye, -eye], [np.zeros((1, k)), np.ones((1, k))]])
  b_ub = np.concatenate([p, -p, [radius]])
  a_eq = np.concatenate([np.ones(k), np.zeros(k)])[None]
  bounds = [(0, None if p[i] > 0 else 0) for i in range(k)] + [(0, None)] * k
  res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0], bounds=bounds,
                method="highs")
  assert res.status == 0
  return float(res.fun)


def np_l1_greedy(v, p, radius):
  """The L1 ball's greedy vertex (radius / 2 of mass from the highest values
  of supp(P0) to its lowest): the closed form that linprog confirms above."""
  live = np.flatnonzero(p > 0)
  j = live[np.argmin(v[live])]
  q = p.copy()
  budget = min(radius / 2, 1.0 - p[j])
  for i in live[np.argsort(-v[live], kind="stable")]:
    if i == j or budget <= 0:
      continue
    take = min(budget, q[i])
    q[i] -= take
    q[j] += take
    budget -= take
  return float(q @ v)


NP_WORST = {"tv_penalty": np_tv, "kl_penalty": np_kl, "l1_ball": np_l1}
SETS = {"tv_penalty": robust.tv_penalty, "kl_penalty": robust.kl_penalty,
        "l1_ball": robust.l1_ball}


def _batch(rng, b=7, k=4):
  v = rng.normal(size=(b, k))
  p = rng.random((b, k))
  p[rng.random((b, k)) < 0.3] = 0.0
  p[:, 0] += 0.1
  p /= p.sum(-1, keepdims=True)
  return v, p, rng.normal(size=b), rng.normal(size=(b, k))


@pytest.mark.parametrize("kind,size", [("tv_penalty", 0.3), ("kl_penalty", 0.5),
                                       ("l1_ball", 0.4)])
def test_robust_target_on_a_hand_built_batch(kind, size):
  rng = np.random.default_rng(1)
  v, p, r, r_slot = _batch(rng)
  g = 0.9
  uset = SETS[kind](size)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  got = np.asarray(robust_target(f32(v), f32(p), f32(r), g, uset))
  ref = np.array([r[i] + g * NP_WORST[kind](v[i], p[i], size) for i in range(len(r))])
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # per-slot rewards: the adversary moves the reward too (penalty weight gamma lam)
  got = np.asarray(robust_target(f32(v), f32(p), f32(r_slot), g, uset))
  w = r_slot + g * v
  s = g * size if uset.is_penalty else size
  ref = np.array([NP_WORST[kind](w[i], p[i], s) for i in range(len(r))])
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # one size per row
  sizes = size * (0.5 + rng.random(len(r)))
  got = np.asarray(robust_target(f32(v), f32(p), f32(r), g, uset, size=f32(sizes)))
  ref = np.array([r[i] + g * NP_WORST[kind](v[i], p[i], sizes[i]) for i in range(len(r))])
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_state_index_reads_back_states():
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(9, 3)).astype(np.float32)
  idx = rng.integers(0, 9, 20)
  np.testing.assert_array_equal(np.asarray(state_index(jnp.asarray(feats[idx]),
                                                       jnp.asarray(feats))), idx)
  eye = np.eye(9, dtype=np.float32)
  np.testing.assert_array_equal(np.asarray(state_index(jnp.asarray(eye[idx]),
                                                       jnp.asarray(eye))), idx)


def _nominal(alpha=0.25):
  return jax.tree_util.tree_map(lambda x: x[0], windy_walk([alpha]))


def _np_model(mdp):
  ns = np.asarray(mdp.next_states)
  p = np.asarray(mdp.probs, np.float64)
  r = np.asarray(mdp.rewards, np.float64)
  s = r.shape[0]
  terminal = np.array([np.all(r[i] == 0) and np.all((ns[i] == i) | (p[i] == 0))
                       for i in range(s)])
  return ns, p, r, float(mdp.discount), np.asarray(mdp.initial, np.float64), terminal


def test_loss_on_a_hand_built_batch_equals_numpy():
  mdp = _nominal()
  ns, p, r, g, _, terminal = _np_model(mdp)
  lam = 0.05
  uset = robust.kl_penalty(lam)
  cfg = RobustDQNConfig(hidden=(16,))
  obs_all = jnp.eye(24, dtype=jnp.float32)
  # (the metrics' reference is not used by the loss: zeros skip a robust VI)
  agent = make_robust_dqn(cfg, mdp, uset, obs_all, reference=(jnp.zeros(24), jnp.zeros((24, 4))))
  params = agent.network.init(jax.random.key(0), obs_all[:1])
  target = agent.network.init(jax.random.key(1), obs_all[:1])
  rng = np.random.default_rng(3)
  s = rng.integers(0, 24, 10)
  a = rng.integers(0, 4, 10).astype(np.int32)
  eye = np.eye(24, dtype=np.float32)
  batch = Transition(obs=jnp.asarray(eye[s]), action=jnp.asarray(a),
                     reward=jnp.zeros(10), next_obs=jnp.asarray(eye[s]),
                     discount=jnp.zeros(10), next_mask=jnp.ones((10, 4), bool))
  got = float(jax.jit(agent.loss)(params, target, batch))
  q_t = np.asarray(agent.network.apply(target, obs_all), np.float64)
  q = np.asarray(agent.network.apply(params, obs_all), np.float64)
  v = np.where(terminal, 0.0, q_t.max(1))
  y = r[s, a] + g * np_kl(v[ns[s, a]], p[s, a], lam)
  ref = np.mean(0.5 * (q[s, a] - y) ** 2)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)


def np_robust_values(ns, p, r, g, lam, policy=None, iters=1000):
  """float64 TV-penalty robust VI (policy None) or robust policy evaluation
  (gamma^1000 ~ 5e-23: converged)."""
  s = r.shape[0]
  v = np.zeros(s)
  for _ in range(iters):
    q = r + g * np_tv(v[ns], p, lam)
    v = q.max(1) if policy is None else q[np.arange(s), policy]
  return v


def test_robust_metrics_equal_a_numpy_robust_evaluation():
  mdp = _nominal()
  ns, p, r, g, rho, _ = _np_model(mdp)
  lam = 0.03
  uset = robust.tv_penalty(lam)
  v_star = np_robust_values(ns, p, r, g, lam)
  rng = np.random.default_rng(0)
  pol = np.argmax(r + g * np_tv(v_star[ns], p, lam), axis=1)  # robust-greedy
  for policy in (pol, rng.integers(0, 4, 24)):
    m = robust_metrics(mdp, uset, jnp.asarray(v_star, jnp.float32), jnp.asarray(policy))
    v_pi = np_robust_values(ns, p, r, g, lam, policy=policy)
    np.testing.assert_allclose(float(m["robust_j"]), rho @ v_pi, atol=3e-5)
    np.testing.assert_allclose(float(m["robust_j_star"]), rho @ v_star, atol=1e-6)
    np.testing.assert_allclose(float(m["robust_gap"]), rho @ (v_star - v_pi), atol=3e-5)
  # the robust VI policy is optimal at the start
  m = robust_metrics(mdp, uset, jnp.asarray(v_star, jnp.float32), jnp.asarray(pol))
  assert abs(float(m["robust_relative_gap"])) < 1e-4


def test_bad_options_are_refused():
  mdp = _nominal()
  with pytest.raises(InvalidMDPError, match="uncertainty"):
    train_robust_dqn(jax.random.key(0), mdp, uncertainty="tv")
  with pytest.raises(InvalidMDPError, match="uncertainty"):
    train_robust_dqn(jax.random.key(0), mdp, uncertainty=robust.tv_penalty(jnp.ones(3)))
  with pytest.raises(InvalidMDPError, match=r"observation\[1\]"):
    train_robust_dqn(jax.random.key(0), mdp, uncertainty=robust.tv_penalty(0.1),
                     observation=np.zeros((24, 2)))
  with pytest.raises(InvalidMDPError, match="loss"):
    train_robust_dqn(jax.random.key(0), mdp, uncertainty=robust.tv_penalty(0.1), loss="l3")


SMALL = dict(num_envs=2, num_updates=60, eval_every=30, buffer_size=64, batch_size=8,
             learning_starts=16, hidden=(16,), target_update_interval=10)


@pytest.mark.slow
def test_vmapped_seeds_equal_a_loop():
  mdp = _nominal()
  uset = robust.l1_ball(0.2)
  keys = jax.random.split(jax.random.key(4), 2)
  batched = jax.vmap(lambda k: train_robust_dqn(k, mdp, uncertainty=uset, **SMALL))(keys)
  for i in range(2):
    one = train_robust_dqn(keys[i], mdp, uncertainty=uset, **SMALL)
    np.testing.assert_array_equal(np.asarray(one.policy), np.asarray(batched.policy[i]))
    for name in ("robust_j", "robust_j_star", "loss", "j"):
      np.testing.assert_allclose(np.asarray(one.metrics[name]),
                                 np.asarray(batched.metrics[name][i]), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind,size", [("tv_penalty", 0.03), ("kl_penalty", 0.01),
                                       ("l1_ball", 0.2)])
def test_learning_target_windy_walk(kind, size):
  """Windy walk 6x6, nominal wind 0.25: >= 12 of 16 seeds' final greedy
  policies have a robust value within 5% of the robust optimum (both
  recomputed here in float64 NumPy: robust VI / evaluation with the closed
  forms, the L1 ball's greedy vertex)."""
  mdp = _nominal()
  ns, p, r, g, rho, _ = _np_model(mdp)
  uset = SETS[kind](size)
  keys = jax.random.split(jax.random.key(0), 16)
  res = jax.vmap(lambda k: train_robust_dqn(k, mdp, uncertainty=uset, num_updates=10_000,
                                            eval_every=1_000))(keys)
  worst = NP_WORST[kind]
  s, a = r.shape

  def sigma(v):
    if kind == "l1_ball":
      return np.array([[np_l1_greedy(v[ns[i, j]], p[i, j], size) for j in range(a)]
                       for i in range(s)])
    return worst(v[ns], p, size)

  def values(policy=None, iters=300):
    v = np.zeros(s)
    for _ in range(iters):
      q = r + g * sigma(v)
      v = q.max(1) if policy is None else q[np.arange(s), policy]
    return v

  j_star = rho @ values()
  pols = np.asarray(res.policy)
  js = np.array([rho @ values(pol) for pol in pols])
  near = int(np.sum(js >= 0.95 * j_star))
  np.testing.assert_allclose(np.asarray(res.metrics["robust_j"][:, -1]), js, atol=1e-4)
  assert near >= 12, (near, js, j_star)


def test_robust_target_of_int_values():
  """Int ``V_target`` rows set the dtype of the discount (0.9 became 0) and
  of the result (truncated): ``[1, 0]`` for ``[2.8, 0.45]``. Reference: the
  nominal target ``r + gamma P V`` (radius 0) and the L1 ball's closed form
  (``r / 2`` of mass from the highest value to the lowest)."""
  v = jnp.array([[1, 3], [2, 0]])
  p = jnp.array([[0.5, 0.5], [0.25, 0.75]])
  r = jnp.array([1.0, 0.0])
  got = robust_target(v, p, r, 0.9, robust.l1_ball(0.0))
  assert jnp.issubdtype(got.dtype, jnp.floating)
  np.testing.assert_allclose(np.asarray(got), [2.8, 0.45], rtol=1e-6)
  # radius 0.5: move 0.25 to the lowest value: E = [0.75 * 1 + 0.25 * 3, 0 * 2 + 1 * 0]
  got = robust_target(v, p, r, 0.9, robust.l1_ball(0.5))
  np.testing.assert_allclose(np.asarray(got), [1 + 0.9 * 1.5, 0.0], rtol=1e-6)
