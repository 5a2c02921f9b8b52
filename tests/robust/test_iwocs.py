"""IWOCS, robust VI on the sa-rectangular hull, and the windy walk.

References are independent float64 NumPy computations: brute-force
enumeration of deterministic policies (max over policies of min over models of
exact policy evaluation) on small random model sets, and on the windy walk a
tight sandwich certificate (min over models of each model's optimal value is an
upper bound on max-min; the worst model's optimal policy evaluated in every
model is a lower bound; both agree).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp
from jaxrl_dp.planning.value_iteration import value_iteration_solver
from jaxrl_dp.robust import (HullOperator, hull_robust_value_iteration, iwocs,
                             model_set, worst_case_evaluation)
from jaxrl_dp.suites import windy_walk

ATOL = 2e-4  # float32 values <= 1 / (1 - 0.95) with VI tolerance 1e-5


# ------------------------------------------------------------ references
def _dense_np(models):
  """float64 dense ``P [M, S, A, S]``, ``R [M, S, A]``, gamma [M], rho [M, S]."""
  p = np.asarray(models.probs, np.float64)
  m, s, a, k = p.shape
  if models.next_states is not None:
    ns = np.asarray(models.next_states)
    dense = np.zeros((m, s, a, s))
    for i in range(m):
      for x in range(s):
        for u in range(a):
          for j in range(k):
            dense[i, x, u, ns[i, x, u, j]] += p[i, x, u, j]
    p = dense
  return (p, np.asarray(models.rewards, np.float64),
          np.asarray(models.discount, np.float64),
          np.asarray(models.initial, np.float64))


def _np_eval(p, r, g, pi):
  s = r.shape[0]
  p_pi = p[np.arange(s), pi]
  return np.linalg.solve(np.eye(s) - g * p_pi, r[np.arange(s), pi])


def _np_optimal(p, r, g):
  """Policy iteration in float64: ``(V*, pi*)``."""
  s = r.shape[0]
  pi = np.zeros(s, int)
  while True:
    v = _np_eval(p, r, g, pi)
    q = r + g * p @ v
    new = np.argmax(q, axis=1)
    keep = q[np.arange(s), pi] >= q[np.arange(s), new] - 1e-12
    new = np.where(keep, pi, new)
    if np.array_equal(new, pi):
      return v, pi
    pi = new


def _np_hull_vi(p, r, g, iters=3000):
  v = np.zeros(r.shape[1])
  for _ in range(iters):
    q = np.min(r + g[:, None, None] * (p @ v), axis=0)
    v = q.max(axis=1)
  return v


def _brute_force(p, r, g, rho):
  """max over deterministic policies of min over models: per state and at rho."""
  m, s, a = r.shape
  best_state = np.full(s, -np.inf)
  best_rho = -np.inf
  for pi in itertools.product(range(a), repeat=s):
    pi = np.array(pi)
    v = np.stack([_np_eval(p[i], r[i], g[i], pi) for i in range(m)])
    best_state = np.maximum(best_state, v.min(axis=0))
    best_rho = max(best_rho, np.min(np.sum(rho * v, axis=1)))
  return best_state, best_rho


def _random_set(seed, s=3, a=2, m=4, gamma=0.9):
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.full(s, 0.5), size=(m, s, a))
  r = rng.uniform(size=(s, a))
  base = jaxrl_dp.TabularMDP.from_dense(p[0], r, gamma)
  return model_set(base, p)


# ------------------------------------------------------------- windy walk
@pytest.fixture(scope="module")
def walk():
  models = windy_walk()
  return models, iwocs(models), hull_robust_value_iteration(models)


def test_windy_walk_models():
  alphas = np.linspace(0.0, 0.5, 25)
  models = windy_walk(alphas)
  assert models.probs.shape == (25, 24, 4, 2)
  assert models.next_states.shape == (25, 24, 4, 2)
  np.testing.assert_allclose(np.asarray(models.probs).sum(-1), 1.0, atol=1e-6)
  assert float(models.discount[0]) == pytest.approx(0.95)
  index = jaxrl_dp.suites.gridworld_index(jaxrl_dp.suites.WINDY_WALK_LAYOUT)
  # gust probabilities in the three corridors: alpha, alpha^3, alpha^6
  for (row, k) in ((0, 1), (2, 3), (5, 6)):
    for col in range(1, 5):
      st = index[row, col]
      np.testing.assert_allclose(np.asarray(models.probs[:, st, 1, 1]), alphas ** k,
                                 rtol=1e-5, atol=1e-7)
      # the gust lands one cell west
      assert int(models.next_states[0, st, 1, 1]) == index[row, col - 1]
  # columns 0 and 5 are calm; alpha = 0 is deterministic
  assert float(models.probs[:, index[3, 0], :, 1].max()) == 0.0
  assert float(models.probs[0, :, :, 1].max()) == 0.0
  # start one-hot at bottom-left, goal top-right pays 1 on entry
  assert int(np.argmax(np.asarray(models.initial[0]))) == index[5, 0]
  assert float(models.rewards[0, index[1, 5], 0]) == 1.0
  np.testing.assert_allclose(float(models.rewards[24, index[0, 4], 1]), 0.5)


def test_iwocs_windy_walk_matches_hull_and_brute_force(walk):
  models, res, hull = walk
  # IWOCS starts at alpha = 0, finds alpha = 0.5 (index 24) and stops.
  assert int(res.models[0]) == 0 and int(res.models[1]) == 24
  assert int(res.num_models) == 2 and bool(res.converged)
  assert int(res.worst_model) == 24
  assert int(res.history.worst_model[0]) == 24
  assert float(res.residual) <= 1e-4
  rho = np.asarray(models.initial[0])
  v_hull = float(np.asarray(hull.values) @ rho)
  # the hull is larger: its robust value is a lower bound (state-wise)
  assert np.all(np.asarray(hull.values) <= np.asarray(res.values) + ATOL)
  assert v_hull <= float(res.worst_case_value) + ATOL
  # ... and here it is tight, since alpha = 0.5 is the worst model everywhere
  np.testing.assert_allclose(np.asarray(res.values), np.asarray(hull.values), atol=ATOL)
  # float64 certificate: min_m V*_m(rho) >= max-min >= min_m V^pi_m(rho)
  p, r, g, rho64 = _dense_np(models)
  opt = [_np_optimal(p[i], r[i], g[i]) for i in range(p.shape[0])]
  upper = [rho64[i] @ opt[i][0] for i in range(p.shape[0])]
  j = int(np.argmin(upper))
  pi = opt[j][1]
  lower = min(rho64[i] @ _np_eval(p[i], r[i], g[i], pi) for i in range(p.shape[0]))
  assert j == 24 and upper[j] - lower < 1e-12
  np.testing.assert_allclose(float(res.worst_case_value), upper[j], atol=ATOL)
  np.testing.assert_allclose(v_hull, upper[j], atol=ATOL)
  # the nominal optimum (alpha = 0, 9 steps to the goal entry) is gamma^9
  np.testing.assert_allclose(float(res.history.pessimistic_value[0]), 0.95 ** 9, rtol=1e-5)
  # the returned policy's worst case, re-evaluated in float64
  v_pol = min(rho64[i] @ _np_eval(p[i], r[i], g[i], np.asarray(res.policy))
              for i in range(p.shape[0]))
  np.testing.assert_allclose(float(res.worst_case_value), v_pol, atol=ATOL)


def test_iwocs_pessimistic_q_decreases(walk):
  models, res, _ = walk
  cases = [res, iwocs(_random_set(7, s=5, a=3, m=8), tol=0.0)]
  for r in cases:
    n = int(r.iterations)
    qs = np.asarray(r.history.q[:n])
    assert not np.isnan(qs).any()
    assert np.all(np.diff(qs, axis=0) <= 1e-6)
    assert np.all(np.asarray(r.q) <= qs[-1] + 1e-6)
    pv = np.asarray(r.history.pessimistic_value[:n])
    assert np.all(np.diff(pv) <= 1e-6)
    assert np.isnan(np.asarray(r.history.gap[n:])).all()
    assert (np.asarray(r.models[int(r.num_models):]) == -1).all()
  assert int(res.iterations) >= 2 and int(cases[1].iterations) >= 2


def test_iwocs_vmap_over_model_sets_equals_loop():
  sets = [_random_set(sd, s=5, a=3, m=8) for sd in (1, 4, 7)]
  batch = jax.tree_util.tree_map(lambda *x: np.stack(x), *sets)
  out = jax.vmap(lambda ms: iwocs(ms, tol=0.0))(batch)
  for i, ms in enumerate(sets):
    r = iwocs(ms, tol=0.0)
    np.testing.assert_array_equal(np.asarray(out.models[i]), np.asarray(r.models))
    np.testing.assert_array_equal(np.asarray(out.policy[i]), np.asarray(r.policy))
    np.testing.assert_allclose(np.asarray(out.q[i]), np.asarray(r.q), atol=1e-6)
    np.testing.assert_allclose(float(out.worst_case_value[i]),
                               float(r.worst_case_value), atol=1e-6)


@pytest.mark.slow
def test_iwocs_sup_criterion_and_jit(walk):
  models, res, _ = walk
  sup = iwocs(models, criterion="sup")
  assert bool(sup.converged)
  np.testing.assert_allclose(float(sup.worst_case_value), float(res.worst_case_value),
                             atol=ATOL)
  jitted = jax.jit(lambda ms: iwocs(ms))(models)
  np.testing.assert_array_equal(np.asarray(jitted.policy), np.asarray(res.policy))
  np.testing.assert_array_equal(np.asarray(jitted.models), np.asarray(res.models))
  np.testing.assert_allclose(float(jitted.worst_case_value), float(res.worst_case_value),
                             atol=1e-6)


# ----------------------------------------------- small random model sets
@pytest.mark.parametrize("seed", range(6))
def test_iwocs_and_hull_against_brute_force(seed):
  models = _random_set(seed)
  p, r, g, rho = _dense_np(models)
  bf_state, bf_rho = _brute_force(p, r, g, rho[0])
  res = iwocs(models, tol=0.0)
  hull = hull_robust_value_iteration(models)
  # the hull lower-bounds the finite-set max-min, at every state
  assert np.all(np.asarray(hull.values) <= bf_state + ATOL)
  # hull robust VI against a float64 NumPy hull VI
  np.testing.assert_allclose(np.asarray(hull.values), _np_hull_vi(p, r, g), atol=ATOL)
  # IWOCS's policy is feasible: its worst case cannot beat the max-min
  assert float(res.worst_case_value) <= bf_rho + ATOL
  # the hull value is below IWOCS's pessimistic value everywhere
  v_pess = np.max(np.asarray(res.q), axis=1)
  assert np.all(np.asarray(hull.values) <= v_pess + ATOL)
  # exact vmapped evaluation of the returned policy against float64 solves
  pi = np.asarray(res.policy)
  v_np = np.stack([_np_eval(p[i], r[i], g[i], pi) for i in range(p.shape[0])])
  np.testing.assert_allclose(np.asarray(worst_case_evaluation(models, res.policy)),
                             v_np, atol=ATOL)
  np.testing.assert_allclose(np.asarray(res.values), v_np.min(0), atol=ATOL)
  np.testing.assert_allclose(float(res.worst_case_value), np.min(v_np @ rho[0]), atol=ATOL)
  # error_bound: the best deterministic max-min (<= the optimum) exceeds the
  # returned values by at most the bound; the hull's bound against float64 VI.
  gap = bf_state - np.asarray(res.values, np.float64)
  assert np.all(gap <= float(res.error_bound)) and np.isfinite(float(res.error_bound))
  assert np.max(np.abs(np.asarray(hull.values, np.float64) - _np_hull_vi(p, r, g))) <= float(
      hull.error_bound)
  # the found models are distinct and the first is the initial model
  found = np.asarray(res.models[:int(res.num_models)])
  assert found[0] == 0 and len(set(found.tolist())) == found.size


def _np_hull_fixed_point(p, r, g):
  """float64 hull VI ``V <- max_a min_m r_m + gamma_m P_m V`` run until the
  sup-norm change is <= 1e-12 (so within ``gamma / (1 - gamma) * 1e-12``)."""
  v = np.zeros(r.shape[1])
  for _ in range(100_000):
    v_new = np.min(r + g[:, None, None] * (p @ v), axis=0).max(axis=1)
    if np.max(np.abs(v_new - v)) <= 1e-12:
      return v_new
    v = v_new
  raise AssertionError("float64 hull VI did not converge")


def test_hull_operator_steps_in_own_loop_bound_the_error():
  # different discounts and rewards per model: the modulus is the largest gamma
  models = _random_set(7)
  models = models.replace(
      discount=jnp.asarray([0.9, 0.7, 0.95, 0.8], jnp.float32),
      rewards=models.rewards * jnp.asarray([1.0, 0.5, 2.0, -1.0], jnp.float32)[:, None, None])
  p, r, g, _ = _dense_np(models)
  v_star = _np_hull_fixed_point(p, r, g)
  op, vi = HullOperator(models), value_iteration_solver("sup")
  step = jax.jit(vi.step)
  state = jax.jit(vi.init)(op, jnp.zeros(3, jnp.float32))
  for _ in range(40):
    state = step(op, state)
    err = np.max(np.abs(np.asarray(state.values, np.float64) - v_star))
    assert np.isfinite(float(state.error_bound)) and err <= float(state.error_bound)
  sol = jax.jit(vi.finalize)(op, state, jnp.float32(1e-3), op.valid())
  assert int(sol.iterations) == 40
  assert np.max(np.abs(np.asarray(sol.values, np.float64) - v_star)) <= float(sol.error_bound)
  # the public solver (the protocol's driver over the same operator)
  hull = hull_robust_value_iteration(models, tol=1e-3)  # float32 floor ~2e-4 here
  assert bool(hull.converged) and float(hull.error_bound) <= 1e-3
  assert np.max(np.abs(np.asarray(hull.values, np.float64) - v_star)) <= float(hull.error_bound)
  # the span rule is refused by name; a negative discount is invalid
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="span"):
    value_iteration_solver("span").init(op, jnp.zeros(3, jnp.float32))
  bad = HullOperator(models.replace(discount=jnp.asarray([0.9, -0.1, 0.9, 0.9])))
  assert not bool(bad.valid())


def test_list_of_models_equals_stacked():
  models = _random_set(3)
  mdps = [jax.tree_util.tree_map(lambda x: x[i], models) for i in range(4)]
  a, b = iwocs(models), iwocs(mdps)
  np.testing.assert_array_equal(np.asarray(a.policy), np.asarray(b.policy))
  np.testing.assert_allclose(np.asarray(a.q), np.asarray(b.q), atol=1e-6)


# ------------------------------------------------------------ bad input
def test_bad_input_names_the_field():
  models = _random_set(0)
  base = jax.tree_util.tree_map(lambda x: x[0], models)
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="models"):
    iwocs([])
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="probs"):
    iwocs(models.replace(probs=models.probs[:0]))
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="probs"):
    model_set(base, np.zeros((0, 3, 2, 3)))
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="probs"):
    model_set(base, np.full((2, 4, 2, 4), 0.25))
  other = jaxrl_dp.TabularMDP.from_dense(np.full((4, 2, 4), 0.25), np.zeros((4, 2)), 0.9)
  with pytest.raises(jaxrl_dp.InvalidMDPError, match=r"models\[1\]\.probs"):
    iwocs([base, other])
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="rewards"):
    iwocs(models.replace(rewards=jnp.zeros((4, 5, 2))))
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="tol"):
    iwocs(models, tol=-1e-3)
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="max_models"):
    iwocs(models, max_models=0)
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="initial_model"):
    iwocs(models, initial_model=4)
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="criterion"):
    iwocs(models, criterion="median")
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="probs"):
    hull_robust_value_iteration(models.replace(probs=models.probs * 2))
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="discount"):
    iwocs(models.replace(discount=jnp.ones(4)))
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="alphas"):
    windy_walk([0.1, 1.5])
  with pytest.raises(jaxrl_dp.InvalidMDPError, match="alphas"):
    windy_walk([])
