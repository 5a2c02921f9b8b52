"""The MDP model, validation, stacking and Bellman primitives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxrl_dp as jd
from jaxrl_dp.core import bellman
from _reference import optimal_values, random_dense, random_sparse, sparse_to_dense


def _dense(seed=0, s=6, a=3, gamma=0.9):
  rng = np.random.default_rng(seed)
  p, r = random_dense(rng, s, a)
  return p, r, jd.TabularMDP.from_dense(p, r, gamma)


def _sparse(seed=0, s=7, a=3, k=3, gamma=0.9):
  rng = np.random.default_rng(seed)
  ns, p, r = random_sparse(rng, s, a, k)
  return ns, p, r, jd.TabularMDP.from_sparse(ns, p, r, gamma)


# ------------------------------------------------------------- construction
def test_from_dense_fields_and_defaults():
  p, r, m = _dense()
  assert not m.is_sparse and m.num_states == 6 and m.num_actions == 3 and m.fan_out == 6
  assert m.probs.dtype == jnp.float32 and m.discount.shape == ()
  np.testing.assert_allclose(m.initial, np.full(6, 1 / 6), rtol=1e-6)
  assert m.action_mask.dtype == jnp.bool_ and bool(m.action_mask.all())


def test_per_transition_rewards_expectation():
  rng = np.random.default_rng(1)
  p, _ = random_dense(rng, 5, 2)
  rt = rng.normal(size=(5, 2, 5))
  m = jd.TabularMDP.from_dense(p, rt, 0.5)
  np.testing.assert_allclose(m.rewards, np.einsum("sat,sat->sa", p, rt), rtol=1e-5, atol=1e-6)
  assert m.transition_rewards.shape == (5, 2, 5)


def test_from_deterministic_terminal_appends_absorbing_state():
  ns = np.array([[1, -1], [0, 1]])
  r = np.array([[1.0, 5.0], [2.0, 3.0]])
  m = jd.TabularMDP.from_deterministic(ns, r)
  assert m.num_states == 3 and m.fan_out == 1
  np.testing.assert_array_equal(m.next_states[..., 0], [[1, 2], [0, 1], [2, 2]])
  np.testing.assert_array_equal(m.rewards[2], [0, 0])
  np.testing.assert_array_equal(m.initial, [1, 0, 0])
  # Two-step optimum by hand: from 0, action 1 ends with 5; action 0 then 1 gives 1 + 3 = 4.
  sol = jd.finite_horizon(m, 2)
  assert float(sol.values[0, 0]) == 5.0


def test_to_dense_to_sparse_roundtrip():
  ns, p, r, m = _sparse()
  d = m.to_dense()
  np.testing.assert_allclose(d.probs, sparse_to_dense(ns, p), atol=1e-6)
  v = jnp.asarray(np.random.default_rng(3).normal(size=7), jnp.float32)
  np.testing.assert_allclose(bellman.expected_next(d, v), bellman.expected_next(m, v), atol=1e-5)
  back = d.to_sparse()
  np.testing.assert_allclose(bellman.expected_next(back, v), bellman.expected_next(m, v), atol=1e-5)


# ----------------------------------------------------------------- primitives
def test_gather_and_expected_next_both_layouts():
  ns, p, r, m = _sparse(seed=4)
  v = np.random.default_rng(5).normal(size=7)
  vals, probs = bellman.gather_next(m, jnp.asarray(v, jnp.float32))
  np.testing.assert_allclose(vals, v[ns], rtol=1e-6)
  np.testing.assert_allclose(probs, p, rtol=1e-6)
  np.testing.assert_allclose(bellman.expected_next(m, jnp.asarray(v, jnp.float32)),
                             (p * v[ns]).sum(-1), atol=1e-5)
  pd, rd, md = _dense(seed=6)
  vd = np.random.default_rng(7).normal(size=6)
  vals, _ = bellman.gather_next(md, jnp.asarray(vd, jnp.float32))
  assert vals.shape == (6, 3, 6)
  np.testing.assert_allclose(bellman.expected_next(md, jnp.asarray(vd, jnp.float32)), pd @ vd, atol=1e-5)
  # Trailing axes (e.g. atoms) are carried.
  w = np.random.default_rng(8).normal(size=(6, 4))
  np.testing.assert_allclose(bellman.expected_next(md, jnp.asarray(w, jnp.float32)),
                             np.einsum("sat,tn->san", pd, w), atol=1e-5)


def test_masked_max_and_greedy_ignore_masked_actions():
  q = jnp.array([[5.0, 1.0, 2.0], [0.0, 9.0, 3.0]])
  mask = jnp.array([[False, True, True], [True, False, True]])
  np.testing.assert_array_equal(bellman.masked_max(q, mask), [2.0, 3.0])
  np.testing.assert_array_equal(bellman.greedy_policy(q, mask), [2, 2])
  np.testing.assert_allclose(bellman.uniform_policy(mask), [[0, .5, .5], [.5, 0, .5]])


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_policy_transitions_match_reference(layout):
  rng = np.random.default_rng(9)
  if layout == "dense":
    p, r, m = _dense(seed=9)
  else:
    ns, ps, r, m = _sparse(seed=9)
    p = sparse_to_dense(ns, ps)
  s, a = r.shape
  det = rng.integers(0, a, size=s)
  sto = rng.random((s, a)); sto /= sto.sum(1, keepdims=True)
  for pol, pi in ((det, np.eye(a)[det]), (sto, sto)):
    jpol = jnp.asarray(pol, jnp.int32 if pol.dtype.kind == "i" else jnp.float32)
    want = np.einsum("sa,sat->st", pi, p)
    np.testing.assert_allclose(bellman.policy_transition_matrix(m, jpol), want, atol=1e-5)
    np.testing.assert_allclose(bellman.policy_rewards(m, jpol), (pi * r).sum(1), atol=1e-5)
    v = rng.normal(size=s)
    np.testing.assert_allclose(bellman.policy_expected_next(m, jpol, jnp.asarray(v, jnp.float32)),
                               want @ v, atol=1e-5)
    d = rng.random(s); d /= d.sum()
    np.testing.assert_allclose(bellman.state_distribution_step(m, jpol, jnp.asarray(d, jnp.float32)),
                               d @ want, atol=1e-5)


def test_state_distribution_step_of_an_int_distribution():
  """An int ``d`` (a point mass, ``[1, 0, 0]``) on the sparse layout: the
  sum was accumulated in ``d``'s int dtype and the probabilities truncated
  to 0 (``[0, 0, 0]`` for ``[0, 0.25, 0.75]``). Reference: ``d @ P`` in
  float64 NumPy, both layouts."""
  ns = np.array([[[1, 2]], [[0, 0]], [[0, 0]]])
  ps = np.array([[[0.25, 0.75]], [[1.0, 0.0]], [[1.0, 0.0]]])
  sp = jd.TabularMDP.from_sparse(ns, ps, np.zeros((3, 1)), 0.9)
  want = np.array([1.0, 0.0, 0.0]) @ sparse_to_dense(ns, ps)[:, 0]
  for m in (sp, sp.to_dense()):
    got = bellman.state_distribution_step(m, jnp.array([0, 0, 0]), jnp.array([1, 0, 0]))
    assert jnp.issubdtype(got.dtype, jnp.floating)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-7)


# ------------------------------------------------------------------- stacking
def test_stack_pads_without_changing_solutions():
  rng = np.random.default_rng(10)
  mdps, refs = [], []
  for s, a in ((4, 2), (7, 3), (5, 1)):
    p, r = random_dense(rng, s, a)
    mdps.append(jd.TabularMDP.from_dense(p, r, 0.8))
    refs.append(np.asarray(mdps[-1].probs, np.float64))  # as stored
  b = jd.stack(mdps)
  assert b.probs.shape == (3, 7, 3, 7) and b.discount.shape == (3,)
  jd.validate_mdp(b)
  # Padded states are never reached from real ones and padded actions are
  # masked; a padded state is a copy of the member's state 0.
  assert not bool(b.action_mask[0, 0, 2]) and not bool(b.action_mask[0, 5, 2])
  assert bool(b.action_mask[0, 5, 0]) and bool(b.action_mask[0, 5, 1])
  assert float(b.probs[0, :4, :2, 4:].sum()) == 0.0
  assert float(b.initial[0, 4:].sum()) == 0.0
  for f in ("probs", "rewards", "action_mask"):
    leaf = np.asarray(getattr(b, f)[0])
    np.testing.assert_array_equal(leaf[4:], np.broadcast_to(leaf[0], leaf[4:].shape), err_msg=f)
  np.testing.assert_array_equal(np.asarray(b.probs[0, :4, :2, :4]), np.asarray(mdps[0].probs))
  # Solved as a batch, each member's values on its own states are V* of the
  # original (float64 NumPy policy iteration) within the certified bound, and
  # the padded states repeat state 0's value.
  sols = jax.vmap(lambda m: jd.value_iteration(m, tol=1e-4))(b)
  for i, (p, m) in enumerate(zip(refs, mdps)):
    s = p.shape[0]
    v_ref, _, pi_ref = optimal_values(p, np.asarray(m.rewards, np.float64), 0.8)
    err = np.abs(np.asarray(sols.values[i, :s], np.float64) - v_ref).max()
    assert bool(sols.converged[i]) and err <= float(sols.error_bound[i]) <= 1e-4
    np.testing.assert_array_equal(np.asarray(sols.policy[i, :s]), pi_ref)
    np.testing.assert_allclose(np.asarray(sols.values[i, s:]), float(sols.values[i, 0]),
                               rtol=1e-6)


def test_stack_sparse_and_errors():
  _, _, _, m1 = _sparse(seed=1, s=5, k=2)
  _, _, _, m2 = _sparse(seed=2, s=7, k=3)
  b = jd.stack([m1, m2])
  assert b.next_states.shape == (2, 7, 3, 3)
  jd.validate_mdp(b)
  with pytest.raises(jd.InvalidMDPError, match="empty"):
    jd.stack([])
  with pytest.raises(jd.InvalidMDPError, match="layout"):
    jd.stack([m1, _dense()[2]])


# ----------------------------------------------------------------- bad input
def _kw():
  rng = np.random.default_rng(0)
  p, r = random_dense(rng, 4, 2)
  return dict(probs=p, rewards=r, discount=0.9)


@pytest.mark.parametrize("mutate, field", [
    (lambda k: k.update(probs=k["probs"][:, :, :3]), "probs"),
    (lambda k: k.update(probs=k["probs"][0]), "probs"),
    (lambda k: k.update(rewards=k["rewards"][:3]), "probs"),
    (lambda k: k["probs"].__setitem__((1, 1, 2), np.nan), r"probs\[1, 1, 2\]"),
    (lambda k: k["probs"].__setitem__((2, 0, 1), -0.1), r"probs\[2, 0, 1\]"),
    (lambda k: k["probs"].__setitem__((3, 1, 0), k["probs"][3, 1, 0] + 0.2), r"probs\[3, 1, :\] sums to"),
    (lambda k: k["rewards"].__setitem__((0, 1), np.inf), r"rewards\[0, 1\]"),
    (lambda k: k.update(discount=1.5), "discount"),
    (lambda k: k.update(discount=-0.1), "discount"),
    (lambda k: k.update(discount=np.nan), "discount"),
    (lambda k: k.update(probs=np.zeros((0, 2, 0)), rewards=np.zeros((0, 2))), "empty"),
])
def test_bad_dense_input(mutate, field):
  kw = _kw()
  mutate(kw)
  with pytest.raises(jd.InvalidMDPError, match=field):
    jd.TabularMDP.from_dense(kw["probs"], kw["rewards"], kw["discount"])


def test_bad_sparse_and_other_fields():
  ns, p, r, _ = _sparse()
  bad = ns.copy(); bad[2, 1, 0] = 7
  with pytest.raises(jd.InvalidMDPError, match=r"next_states\[2, 1, 0\] = 7"):
    jd.TabularMDP.from_sparse(bad, p, r, 0.9)
  with pytest.raises(jd.InvalidMDPError, match="next_states"):
    jd.TabularMDP.from_sparse(ns[:, :, :2], p, r, 0.9)
  with pytest.raises(jd.InvalidMDPError, match=r"initial"):
    jd.TabularMDP.from_sparse(ns, p, r, 0.9, initial=np.full(7, 0.2))
  mask = np.ones((7, 3), bool); mask[4] = False
  with pytest.raises(jd.InvalidMDPError, match=r"action_mask\[4, :\] has no valid action"):
    jd.TabularMDP.from_sparse(ns, p, r, 0.9, action_mask=mask)
  with pytest.raises(jd.InvalidMDPError, match=r"next_state\[0, 1\] = -2"):
    jd.TabularMDP.from_deterministic(np.array([[0, -2]]), np.zeros((1, 2)))
  with pytest.raises(ValueError):  # InvalidMDPError is a ValueError
    jd.TabularMDP.from_sparse(ns.astype(float), p, r, 0.9)


def test_discount_one_rejected_for_infinite_horizon_only():
  p, r, _ = _dense()
  m = jd.TabularMDP.from_dense(p, r, 1.0)
  with pytest.raises(jd.InvalidMDPError, match="finite horizon"):
    jd.value_iteration(m)
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    jd.policy_evaluation(m, jnp.zeros(6, jnp.int32))
  jd.finite_horizon(m, 3)  # legal


def test_bad_policy_input():
  p, r, m = _dense()
  with pytest.raises(jd.InvalidMDPError, match=r"policy\[2\] = 3"):
    jd.policy_evaluation(m, jnp.array([0, 1, 3, 0, 0, 0]))
  with pytest.raises(jd.InvalidMDPError, match="shape"):
    jd.policy_evaluation(m, jnp.zeros(5, jnp.int32))
  sto = np.full((6, 3), 1 / 3); sto[1] = [0.5, 0.5, 0.5]
  with pytest.raises(jd.InvalidMDPError, match=r"policy\[1, :\] sums to"):
    jd.policy_evaluation(m, jnp.asarray(sto, jnp.float32))
  with pytest.raises(jd.InvalidMDPError, match="horizon"):
    jd.finite_horizon(m, 0)
  with pytest.raises(jd.InvalidMDPError, match="max_iters"):
    jd.value_iteration(jd.TabularMDP.from_dense(p, r, 0.9), max_iters=0)
  with pytest.raises(jd.InvalidMDPError, match="one MDP"):
    jd.value_iteration(jd.stack([m, m]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_mutations_are_rejected_with_field_and_index(data):
  """Mutate one entry of a valid MDP into an invalid one; the error names it."""
  rng = np.random.default_rng(data.draw(st.integers(0, 10_000)))
  s, a, k = 5, 3, 2
  ns, p, r = random_sparse(rng, s, a, k)
  i, j, t = (data.draw(st.integers(0, s - 1)), data.draw(st.integers(0, a - 1)),
             data.draw(st.integers(0, k - 1)))
  kind = data.draw(st.sampled_from(["neg", "nan", "inf_r", "index", "sum"]))
  if kind == "neg":
    p[i, j, t] = -data.draw(st.floats(1e-3, 10))
    expect = rf"probs\[{i}, {j}, {t}\]"
  elif kind == "nan":
    p[i, j, t] = np.nan
    expect = rf"probs\[{i}, {j}, {t}\]"
  elif kind == "inf_r":
    r[i, j] = data.draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    expect = rf"rewards\[{i}, {j}\]"
  elif kind == "index":
    ns[i, j, t] = data.draw(st.sampled_from([-3, -1, s, s + 10]))
    expect = rf"next_states\[{i}, {j}, {t}\]"
  else:
    p[i, j, t] += data.draw(st.floats(1e-3, 1.0))
    expect = rf"probs\[{i}, {j}, :\] sums to"
  with pytest.raises(jd.InvalidMDPError, match=expect):
    jd.TabularMDP.from_sparse(ns, p, r, 0.9)


def test_stack_keeps_action_zero_valid_on_padded_states():
  """Where state 0 masks action 0, the padded states have state 0's actions
  with action 0 and its first valid action trading places: a policy padded
  with zeros is still valid (and evaluates on the padded states as that
  action of state 0), and the count of valid actions is state 0's.
  Reference: float64 NumPy linear solves of the original MDP."""
  rng = np.random.default_rng(3)
  mdps, refs = [], []
  for s in (3, 5):
    p, r = random_dense(rng, s, 2)
    mask = np.ones((s, 2), bool)
    mask[0, 0] = s != 3  # the small member masks action 0 in state 0
    mdps.append(jd.TabularMDP.from_dense(p, r, 0.9, action_mask=mask))
    refs.append((np.asarray(mdps[-1].probs, np.float64), np.asarray(mdps[-1].rewards, np.float64)))
  b = jd.stack(mdps)
  np.testing.assert_array_equal(np.asarray(b.action_mask[0, 3:]), [[True, False]] * 2)
  np.testing.assert_array_equal(np.asarray(b.probs[0, 3:, 0]), np.asarray(b.probs[0, [0, 0], 1]))
  pol = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 0, 1]])
  one = jd.policy_evaluation(jd.unstack(b)[0], jnp.asarray(pol[0]), tol=1e-6)
  p, r = refs[0]
  v = np.linalg.solve(np.eye(3) - 0.9 * p[np.arange(3), pol[0, :3]], r[np.arange(3), pol[0, :3]])
  np.testing.assert_allclose(np.asarray(one.values[:3]), v, atol=1e-4)
  # padded states: action 0 = state 0's action 1, then state 0's successors
  np.testing.assert_allclose(np.asarray(one.values[3:]), v[0], atol=1e-4)
