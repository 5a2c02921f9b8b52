"""suites.formats: QuantEcon (both forms, both directions), SciPy sparse, COO
and CSV models. References: the source arrays themselves (a converted model
must hold exactly them), NumPy float64 policy iteration, and QuantEcon's own
``DiscreteDP.solve`` where quantecon is installed."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import jaxrl_dp as jd
from jaxrl_dp import suites
from jaxrl_dp.core.errors import InvalidMDPError

from _reference import optimal_values

GAMMA = 0.9


def _model(seed=0, s=6, a=3):
  """Sparse-ish random ``P [S, A, S]``, ``R [S, A]`` and infeasible pairs."""
  rng = np.random.default_rng(seed)
  p = rng.random((s, a, s))
  p[p < 0.5] = 0.0
  p[..., 0] += 0.01
  p /= p.sum(-1, keepdims=True)
  r = rng.normal(size=(s, a))
  mask = np.ones((s, a), bool)
  mask[1, 2] = mask[4, 0] = False
  return p, r, mask


def _dense(mdp):
  d = mdp.to_dense()
  return np.asarray(d.probs, np.float64), np.asarray(d.rewards, np.float64)


def _qe():
  return pytest.importorskip(
      "quantecon", reason="quantecon is not installed (pip install quantecon: bench extra)")


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_quantecon_product_form_agrees_with_discretedp(layout):
  p, r, mask = _model()
  r_qe = np.where(mask, r, -np.inf)
  mdp = suites.from_quantecon(r_qe, p, GAMMA, layout=layout)
  assert mdp.is_sparse == (layout == "sparse")
  np.testing.assert_array_equal(np.asarray(mdp.action_mask), mask)
  probs, rewards = _dense(mdp)
  np.testing.assert_allclose(probs[mask], p[mask], rtol=1e-6)  # float32 storage
  np.testing.assert_allclose(rewards[mask], r[mask], rtol=1e-6)
  if layout == "sparse":
    return  # same arrays; one solve (below) per test run keeps compile time down
  sol = jd.linear_programming(mdp)  # host HiGHS: no compilation
  v_ref, _, pi_ref = optimal_values(p, r, GAMMA, mask)
  np.testing.assert_allclose(np.asarray(sol.values), v_ref, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(sol.policy), pi_ref)
  qe = _qe()
  res = qe.markov.DiscreteDP(r_qe, p, GAMMA).solve(method="policy_iteration")
  np.testing.assert_allclose(np.asarray(sol.values), res.v, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(sol.policy), res.sigma)


def test_quantecon_pair_form_sparse_and_round_trips():
  p, r, mask = _model(1)
  s_idx, a_idx = np.nonzero(mask)
  q = sp.csr_matrix(p[s_idx, a_idx])
  mdp = suites.from_quantecon(r[s_idx, a_idx], q, GAMMA, s_idx, a_idx)
  assert mdp.is_sparse and mdp.fan_out == max(q.getnnz(axis=1))
  np.testing.assert_array_equal(np.asarray(mdp.action_mask), mask)
  probs, rewards = _dense(mdp)
  np.testing.assert_allclose(probs[mask], p[mask], rtol=1e-6)
  np.testing.assert_allclose(rewards[mask], r[mask], rtol=1e-6)
  # to_quantecon: pair form (sparse Q from the stored entries) and product form.
  out = suites.to_quantecon(mdp, "sa_pair", sparse=True)
  np.testing.assert_array_equal(out["s_indices"], s_idx)
  np.testing.assert_array_equal(out["a_indices"], a_idx)
  np.testing.assert_allclose(out["Q"].toarray(), p[s_idx, a_idx], rtol=1e-6)
  np.testing.assert_allclose(out["R"], r[s_idx, a_idx], rtol=1e-6)
  assert out["beta"] == pytest.approx(GAMMA)
  prod = suites.to_quantecon(mdp, "product")
  assert np.isneginf(prod["R"][~mask]).all()
  np.testing.assert_allclose(prod["R"][mask], r[mask], rtol=1e-6)
  np.testing.assert_allclose(prod["Q"][mask], p[mask], rtol=1e-6)
  again = suites.from_quantecon(prod["R"], prod["Q"], prod["beta"])
  np.testing.assert_array_equal(np.asarray(again.action_mask), mask)
  np.testing.assert_allclose(_dense(again)[0][mask], p[mask], rtol=1e-6)
  # A DiscreteDP object directly, and its solution vs ours on the same model.
  qe = _qe()
  ddp = qe.markov.DiscreteDP(**out)
  res = ddp.solve(method="policy_iteration")
  v_ref, _, pi_ref = optimal_values(p, r, GAMMA, mask)
  np.testing.assert_allclose(res.v, v_ref, atol=1e-4)
  from_obj = suites.from_quantecon(ddp)
  np.testing.assert_array_equal(np.asarray(from_obj.action_mask), mask)
  np.testing.assert_allclose(_dense(from_obj)[0][mask], p[mask], rtol=1e-6)


def test_quantecon_refusals():
  p, r, _ = _model()
  with pytest.raises(InvalidMDPError, match=r"duplicate \(s_indices, a_indices\) pair"):
    suites.from_quantecon(np.zeros(3), np.full((3, 6), 1 / 6), GAMMA, [0, 1, 1], [0, 2, 2])
  r_none = r.copy()
  r_none[2] = -np.inf  # no feasible action in state 2
  with pytest.raises(InvalidMDPError, match=r"action_mask\[2, :\] has no valid action"):
    suites.from_quantecon(r_none, p, GAMMA)
  with pytest.raises(InvalidMDPError, match="form = 'x'"):
    suites.to_quantecon(jd.TabularMDP.from_dense(p, r, GAMMA), "x")


def test_minus_inf_reward_points_to_action_mask():
  p, r, _ = _model()
  r[2, 1] = -np.inf
  with pytest.raises(InvalidMDPError, match=r"rewards\[2, 1\] = -inf: .*action_mask\[2, 1\] "
                                            r"= False"):
    jd.TabularMDP.from_dense(p, r, GAMMA)


def test_scipy_sparse_coo_and_csv_equal_the_dense_model(tmp_path):
  p, r, mask = _model(2)
  s_count, a_count, _ = p.shape
  rng = np.random.default_rng(3)
  r_trans = rng.normal(size=p.shape) * (p > 0)  # r(s, a, s') on stored entries
  expected = np.einsum("sat,sat->sa", p, r_trans)
  # SciPy: one CSR matrix per action; masked rows emptied (ignored).
  mats = [sp.csr_matrix(np.where(mask[:, a, None], p[:, a], 0.0)) for a in range(a_count)]
  m_sp = suites.from_scipy_sparse(mats, r, GAMMA, action_mask=mask)
  assert m_sp.is_sparse and m_sp.fan_out == max(m.getnnz(axis=1).max() for m in mats)
  probs, rewards = _dense(m_sp)
  np.testing.assert_array_equal(np.asarray(m_sp.action_mask), mask)
  np.testing.assert_allclose(probs[mask], p[mask], rtol=1e-6)
  np.testing.assert_allclose(rewards[mask], r[mask], rtol=1e-6)
  m_tr = suites.from_scipy_sparse([sp.csr_matrix(p[:, a]) for a in range(a_count)],
                                  [sp.csr_matrix(r_trans[:, a]) for a in range(a_count)], GAMMA)
  np.testing.assert_allclose(np.asarray(m_tr.rewards), expected, rtol=1e-5, atol=1e-6)
  assert m_tr.transition_rewards is not None
  # COO triplets (masked pairs left out) with per-entry rewards.
  s, a, n = np.nonzero(p * mask[..., None])
  m_coo = suites.from_coo(s, a, n, p[s, a, n], r_trans[s, a, n], GAMMA)
  np.testing.assert_array_equal(np.asarray(m_coo.action_mask), mask)
  probs, rewards = _dense(m_coo)
  np.testing.assert_allclose(probs[mask], p[mask], rtol=1e-6)
  np.testing.assert_allclose(rewards[mask], expected[mask], rtol=1e-5, atol=1e-6)
  m_sa = suites.from_coo(s, a, n, p[s, a, n], r, GAMMA, layout="dense")
  np.testing.assert_allclose(np.asarray(m_sa.probs)[mask], p[mask], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(m_sa.rewards)[mask], r[mask], rtol=1e-6)
  # CSV (columns in another order) equals the COO model.
  path = tmp_path / "model.csv"
  lines = ["reward,state,action,next_state,probability"] + [
      f"{float(r_trans[i, j, k])!r},{i},{j},{k},{float(p[i, j, k])!r}" for i, j, k in zip(s, a, n)]
  path.write_text("\n".join(lines) + "\n")
  m_csv = suites.from_csv(path, GAMMA)
  for x, y in zip(jd.core.unstack(jd.stack([m_csv]))[0].__dict__.values(), m_coo.__dict__.values()):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_coo_and_csv_refusals(tmp_path):
  with pytest.raises(InvalidMDPError, match=r"entry\[1\]: duplicate .*also at entry\[0\]"):
    suites.from_coo([0, 0], [0, 0], [1, 1], [0.5, 0.5], [0, 0], GAMMA)
  with pytest.raises(InvalidMDPError, match=r"states\[1\] = 1.5: expected an integer"):
    suites.from_coo([0, 1.5], [0, 0], [0, 0], [1, 1], [0, 0], GAMMA)
  with pytest.raises(InvalidMDPError, match=r"probs\[0\] = -0.5"):
    suites.from_coo([0, 0], [0, 0], [0, 1], [-0.5, 1.5], [0, 0], GAMMA)
  header = "state,action,next_state,probability,reward\n"
  cases = [("0,0,0,1,0\n1,x,0,1,0\n", r"line 3, column action: 'x': expected an integer"),
           ("0,0,0,1,0\n1,0,0\n", r"line 3: 3 fields"),
           ("0,0,0,1,0\n\n1,0,1,1,0\n1,0,1,1,0\n", r"line 5: duplicate .*also at .*line 4"),
           ("0,0,0,1,0\n1,0,0,0.5,0\n", r"probs\[1, 0, :\] sums to 0.5"),
           ("0,0,0,1,0\n1,0,2,1,0\n", r"action_mask\[2, :\] has no valid action")]
  for body, msg in cases:
    path = tmp_path / "bad.csv"
    path.write_text(header + body)
    with pytest.raises(InvalidMDPError, match=msg):
      suites.from_csv(path, GAMMA)
  path.write_text("s,a,s2,p,r\n0,0,0,1,0\n")
  with pytest.raises(InvalidMDPError, match="line 1: header"):
    suites.from_csv(path, GAMMA)
