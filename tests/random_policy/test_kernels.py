"""random_q, qvi_steps, the effective-horizon kernel and sticky actions against
independent float64 NumPy references (no jaxrl_dp code in the references)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import InvalidMDPError
from jaxrl_dp.random_policy import (analyze_effective_horizon,
                                    analyze_effective_horizon_batch,
                                    analyze_sticky_actions, greedy_returns, qvi_steps, random_q,
                                    sticky_actions, sticky_state_index)
from _reference import random_dense, random_sparse, sparse_to_dense

F32 = np.finfo(np.float32).eps


# ------------------------------------------------------------- references
def np_policy_q(p, r, gamma, horizon, pi):
  """Backward induction for a fixed policy: pi [S, A] or [T, S, A] -> Q [T, S, A]."""
  s, a = r.shape
  pi = np.broadcast_to(pi, (horizon, s, a))
  v = np.zeros(s)
  out = np.zeros((horizon, s, a))
  for t in reversed(range(horizon)):
    out[t] = r + gamma * p @ v
    v = (pi[t] * out[t]).sum(1)
  return out


def np_qvi(p, r, gamma, q, k, mask=None):
  """k synchronous optimality backups; for [T, S, A] the last step is kept."""
  mask = np.ones(r.shape, bool) if mask is None else mask
  q = np.array(q, np.float64)
  for _ in range(k):
    if q.ndim == 2:
      q = r + gamma * p @ np.where(mask, q, -np.inf).max(1)
    else:
      new = q.copy()
      for t in range(q.shape[0] - 1):
        new[t] = r + gamma * p @ np.where(mask, q[t + 1], -np.inf).max(1)
      q = new
  return q


def uniform(mask):
  return mask / mask.sum(1, keepdims=True)


def random_deterministic(rng, s, a, *, p_end=0.15, levels=3):
  """BRIDGE-like deterministic MDP: -1 = terminal, rewards in a few levels (ties)."""
  ns = rng.integers(0, s, size=(s, a))
  ns[rng.random((s, a)) < p_end] = -1
  r = rng.integers(0, levels, size=(s, a)).astype(np.float64) * (rng.random((s, a)) < 0.3)
  return ns, r


def tol(x, scale=256):
  return scale * F32 * (1 + np.abs(x).max())


# ------------------------------------------------------------------ random_q
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_random_q_finite_matches_backward_induction(layout, gamma):
  rng = np.random.default_rng(0)
  s, a, T = 9, 3, 7
  if layout == "dense":
    p, r = random_dense(rng, s, a)
    mask = rng.random((s, a)) < 0.7
    mask[np.arange(s), rng.integers(0, a, s)] = True
    m = jd.TabularMDP.from_dense(p, r, gamma, action_mask=mask)
  else:
    ns, ps, r = random_sparse(rng, s, a, 3)
    p = sparse_to_dense(ns, ps)
    mask = np.ones((s, a), bool)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma)
  want = np_policy_q(p, r, gamma, T, uniform(mask))
  got = random_q(m, T)
  assert got.shape == (T, s, a)
  np.testing.assert_allclose(got, want, atol=tol(want))
  # Stationary and time-dependent exploration policies.
  pi = rng.random((s, a)) * mask
  pi /= pi.sum(1, keepdims=True)
  np.testing.assert_allclose(random_q(m, T, pi), np_policy_q(p, r, gamma, T, pi),
                             atol=tol(want))
  pit = rng.random((T, s, a)) * mask
  pit /= pit.sum(2, keepdims=True)
  np.testing.assert_allclose(random_q(m, T, pit), np_policy_q(p, r, gamma, T, pit),
                             atol=tol(want))


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_random_q_discounted_matches_linear_solve(layout):
  rng = np.random.default_rng(1)
  s, a, gamma = 10, 4, 0.9
  if layout == "dense":
    p, r = random_dense(rng, s, a)
    m = jd.TabularMDP.from_dense(p, r, gamma)
  else:
    ns, ps, r = random_sparse(rng, s, a, 2)
    p = sparse_to_dense(ns, ps)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma)
  for pi in (np.full((s, a), 1 / a), rng.dirichlet(np.ones(a), size=s)):
    p_pi = np.einsum("sa,sat->st", pi, p)
    v = np.linalg.solve(np.eye(s) - gamma * p_pi, (pi * r).sum(1))
    want = r + gamma * p @ v
    got = random_q(m, None, None if pi[0, 0] == 1 / a else pi)
    assert got.shape == (s, a)
    np.testing.assert_allclose(got, want, atol=tol(want) / (1 - gamma))


def test_random_q_jit_vmap_and_no_jit():
  rng = np.random.default_rng(2)
  mdps = [jd.TabularMDP.from_sparse(*random_sparse(rng, 8, 3, 2)[:2],
                                    rng.normal(size=(8, 3)), 1.0) for _ in range(4)]
  batch = jd.stack(mdps)
  loop = np.stack([np.asarray(random_q(m, 5)) for m in mdps])
  np.testing.assert_allclose(jax.vmap(lambda m: random_q(m, 5))(batch), loop, rtol=1e-6,
                             atol=1e-6)
  with jax.disable_jit():
    np.testing.assert_allclose(random_q(mdps[0], 5), loop[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda m: random_q(m, 5))(mdps[1]), loop[1],
                             rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------- qvi_steps
def test_qvi_steps_finite_and_infinite():
  rng = np.random.default_rng(3)
  s, a, T = 8, 3, 6
  p, r = random_dense(rng, s, a)
  mask = np.ones((s, a), bool)
  mask[0, 1] = False
  m = jd.TabularMDP.from_dense(p, r, 1.0, action_mask=mask)
  q1 = np_policy_q(p, r, 1.0, T, uniform(mask))
  for k in (1, 2, 4):
    np.testing.assert_allclose(qvi_steps(m, random_q(m, T), k), np_qvi(p, r, 1.0, q1, k, mask),
                               atol=tol(q1))
  # T - 1 backups of the random policy's Q give Q* (backward induction).
  np.testing.assert_allclose(qvi_steps(m, random_q(m, T), T - 1), jd.finite_horizon(m, T).q,
                             atol=tol(q1))
  md = jd.TabularMDP.from_dense(p, r, 0.8, action_mask=mask)
  q0 = rng.normal(size=(s, a))
  np.testing.assert_allclose(qvi_steps(md, q0, 3), np_qvi(p, r, 0.8, q0, 3, mask), atol=tol(q0))
  # vmap over a batch of tables, jit == no-jit.
  qs = jnp.stack([random_q(m, T), random_q(m, T) * 2])
  got = jax.vmap(lambda q: qvi_steps(m, q, 2))(qs)
  np.testing.assert_allclose(got[1], qvi_steps(m, qs[1], 2), rtol=1e-6, atol=1e-6)
  with jax.disable_jit():
    np.testing.assert_allclose(qvi_steps(m, qs[0], 2), got[0], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------- bad input
def test_bad_inputs_raise_invalid_mdp_error():
  rng = np.random.default_rng(4)
  p, r = random_dense(rng, 4, 2)
  mask = np.array([[True, False], [True, True], [True, True], [True, True]])
  m = jd.TabularMDP.from_dense(p, r, 1.0, action_mask=mask)
  for h in (0, -3, 2.5, True):
    with pytest.raises(InvalidMDPError, match="horizon"):
      random_q(m, h)
    with pytest.raises(InvalidMDPError, match="horizon"):
      analyze_effective_horizon(m, h)
  bad = np.full((4, 2), 0.3)
  with pytest.raises(InvalidMDPError, match=r"policy\[0, :\] sums to 0.6"):
    random_q(m, 3, bad)
  with pytest.raises(InvalidMDPError, match=r"policy\[0, 1\] = 0.5: expected probability 0 on a masked"):
    random_q(m, 3, np.full((4, 2), 0.5))
  with pytest.raises(InvalidMDPError, match=r"policy\[2, 1, :\] sums to"):
    pol = np.tile(np.array([1.0, 0.0]), (3, 4, 1))
    pol[2, 1] = [0.7, 0.7]
    analyze_effective_horizon(m, 3, policy=pol)
  with pytest.raises(InvalidMDPError, match="policy: expected shape"):
    random_q(m, 3, np.full((5, 4, 2), 0.5))
  with pytest.raises(InvalidMDPError, match="needs a finite horizon"):
    random_q(m.replace(discount=jnp.asarray(0.9)), None, np.full((3, 4, 2), 0.5))
  with pytest.raises(InvalidMDPError, match="discount"):
    random_q(m, None)  # discount 1 without a horizon
  for k in (0, -1, 1.0):
    with pytest.raises(InvalidMDPError, match=f"k = {k!r}"):
      qvi_steps(m, np.zeros((4, 2)), k)
  with pytest.raises(InvalidMDPError, match="num_k = 0"):
    greedy_returns(m, 3, num_k=0)
  # The optimality tolerance is checked (it changed the answer unchecked).
  for bad_tol in (-1.0, float("nan"), float("inf"), None, "1e-4"):
    with pytest.raises(InvalidMDPError, match=r"tol = .*: expected a finite number >= 0"):
      analyze_effective_horizon(m, 3, tol=bad_tol)
    with pytest.raises(InvalidMDPError, match=r"tol = .*: expected a finite number >= 0"):
      analyze_sticky_actions(m, 3, tol=bad_tol)
    with pytest.raises(InvalidMDPError, match=r"tol = .*: expected a finite number >= 0"):
      analyze_effective_horizon_batch(jd.stack([m, m]), 3, tol=bad_tol)
  for bad_p in (-0.1, 1.5, float("nan")):
    with pytest.raises(InvalidMDPError, match="p = "):
      sticky_actions(m, bad_p)
  with pytest.raises(InvalidMDPError, match="q: expected shape"):
    qvi_steps(m, np.zeros((4, 3)), 1)


# ------------------------------------------------- effective-horizon kernel
def np_min_k(ns, r, horizon, *, start_with_rewards=False, tol_=1e-4):
  """Reference min_k / W for a deterministic MDP from from_deterministic's layout."""
  s, a = r.shape
  qx = np.zeros((horizon, s, a))
  qo = np.zeros((horizon, s, a))
  vx = np.zeros(s)
  vo = np.zeros(s)
  for t in reversed(range(horizon)):
    qx[t] = r + vx[ns]
    qo[t] = r + vo[ns]
    vx, vo = qx[t].mean(1), qo[t].max(1)
  q = np.broadcast_to(r, qx.shape).copy() if start_with_rewards else qx
  for k in range(1, horizon + 1):
    ok, frontier = True, {0}
    for t in range(horizon):
      nxt = set()
      for st in frontier:
        for act in np.flatnonzero(q[t, st] == q[t, st].max()):
          ok &= qo[t, st, act] >= qo[t, st].max() - tol_
          nxt.add(int(ns[st, act]))
      frontier = nxt
    if ok:
      return k
    q = _det_backup(ns, r, q)
  return 0


def _det_backup(ns, r, q):
  new = q.copy()
  for t in range(q.shape[0] - 1):
    new[t] = r + q[t + 1].max(1)[ns]
  return new


SMALL, T_SMALL = (6, 2), 4  # one shape for several tests: one compilation


def _bridge_like(seed, s, a):
  rng = np.random.default_rng(seed)
  ns, r = random_deterministic(rng, s, a)
  ns[-1, -1] = -1  # always a terminal, so every seed has the same shape
  m = jd.TabularMDP.from_deterministic(ns, r, 1.0)
  full_ns = np.asarray(m.next_states[..., 0])
  return m, full_ns, np.asarray(m.rewards, np.float64)


@pytest.mark.parametrize("seed", range(6))
def test_min_k_and_epw_match_reference(seed):
  m, ns, r = _bridge_like(seed, *SMALL)
  T = T_SMALL
  res = analyze_effective_horizon(m, T)
  assert int(res.min_k) == np_min_k(ns, r, T)
  assert int(res.epw) == np_min_k(ns, r, T, start_with_rewards=True)
  # Returns: optimal from backward induction, random from the reference recursion.
  np.testing.assert_allclose(res.optimal_return, jd.finite_horizon(m, T).values[0, 0], rtol=1e-6)
  np.testing.assert_allclose(res.random_return, np_policy_q(
      sparse_to_dense(ns[..., None], np.ones(ns.shape + (1,))), r, 1.0, T,
      np.full(r.shape, 1 / r.shape[1]))[0, 0].mean(), rtol=1e-9, atol=1e-12)
  # J_k (worst-case tie breaking) is optimal at k = min_k (by definition) and at k = T
  # (Q^T = Q*); never above the optimum.
  js = greedy_returns(m, T, num_k=T)
  opt = float(res.optimal_return)
  assert js[int(res.min_k) - 1] >= opt - 1e-9 and js[-1] >= opt - 1e-9
  assert np.all(js <= opt + 1e-9)


@pytest.mark.slow  # ~8-11 s on 2 cores: kept out of the default run's 10-minute budget
def test_batched_analysis_equals_loop_with_padding():
  mdps = [_bridge_like(10 + i, s, a)[0] for i, (s, a) in enumerate([SMALL, (9, 3), (7, 3)])]
  T = T_SMALL
  batch = jd.stack(mdps)  # pads S and A: padded states unreachable, actions masked
  got = analyze_effective_horizon_batch(batch, T)
  assert got.min_k.shape == (3,) and got.ms.shape == (3, T)
  ints = ("min_k", "epw", "k_valid", "ms", "num_states")
  floats = ("effective_horizon", "gaps", "vars", "optimal_return", "random_return",
            "worst_return", "min_state_occupancy", "min_sum_state_occupancy",
            "min_state_action_occupancy", "min_sum_state_action_occupancy",
            "covering_length_bound")

  def same(a, b, i=None):
    pick = (lambda x: x[i]) if i is not None else (lambda x: x)
    for f in ints:
      np.testing.assert_array_equal(pick(getattr(a, f)), getattr(b, f), err_msg=f)
    for f in floats:
      np.testing.assert_allclose(pick(getattr(a, f)), getattr(b, f), rtol=1e-12, err_msg=f)

  for i, one in enumerate(jd.unstack(batch)):  # vmap == loop
    same(got, analyze_effective_horizon(one, T), i)
  same(got, analyze_effective_horizon(mdps[0], T), 0)  # padding changes nothing
  # Batched exploration policies [B, T, S, A]: uniform over each MDP's valid actions
  # (exact weights 1/2 for the A = 2 member, so it must match bit for bit).
  mask = np.asarray(batch.action_mask, np.float64)
  pol = np.broadcast_to((mask / mask.sum(-1, keepdims=True))[:, None], (3, T) + mask.shape[1:])
  with_pol = analyze_effective_horizon_batch(batch, T, policy=pol)
  same(with_pol, jax.tree_util.tree_map(lambda x: x[0], got), 0)
  with pytest.raises(InvalidMDPError, match=r"policy\[0, 0, 0, :\] sums to 2.0"):
    analyze_effective_horizon_batch(batch, T, policy=pol * 2)
  with pytest.raises(InvalidMDPError, match=r"policy: expected shape .*leading batch axis"):
    analyze_effective_horizon_batch(batch, T, policy=pol[0])


@pytest.mark.slow
def test_kernel_jit_equals_no_jit():
  from jaxrl_dp.random_policy import effective_horizon_kernel
  m, _, _ = _bridge_like(3, *SMALL)
  T = T_SMALL
  jitted = analyze_effective_horizon(m, T)
  with jax.enable_x64(True), jax.disable_jit():
    eager = effective_horizon_kernel(jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, m), T)
  for f in ("min_k", "epw", "k_valid", "ms", "num_states"):
    np.testing.assert_array_equal(getattr(eager, f), getattr(jitted, f), err_msg=f)
  np.testing.assert_allclose(eager.effective_horizon, jitted.effective_horizon, rtol=1e-6)
  np.testing.assert_allclose(eager.random_return, jitted.random_return, rtol=1e-6)


# ------------------------------------------------------------ sticky actions
def np_sticky_random_value(ns, r, p, horizon):
  """Direct recursion on (state, previous action) for the uniform policy, sticky from
  the second step: returns the expected T-step return from state 0."""
  s, a = r.shape

  @functools.lru_cache(maxsize=None)
  def value(st, prev, t):
    if t == horizon:
      return 0.0
    tot = 0.0
    for act in range(a):
      branches = [(1.0, act)] if prev is None else [(1 - p, act), (p, prev)]
      for w, ex in branches:
        tot += w / a * (r[st, ex] + value(int(ns[st, ex]), ex, t + 1))
    return tot

  return value(0, None, 0)


@pytest.mark.parametrize("layout", [pytest.param("sparse", marks=pytest.mark.slow), "dense"])
def test_sticky_actions_match_direct_recursion(layout):
  m, ns, r = _bridge_like(7, 6, 3)
  if layout == "dense":
    m = m.to_dense()
  T, p = 5, 0.3
  sm = sticky_actions(m, p)
  s, a = ns.shape
  assert sm.num_states == s * (a + 1) and sm.is_sparse == (layout == "sparse")
  jd.validate_mdp(jax.device_get(sm))
  want = np_sticky_random_value(ns, r, p, T)
  got = random_q(sm, T)
  v0 = np.asarray(got[0]).mean(1) @ np.asarray(sm.initial)
  np.testing.assert_allclose(v0, want, rtol=1e-5)
  # Stickiness: from (s, b) action a executes b with probability p.
  i = sticky_state_index(s, a, 2, 1)
  if layout == "sparse":
    nxt, pr = np.asarray(sm.next_states[i, 0]), np.asarray(sm.probs[i, 0])
    assert {(int(x), round(float(y), 6)) for x, y in zip(nxt, pr)} == {
        (int(ns[2, 0]) * a + 0, 0.7), (int(ns[2, 1]) * a + 1, 0.3)}
  # p = 0 gives back the original values; jit and vmap over p.
  np.testing.assert_allclose(random_q(sticky_actions(m, 0.0), T)[0].mean(1) @ sm.initial,
                             np_policy_q(sparse_to_dense(ns[..., None], np.ones(ns.shape + (1,))),
                                         r, 1.0, T, np.full((s, a), 1 / a))[0, 0].mean(),
                             rtol=1e-5)
  ps = jnp.array([0.0, 0.3, 1.0])
  many = jax.vmap(lambda q: jax.jit(sticky_actions)(m, q).rewards)(ps)
  np.testing.assert_allclose(many[1], sm.rewards, rtol=1e-6)


# ---------------------------------------------------------------------- GORP
# slow (3.8 s): GORP is checked against an exhaustive search in the default run
# (test_gorp_scores_discounted_returns_and_runs_sparse_under_x64).
@pytest.mark.slow
def test_gorp_with_many_episodes_recovers_optimal_sequence():
  from jaxrl_dp.random_policy import gorp
  T = T_SMALL
  for seed in (7, 14, 16):  # min_k = 1 with gaps >= 0.75 (same shape: one compilation)
    m, ns, r = _bridge_like(seed, *SMALL)
    res = gorp(jax.random.key(seed), m, T, 1, 2000, num_runs=3)
    assert res.actions.shape == (3, T)
    # Independent check of the returned open-loop sequence: replay it in NumPy.
    for acts in np.asarray(res.actions):
      st, ret = 0, 0.0
      for a in acts:
        ret, st = ret + r[st, a], int(ns[st, a])
      assert ret == pytest.approx(float(jd.finite_horizon(m, T).values[0, 0]), abs=1e-6)
    np.testing.assert_allclose(res.final_return, res.optimal_return, atol=1e-6)
    # Steps: every episode of every (iteration, action) pair, cut at termination.
    assert np.all(np.asarray(res.timesteps_per_iteration) <= 2000 * 2 * T)
  # Reproducible: same key, same runs; m is not static (no recompilation).
  again = gorp(jax.random.key(16), m, T, 1, 2000, num_runs=3)
  np.testing.assert_array_equal(again.actions, res.actions)
  np.testing.assert_array_equal(again.timesteps_per_iteration, res.timesteps_per_iteration)
  gorp(jax.random.key(0), m, T, 1, 5, num_runs=3)
  with pytest.raises(InvalidMDPError, match="m = 0"):
    gorp(jax.random.key(0), m, T, 1, 0)
  with pytest.raises(InvalidMDPError, match="k = 0"):
    gorp(jax.random.key(0), m, T, 0, 5)


def test_analysis_with_explicit_exploration_policy():
  # With A = 2 the uniform weights 1/2 are exact, so an explicit uniform
  # time-dependent policy must reproduce the default analysis bit for bit.
  m, ns, r = _bridge_like(2, *SMALL)
  T = T_SMALL
  pol = np.full((T,) + r.shape, 0.5, np.float32)
  a, b = analyze_effective_horizon(m, T), analyze_effective_horizon(m, T, policy=pol)
  for f in ("min_k", "epw", "k_valid", "ms", "gaps", "vars", "random_return",
            "min_state_action_occupancy", "covering_length_bound"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
  # A skewed policy changes the random return to the NumPy backward induction's.
  pol[:, :, 0], pol[:, :, 1] = 0.9, 0.1
  c = analyze_effective_horizon(m, T, policy=pol)
  dense = sparse_to_dense(ns[..., None], np.ones(ns.shape + (1,)))
  want = np_policy_q(dense, r, 1.0, T, pol.astype(np.float64))[0, 0] @ pol[0, 0]
  np.testing.assert_allclose(c.random_return, want, rtol=1e-6)


# --------------------------------------------------------- covering length
def _np_visit_set_law(p, init, pi, horizon, countable):
  """Brute force: the law of the set of countable (s, a) pairs one episode
  visits, by enumerating every trajectory (actions and next states)."""
  law = {}

  def walk(t, s, prob, seen):
    if t == horizon:
      law[seen] = law.get(seen, 0.0) + prob
      return
    for a in range(pi.shape[-1]):
      pa = pi[t, s, a]
      if pa == 0:
        continue
      now = seen | {(s, a)} if countable[s, a] else seen
      for s2 in range(p.shape[-1]):
        if p[s, a, s2] > 0:
          walk(t + 1, s2, prob * pa * p[s, a, s2], now)

  for s0 in range(len(init)):
    if init[s0] > 0:
      walk(0, s0, init[s0], frozenset())
  return law


def _np_covering_length(law, pairs):
  """Smallest n with P(every pair seen in n i.i.d. episodes) >= 1/2, by the
  exact law of the covered set (a Markov chain on subsets), no inclusion-exclusion."""
  full = frozenset(pairs)
  cov = {frozenset(): 1.0}
  for n in range(1, 10_000):
    nxt = {}
    for c, pc in cov.items():
      for x, px in law.items():
        key = c | x
        nxt[key] = nxt.get(key, 0.0) + pc * px
    cov = nxt
    if cov.get(full, 0.0) >= 0.5:
      return n
  raise AssertionError("no covering within 10000 episodes")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_covering_length_exact_against_trajectory_enumeration(seed):
  from jaxrl_dp.random_policy import covering_length
  rng = np.random.default_rng(seed)
  s_n, a_n, T = 4, 2, 3
  ns, ps, r = random_sparse(rng, s_n, a_n, 2)
  p = sparse_to_dense(ns, ps)
  p[3] = 0.0
  p[3, :, 3] = 1.0  # state 3: absorbing with zero reward (terminal, not counted)
  r[3] = 0.0
  init = np.array([0.7, 0.3, 0.0, 0.0])
  pi = np.broadcast_to(rng.dirichlet(np.ones(a_n), size=s_n), (T, s_n, a_n)).copy()
  if seed == 2:  # a skewed time-dependent policy with a zero-probability action
    pi[1, 0] = [1.0, 0.0]
  m = jd.TabularMDP.from_dense(p, r, 1.0, initial=init)
  countable = np.ones((s_n, a_n), bool)
  countable[3] = False
  law = _np_visit_set_law(p, init, pi, T, countable)
  pairs = set().union(*law)
  want = _np_covering_length(law, pairs)
  got = covering_length(m, T, policy=pi)
  assert got == want
  res = analyze_effective_horizon(m, T, policy=pi)
  # The occupancy bounds bracket it and are at least as tight as the old bound.
  assert res.covering_length_lower <= want <= res.covering_length_upper
  assert res.covering_length_upper <= np.ceil(res.covering_length_bound)
  # The lower bound is the single-pair requirement of the rarest pair, computed
  # from an upper bound on its visit probability: never above the requirement
  # from the exact per-pair visit probabilities of the enumeration.
  v = min(sum(pr for x, pr in law.items() if q in x) for q in pairs)
  exact_single = next(n for n in range(1, 10_000) if 1 - (1 - v) ** n >= 0.5)
  assert res.covering_length_lower <= exact_single <= want


@pytest.mark.slow
def test_covering_length_coupon_collector_closed_form():
  """One state, A actions, T = 1, uniform policy: the coupon collector,
  P(all A seen in n draws) = sum_j (-1)^j C(A, j) (1 - j / A)^n. (Reward 1:
  an absorbing zero-reward state would be terminal and not count.)"""
  from math import comb

  from jaxrl_dp.random_policy import covering_length
  for a_n in (2, 3, 5):
    m = jd.TabularMDP.from_dense(np.ones((1, a_n, 1)), np.ones((1, a_n)), 1.0)
    p_all = lambda n: sum((-1) ** j * comb(a_n, j) * (1 - j / a_n) ** n for j in range(a_n + 1))
    want = next(n for n in range(1, 1000) if p_all(n) >= 0.5)
    assert covering_length(m, 1) == want, a_n
  assert want == 10  # A = 5: E = 11.4 draws, median 10
  big = jd.TabularMDP.from_dense(np.ones((1, 20, 1)), np.ones((1, 20)), 1.0)
  with pytest.raises(ValueError, match="max_pairs"):
    covering_length(big, 1)


def test_covering_length_ends_on_rows_summing_just_above_one():
  """Rows summing to 1 + 7e-6 (inside the validation tolerance) made a rare
  pair's avoidance probability exceed 1: clipped to 1, it never decayed and
  the search never ended. Reference: enumeration of every episode of the
  row-normalized model and inclusion-exclusion (the stored model is that one
  to 7e-6, so L agrees to about that relative accuracy)."""
  import itertools

  from jaxrl_dp.random_policy import covering_length
  eps, T = 2e-6, 3
  p = np.zeros((2, 2, 2))
  p[0, 0] = [1 - eps + 7e-6, eps]
  p[0, 1] = [1.0, 0.0]
  p[1, :, 1] = 1.0
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_dense(p, np.array([[0.0, 0.0], [1.0, 1.0]]), 1.0,
                                 initial=[1.0, 0.0], dtype=np.float64)
  q = p / p.sum(-1, keepdims=True)
  law = []
  for acts in itertools.product(range(2), repeat=T):
    for nxt in itertools.product(range(2), repeat=T - 1):
      s, pr, seen = 0, 1.0, set()
      for t in range(T):
        pr *= 0.5
        seen.add((s, acts[t]))
        if t < T - 1:
          pr *= q[s, acts[t], nxt[t]]
          s = nxt[t]
      law.append((pr, seen))
  pairs = sorted(set().union(*(v for _, v in law)))

  def missed(n):
    return sum((-1) ** (len(j) + 1) * sum(pr for pr, v in law if not set(j) & v) ** n
               for r in range(1, len(pairs) + 1) for j in itertools.combinations(pairs, r))

  lo, hi = 1, 1
  while missed(hi) > 0.5:
    hi *= 2
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if missed(mid) <= 0.5 else (mid, hi)
  with jax.enable_x64(True):
    got = covering_length(m, T)
  assert abs(got - hi) <= 1e-5 * hi


def test_gorp_scores_discounted_returns_and_runs_sparse_under_x64():
  """k = T makes GORP an exhaustive search over open-loop sequences: on a
  deterministic MDP it must return the best discounted sequence (it summed
  undiscounted rewards: (1, 0) with return 0.3 instead of (0, 0) with 1.1)."""
  import itertools

  from jaxrl_dp.random_policy import gorp
  ns = np.array([[0, 1], [1, 1]])
  r = np.array([[1.0, 0.0], [3.0, 3.0]])
  for g, T in ((0.1, 2),):
    def ret(seq):
      s, total = 0, 0.0
      for t, a in enumerate(seq):
        total += g ** t * r[s, a]
        s = ns[s, a]
      return total

    best = max(itertools.product(range(2), repeat=T), key=ret)  # first maximizer: GORP's ties
    res = gorp(jax.random.PRNGKey(0), jd.TabularMDP.from_deterministic(ns, r, g), T, T, 1)
    assert tuple(np.asarray(res.actions)) == best, g
    np.testing.assert_allclose(float(res.final_return), ret(best), rtol=1e-6)
    np.testing.assert_allclose(float(res.optimal_return), ret(best), rtol=1e-6)
  # Under x64 the sampled start states were int64 and the sparse layout's next
  # states int32: the scan refused the carry.
  with jax.enable_x64(True):
    res = gorp(jax.random.PRNGKey(0), jd.TabularMDP.from_deterministic(ns, r, 0.5), 3, 3, 1)
    # At gamma 0.5, T = 3: (1, *, *) gives 0 + 0.5 * 3 + 0.25 * 3 = 2.25, the best
    # ((0, 0, 0) and (0, 1, *) give 1.75).
    np.testing.assert_allclose(float(res.final_return), 2.25, rtol=1e-12)
    np.testing.assert_allclose(float(res.optimal_return), 2.25, rtol=1e-12)


# slow: ~4 s (the structure it relies on, one valid-action count per padded
# state, is checked in tests/core/test_model.py)
@pytest.mark.slow
def test_padded_member_with_action_zero_masked_keeps_its_analysis():
  """A member whose states all mask action 0, stacked with a larger one: the
  padded states must not have more valid actions than the member's own (the
  analysis reads ``A`` as the largest count of valid actions; a padded state
  with action 0 added had 3 where the member has 2: horizon 5.72 for 6.0).
  Reference: the unpadded member's own analysis (exact enumeration)."""
  rng = np.random.default_rng(33)
  ns, r = rng.integers(0, 5, (5, 3)), rng.random((5, 3)).round(1)
  mask = np.ones((5, 3), bool)
  mask[:, 0] = False
  a = jd.TabularMDP.from_deterministic(ns, r, 1.0, action_mask=mask)
  b = jd.TabularMDP.from_deterministic(np.zeros((8, 3), int), np.ones((8, 3)), 1.0)
  one = analyze_effective_horizon(a, 6)
  got = analyze_effective_horizon_batch(jd.stack([a, b]), 6)
  assert float(got.effective_horizon[0]) == float(one.effective_horizon)
  np.testing.assert_array_equal(np.asarray(got.ms[0]), np.asarray(one.ms))


def test_occupancies_and_sampling_check_the_policy_and_horizon():
  """``state_occupancies`` / ``sample_trajectories`` take policies through
  ``as_policy`` (rows summing to 2, mass on masked actions and a negative
  horizon were accepted); an int policy equals its one-hot rows; the
  occupancies equal a float64 NumPy forward recursion."""
  import jax
  from jaxrl_dp.random_policy import sample_trajectories, state_occupancies
  p = np.zeros((2, 2, 2))
  p[:, 0, 0] = 1.0
  p[:, 1, 1] = 1.0
  mask = np.array([[True, True], [True, False]])
  m = jd.TabularMDP.from_dense(p, [[0.0, 1.0], [0.0, 0.0]], 1.0, initial=[1.0, 0.0],
                               action_mask=mask)
  pol = np.array([[0.25, 0.75], [1.0, 0.0]])
  d, want = np.asarray(state_occupancies(m, 3, policy=pol), np.float64), []
  x = np.array([1.0, 0.0])
  for _ in range(3):
    want.append(x)
    x = np.einsum("s,sa,sat->t", x, pol, p)
  np.testing.assert_allclose(d, np.stack(want), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(state_occupancies(m, 3, policy=np.array([1, 0]))),
                             np.asarray(state_occupancies(m, 3, policy=np.eye(2)[[1, 0]])))
  with pytest.raises(InvalidMDPError, match="sums to 2"):
    state_occupancies(m, 2, policy=np.ones((2, 2)))
  with pytest.raises(InvalidMDPError, match="horizon"):
    state_occupancies(m, -1)
  with pytest.raises(InvalidMDPError, match="masked"):
    sample_trajectories(jax.random.key(0), m, 2, 3, policy=np.full((2, 2), 0.5))
  with pytest.raises(InvalidMDPError, match="num"):
    sample_trajectories(jax.random.key(0), m, 2, 0)
