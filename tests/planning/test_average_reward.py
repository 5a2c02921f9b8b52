"""Average reward (relative value iteration) against the dual LP of the gain
(scipy linprog, float64) and pymdptoolbox's small example (gain 35/9);
stochastic shortest path against float64 linear solves; unichain / properness
checks; jit / vmap; refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxrl_dp as jd
from jaxrl_dp.planning import average_reward as ar
from _reference import np_grid, random_dense, random_sparse, sparse_to_dense


def lp_gain(p, r, mask=None):
  """Optimal gain by the dual LP: max sum x r s.t. x is a stationary
  state-action frequency (sum_a x(s', a) = sum_{s,a} x(s, a) P(s'|s, a),
  sum x = 1, x >= 0); valid actions only."""
  s, a = r.shape
  mask = np.ones((s, a), bool) if mask is None else mask
  idx = np.flatnonzero(mask.reshape(-1))
  flow = np.zeros((s, s * a))
  for j, sa in enumerate(idx):
    flow[sa // a, j] += 1.0
    flow[:, j] -= p.reshape(s * a, s)[sa]
  a_eq = np.vstack([flow[:, :idx.size], np.ones((1, idx.size))])
  b_eq = np.concatenate([np.zeros(s), [1.0]])
  res = scipy.optimize.linprog(-r.reshape(-1)[idx], A_eq=a_eq, b_eq=b_eq,
                               bounds=(0, None), method="highs")
  assert res.status == 0
  return -res.fun


def policy_gain(p, r, policy):
  """Gain of a unichain deterministic policy: stationary distribution."""
  s = r.shape[0]
  p_pi = p[np.arange(s), policy]
  a = np.vstack([p_pi.T - np.eye(s), np.ones((1, s))])
  b = np.concatenate([np.zeros(s), [1.0]])
  d = np.linalg.lstsq(a, b, rcond=None)[0]
  return float(d @ r[np.arange(s), policy])


def _unichain(layout, seed, s=20, a=3, k=4, dtype=None, mask=False):
  rng = np.random.default_rng(seed)
  am = None
  if mask:
    am = rng.random((s, a)) < 0.6
    am[:, 0] = True
  if layout == "dense":  # every transition positive: irreducible
    p, r = random_dense(rng, s, a)
    m = jd.TabularMDP.from_dense(p, r, 0.9, dtype=dtype, action_mask=am)
  else:  # slot 0 always leads to state 0: one recurrent class per policy
    ns, ps, r = random_sparse(rng, s, a, k)
    ns[:, :, 0] = 0
    ns[0, :, 0] = 1
    m = jd.TabularMDP.from_sparse(ns, ps, r, 0.9, dtype=dtype, action_mask=am)
  p = np.asarray(m.probs, np.float64)
  if m.is_sparse:
    p = sparse_to_dense(np.asarray(m.next_states), p)
  return m, p, np.asarray(m.rewards, np.float64), np.asarray(m.action_mask)


# ------------------------------------------------------------ relative VI
def test_pymdptoolbox_small_gain_is_35_over_9():
  import mdptoolbox.example
  P, R = mdptoolbox.example.small()
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_dense(np.transpose(P, (1, 0, 2)), R, 0.9)
    sol = jd.relative_value_iteration(m, tol=1e-10)
    assert bool(sol.converged)
    assert abs(float(sol.gain) - 35 / 9) <= 1e-8
    assert float(sol.gain_lower) <= 35 / 9 <= float(sol.gain_upper)
    np.testing.assert_array_equal(sol.policy, [1, 0])
    # bias: h + g = r_pi + P_pi h
    p = np.transpose(P, (1, 0, 2))
    h, pol = np.asarray(sol.bias), np.asarray(sol.policy)
    np.testing.assert_allclose(h + 35 / 9, R[[0, 1], pol] + p[[0, 1], pol] @ h, atol=1e-8)
    assert float(sol.bias[0]) == 0.0
    assert jd.check_unichain(m, sol.policy)


@pytest.mark.parametrize("layout,mask", [("dense", False), ("dense", True),
                                         ("sparse", False), ("sparse", True)])
def test_gain_matches_dual_lp(layout, mask):
  with jax.enable_x64(True):
    for seed in range(2):
      m, p, r, am = _unichain(layout, seed, mask=mask)
      g_ref = lp_gain(p, r, am)
      sol = jd.relative_value_iteration(m, tol=1e-10, max_iters=100_000)
      assert bool(sol.converged)
      assert abs(float(sol.gain) - g_ref) <= 1e-8
      assert float(sol.gain_lower) <= g_ref <= float(sol.gain_upper)
      pol = np.asarray(sol.policy)
      assert am[np.arange(len(pol)), pol].all()
      assert abs(policy_gain(p, r, pol) - g_ref) <= 1e-8
      assert jd.check_unichain(m, sol.policy)
      # reference state and tau change nothing but the bias normalization
      other = jd.relative_value_iteration(m, tol=1e-10, tau=0.2, reference_state=3,
                                          max_iters=100_000)
      assert abs(float(other.gain) - g_ref) <= 1e-8
      np.testing.assert_allclose(np.asarray(other.bias) - float(other.bias[0]),
                                 np.asarray(sol.bias), atol=1e-6)


def test_float32_bracket_holds():
  for seed in range(3):
    m, p, r, am = _unichain("sparse", seed, dtype=jnp.float32)
    g_ref = lp_gain(p, r, am)
    for tol in (1e-2, 1e-9):
      sol = jd.relative_value_iteration(m, tol=tol)
      assert float(sol.gain_lower) <= g_ref <= float(sol.gain_upper)
      if bool(sol.converged):
        assert float(sol.gain_upper) - float(sol.gain_lower) <= tol
    assert not bool(jd.relative_value_iteration(m, tol=1e-9).converged)


def test_periodic_chain_needs_the_transform():
  # two states that swap deterministically; rewards 1 and 0: gain 1/2
  m = jd.TabularMDP.from_sparse([[[1]], [[0]]], [[[1.0]], [[1.0]]], [[1.0], [0.0]], 1.0)
  plain = jd.relative_value_iteration(m, tau=0.0, max_iters=500)
  assert not bool(plain.converged)
  assert float(plain.gain_lower) <= 0.5 <= float(plain.gain_upper)
  sol = jd.relative_value_iteration(m, tol=1e-5)  # float32: floor ~1e-6
  assert bool(sol.converged) and abs(float(sol.gain) - 0.5) <= 1e-5


def test_multichain_is_not_converged_and_bracket_holds():
  # state 0 chooses absorbing state 1 (reward 1) or 2 (reward 2): g* = (2, 1, 2)
  ns = [[[1], [2]], [[1], [1]], [[2], [2]]]
  r = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]
  m = jd.TabularMDP.from_sparse(ns, np.ones((3, 2, 1)), r, 1.0)
  sol = jd.relative_value_iteration(m, tol=1e-6, max_iters=2_000)
  assert not bool(sol.converged)
  assert float(sol.gain_lower) <= 1.0 and float(sol.gain_upper) >= 2.0
  assert not jd.check_unichain(m, sol.policy)
  assert len(jd.planning.recurrent_classes(m, np.array([0, 0, 0]))) == 2
  assert jd.check_unichain(m.replace(rewards=m.rewards), np.array([1, 1, 1])) is False


def test_gain_of_the_states_reachable_from_initial_and_padded_batches():
  """The bracket is over the states reachable from ``initial`` (a closed set).
  (1) The multichain example above started in state 1 (absorbing, reward 1):
  g* = 1 there, and the bracket closes. (2) ``stack`` padded the smaller MDP
  with unreachable absorbing reward-0 states, a recurrent class of gain 0:
  the batched member's bracket used to stay open over [0, g*] (gain 2.72,
  converged False, against 5.43 alone); its padded states are now transient
  copies of state 0, and the member's gain is its own. Reference: the dual
  LP."""
  ns = [[[1], [2]], [[1], [1]], [[2], [2]]]
  r = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_sparse(ns, np.ones((3, 2, 1)), r, 1.0, initial=[0.0, 1.0, 0.0])
    sol = jd.relative_value_iteration(m, tol=1e-9, reference_state=1)
    assert bool(sol.converged) and float(sol.gain_lower) <= 1.0 <= float(sol.gain_upper)
    assert float(sol.gain_upper) - float(sol.gain_lower) <= 1e-9
    rng = np.random.default_rng(3)
    mdps, refs = [], []
    for s, a in ((3, 2), (6, 3)):
      p, rr = random_dense(rng, s, a)
      rr = rr + 5.0
      mdps.append(jd.TabularMDP.from_dense(p, rr, 1.0))
      refs.append(lp_gain(p, rr))
    f = lambda mm: jd.relative_value_iteration(mm, tol=1e-9)
    batched = jax.vmap(f)(jd.stack(mdps))
    # (3) reference_state 0 unreachable (absorbing, gain 0) from a slowly mixing
    # pair with gain 1/2 (closed form: rewards 1 and 0, symmetric switching):
    # pinned at state 0 the pair's values drifted by 1/2 per backup and the
    # float32 bracket stayed 3.1e-3 wide; now the first reachable state is
    # pinned and it closes below 1e-3.
    e = 0.002
    p3 = np.zeros((3, 1, 3))
    p3[0, 0, 0] = 1.0
    p3[1, 0, 1], p3[1, 0, 2], p3[2, 0, 2], p3[2, 0, 1] = 1 - e, e, 1 - e, e
    slow = jd.TabularMDP.from_dense(p3, np.array([[0.0], [1.0], [0.0]]), 0.9,
                                    initial=[0.0, 1.0, 0.0], dtype=jnp.float32)
    sol = jd.relative_value_iteration(slow, tol=1e-3, max_iters=20_000)
    assert bool(sol.converged), (float(sol.gain_lower), float(sol.gain_upper))
    assert float(sol.gain_lower) <= 0.5 <= float(sol.gain_upper)
    assert float(sol.bias[1]) == 0.0
    for i, (mm, ref) in enumerate(zip(mdps, refs)):
      assert bool(batched.converged[i]), i
      assert float(batched.gain_lower[i]) - 1e-9 <= ref <= float(batched.gain_upper[i]) + 1e-9
      np.testing.assert_allclose(batched.gain[i], f(mm).gain, atol=1e-12)


def _gain(rew, mm):
  return jd.relative_value_iteration(mm.replace(rewards=rew), tol=1e-10).gain


def test_relative_vi_gain_gradient_and_nan_without_a_fixed_point():
  """Reverse mode (implicit, at the returned policy's relative fixed point):
  d g* / d r(s, a) = mu_pi(s) 1[a = pi(s)] (stationary distribution, float64
  linear solve); NaN where the bracket did not close (a multichain MDP whose
  two classes have gains 1 and 2)."""
  with jax.enable_x64(True):
    m, p, _, _ = _unichain("dense", 7, s=8)
    pol = np.asarray(jd.relative_value_iteration(m, tol=1e-10).policy)
    p_pi = p[np.arange(8), pol]
    a = np.vstack([p_pi.T - np.eye(8), np.ones((1, 8))])
    mu = np.linalg.lstsq(a, np.concatenate([np.zeros(8), [1.0]]), rcond=None)[0]
    want = np.zeros((8, 3))
    want[np.arange(8), pol] = mu
    np.testing.assert_allclose(jax.grad(_gain)(m.rewards, m), want, atol=1e-10)
    p = np.zeros((3, 1, 3))
    p[0, 0, 0] = p[1, 0, 1] = 1.0
    p[2, 0, 0] = p[2, 0, 2] = 0.5
    multi = jd.TabularMDP.from_dense(p, [[1.0], [2.0], [0.0]], 1.0)
    assert not bool(jd.relative_value_iteration(multi).converged)
    assert np.all(np.isnan(np.asarray(jax.grad(_gain)(multi.rewards, multi))))


# slow: 20 s (each gradient compiles its GMRES adjoint)
@pytest.mark.slow
def test_relative_vi_gradients():
  """The gain gradient of the sparse layout against the stationary
  distribution; probs, bias and q against central differences along
  row-sum-preserving directions (both layouts); a padded ``stack`` member
  against its single call (the padded states, transient copies of state 0,
  get 0)."""
  with jax.enable_x64(True):
    for layout in ("dense", "sparse"):
      m, p, r, _ = _unichain(layout, 7, s=8)
      run = lambda mm: jd.relative_value_iteration(mm, tol=1e-12)
      pol = np.asarray(run(m).policy)
      p_pi = p[np.arange(8), pol]
      a = np.vstack([p_pi.T - np.eye(8), np.ones((1, 8))])
      mu = np.linalg.lstsq(a, np.concatenate([np.zeros(8), [1.0]]), rcond=None)[0]
      want = np.zeros((8, 3))
      want[np.arange(8), pol] = mu
      g = jax.grad(lambda rew: run(m.replace(rewards=rew)).gain)(m.rewards)
      np.testing.assert_allclose(g, want, atol=1e-10, err_msg=layout)
      e = np.random.default_rng(1).normal(size=m.probs.shape) * np.asarray(m.probs > 0)
      e = jnp.asarray(e - np.asarray(m.probs) * e.sum(-1, keepdims=True))  # rows sum to 0
      w = jnp.linspace(-1.0, 1.0, 8)

      def f(x):
        sol = run(m.replace(probs=x))
        return sol.gain + sol.bias @ w + 0.01 * jnp.sum(sol.q)

      h = 1e-6
      fd = float((f(m.probs + h * e) - f(m.probs - h * e)) / (2 * h))
      np.testing.assert_allclose(float(jnp.sum(jax.grad(f)(m.probs) * e)), fd, rtol=1e-6,
                                 err_msg=layout)
    rng = np.random.default_rng(5)
    mdps = [jd.TabularMDP.from_dense(*random_dense(rng, s, 2), 1.0) for s in (3, 5)]
    gain = _gain
    stacked = jd.stack(mdps)
    batched = jax.vmap(jax.grad(gain))(stacked.rewards, stacked)
    np.testing.assert_allclose(batched[0, :3], jax.grad(gain)(mdps[0].rewards, mdps[0]),
                               atol=1e-12)
    assert np.all(np.asarray(batched[0, 3:]) == 0.0)


@pytest.mark.slow
def test_relative_vi_jit_and_vmap():
  with jax.enable_x64(True):
    mdps = [_unichain("sparse", seed)[0] for seed in range(3)]
    f = lambda m: jd.relative_value_iteration(m, tol=1e-9)
    loop = [f(m) for m in mdps]
    jitted = jax.jit(f)(mdps[0])
    np.testing.assert_allclose(jitted.gain, loop[0].gain, atol=1e-12)
    batched = jax.vmap(f)(jd.stack(mdps))
    for i, sol in enumerate(loop):
      np.testing.assert_allclose(batched.gain[i], sol.gain, atol=1e-9)
      np.testing.assert_allclose(batched.bias[i], sol.bias, atol=1e-6)
      np.testing.assert_array_equal(batched.policy[i], sol.policy)


def test_relative_vi_bad_input():
  m, _, _, _ = _unichain("sparse", 0)
  for bad in (1.0, -0.1, np.nan, "a"):
    with pytest.raises(jd.InvalidMDPError, match="^tau = "):
      jd.relative_value_iteration(m, tau=bad)
  for bad in (20, -1, 1.0, True):
    with pytest.raises(jd.InvalidMDPError, match="^reference_state = "):
      jd.relative_value_iteration(m, reference_state=bad)
  with pytest.raises(jd.InvalidMDPError, match="^tol = "):
    jd.relative_value_iteration(m, tol=-1.0)
  with pytest.raises(jd.InvalidMDPError, match="^max_iters = "):
    jd.relative_value_iteration(m, max_iters=0)
  with pytest.raises(jd.InvalidMDPError, match="cannot be traced"):
    jax.jit(lambda m: jd.check_unichain(m, jnp.zeros(20, jnp.int32)))(m)


# ------------------------------------------------- stochastic shortest path
def _proper_ssp(seed, s=12, a=3, dtype=None):
  """Every action moves forward (towards goal s - 1) with probability >= 0.3."""
  rng = np.random.default_rng(seed)
  p = np.zeros((s, a, s))
  for i in range(s - 1):
    for j in range(a):
      fwd = 0.3 + 0.6 * rng.random()
      p[i, j, i + 1 + rng.integers(0, min(2, s - 1 - i))] += fwd
      p[i, j, rng.integers(0, i + 1)] += 1 - fwd
  p[s - 1, :, s - 1] = 1.0
  r = -rng.random((s, a)) * 2
  r[s - 1] = 0.0
  return jd.TabularMDP.from_dense(p, r, 1.0, dtype=dtype), p, r


def ssp_reference(p, r, goal):
  """V* by float64 policy iteration on the transient states."""
  s, a = r.shape
  t = np.flatnonzero(~goal)
  pi = np.zeros(s, int)
  for _ in range(200):
    v = np.zeros(s)
    v[t] = np.linalg.solve(np.eye(t.size) - p[t, pi[t]][:, t], r[t, pi[t]])
    q = r + p @ v
    best = np.argmax(q, 1)
    if (q[np.arange(s), best] <= q[np.arange(s), pi] + 1e-13).all():
      return v
    pi = np.where(q[np.arange(s), best] > q[np.arange(s), pi] + 1e-13, best, pi)
  raise RuntimeError


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_ssp_matches_float64_linear_solve(layout):
  with jax.enable_x64(True):
    for seed in range(2):
      m, p, r = _proper_ssp(seed)
      if layout == "sparse":
        m = m.to_sparse()
      goal = np.zeros(12, bool)
      goal[-1] = True
      v_ref = ssp_reference(p, r, goal)
      sol = jd.stochastic_shortest_path(m, goal_states=[11], tol=1e-8)
      assert bool(sol.converged)
      assert np.abs(np.asarray(sol.values) - v_ref).max() <= float(sol.error_bound) <= 1e-8
      same = jd.stochastic_shortest_path(m, goal_states=goal, tol=1e-8)
      np.testing.assert_allclose(same.values, sol.values)


def test_ssp_float32_bound_holds():
  m, p, r = _proper_ssp(3, dtype=jnp.float32)
  goal = np.zeros(12, bool)
  goal[-1] = True
  v_ref = ssp_reference(np.asarray(m.probs, np.float64), np.asarray(m.rewards, np.float64), goal)
  for tol in (1e-2, 1e-10):
    sol = jd.stochastic_shortest_path(m, goal_states=[11], tol=tol)
    assert np.abs(np.asarray(sol.values, np.float64) - v_ref).max() <= float(sol.error_bound)
    assert bool(sol.converged) == (tol == 1e-2)


def test_ssp_refusals():
  det = jd.TabularMDP.from_sparse(*np_grid(4, 0.0, goal_reward=0.0, step_reward=-1.0), 1.0)
  with pytest.raises(jd.InvalidMDPError, match="never reaches goal_states"):
    jd.stochastic_shortest_path(det, goal_states=[15])
  with jax.enable_x64(True):
    noisy = jd.TabularMDP.from_sparse(*np_grid(4, 0.5, goal_reward=0.0, step_reward=-1.0), 1.0)
    assert bool(jd.stochastic_shortest_path(noisy, goal_states=[15], tol=1e-6).converged)
  m, p, r = _proper_ssp(0)
  with pytest.raises(jd.InvalidMDPError, match="not absorbing"):
    jd.stochastic_shortest_path(m, goal_states=[0])
  bad_r = np.array(r)
  bad_r[11, 0] = 1.0
  m2 = jd.TabularMDP.from_dense(p, bad_r, 1.0)
  with pytest.raises(jd.InvalidMDPError, match=r"^rewards\[11, 0\]"):
    jd.stochastic_shortest_path(m2, goal_states=[11])
  with pytest.raises(jd.InvalidMDPError, match="^goal_states"):
    jd.stochastic_shortest_path(m, goal_states=[12])
  with pytest.raises(jd.InvalidMDPError, match="^goal_states"):
    jd.stochastic_shortest_path(m, goal_states=np.zeros(12, bool))
  with pytest.raises(jd.InvalidMDPError, match="cannot be traced"):
    jax.jit(lambda m: jd.stochastic_shortest_path(m, goal_states=[11]))(m)
  assert ar.improper_trap(det, np.arange(16) == 15).size > 0
  assert ar.improper_trap(m, np.arange(12) == 11).size == 0


def test_metadata():
  from jaxrl_dp.core.solver_info import solver_info
  for fn in (jd.relative_value_iteration, jd.stochastic_shortest_path):
    info = solver_info(fn)
    rev = fn is jd.relative_value_iteration
    assert (info.infinite_horizon, info.kind, info.reverse_mode) == (False, "control", rev)


def test_relative_vi_no_retrace_across_tol_and_tau(monkeypatch):
  import chex
  guarded = jax.jit(chex.assert_max_traces(ar._relative_vi.__wrapped__, n=1),
                    static_argnames=("max_iters", "ref", "adjoint"))
  monkeypatch.setattr(ar, "_relative_vi", guarded)
  m, _, _, _ = _unichain("sparse", 0, dtype=jnp.float32)
  for tol, tau in ((1e-3, 0.5), (1e-2, 0.3), (1e-4, 0.0)):
    jd.relative_value_iteration(m, tol=tol, tau=tau)


@pytest.mark.slow
def test_ssp_noisy_grid_uses_the_greedy_policy_certificate():
  # The worst policy's time to the goal is huge here (it can keep away from
  # the goal), so only the greedy policy's own time certifies 1e-8.
  ns, p, r = np_grid(5, 0.2, goal_reward=0.0, step_reward=-1.0)
  p, r = p.astype(np.float32), r.astype(np.float32)  # as stored in float32
  goal = np.zeros(25, bool)
  goal[24] = True
  v_ref = ssp_reference(sparse_to_dense(ns, p.astype(np.float64)), r.astype(np.float64), goal)
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_sparse(ns, p, r, 1.0)
    sol = jd.stochastic_shortest_path(m, goal_states=[24], tol=1e-8)
    assert bool(sol.converged)
    assert np.abs(np.asarray(sol.values) - v_ref).max() <= float(sol.error_bound) <= 1e-8
  sol = jd.stochastic_shortest_path(jd.TabularMDP.from_sparse(ns, p, r, 1.0),
                                    goal_states=[24], tol=1e-4)
  assert bool(sol.converged)
  assert np.abs(np.asarray(sol.values, np.float64) - v_ref).max() <= float(sol.error_bound)
