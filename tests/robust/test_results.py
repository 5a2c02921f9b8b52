"""Robust result vocabulary, solver metadata and honest error bounds
(issue 10, sections 1.9, 2 and 3).

* every robust infinite-horizon solver returns ``values, q, policy (int32
  [S]), iterations, residual, converged, error_bound`` (+ ``worst_probs``);
  the s-rectangular solver adds ``policy_probs [S, A]``;
* ``@solver`` metadata on every public robust solver;
* ``error_bound`` holds in float32, converged or not (max_iters run out, tol
  below the rounding floor at gamma 0.99), against independent float64
  references: NumPy robust VI with closed-form inner problems
  (``np_reference`` of ``test_robust_vi``) and, for the s-rectangular
  solver, NumPy VI with an exact breakpoint backup whose fixed point is
  checked by one backup of per-state LPs;
* a traced discount outside ``[0, 1)`` gives ``converged = False`` and
  ``error_bound = inf``.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy.optimize import linprog

import jaxrl_dp as jd
from jaxrl_dp import robust as R
from jaxrl_dp.core.solver_info import solver_info
from robust.test_robust_vi import float32_exact, mdp_arrays, np_fixed_point, np_reference

S, A, K = 6, 3, 3


def arrays(seed, gamma):
  """Sparse, slot rewards, stored exactly in float32 (``float32_exact``): the
  float32 MDP is the MDP the float64 references read."""
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(S, size=K, replace=False) for _ in range(A)] for _ in range(S)])
  p = rng.random((S, A, K)) + 0.05
  p /= p.sum(-1, keepdims=True)
  tr = rng.normal(size=(S, A, K)) + 1.0
  p, tr = float32_exact(p, tr)
  return ns, p, tr, gamma


def mdp_of(arr, dtype=None):
  ns, p, tr, gamma = arr
  return jd.TabularMDP.from_sparse(ns, p, tr, gamma, dtype=dtype)


SOLVERS = {
    "vi": lambda m, **kw: R.robust_value_iteration(m, R.l1_ball(0.3), **kw),
    "vi_kl_penalty": lambda m, **kw: R.robust_value_iteration(m, R.kl_penalty(0.5), **kw),
    "mpi": lambda m, **kw: R.robust_modified_policy_iteration(m, R.tv_penalty(0.7), num_sweeps=4, **kw),
    "eval": lambda m, **kw: R.robust_policy_evaluation(m, jnp.arange(S, dtype=jnp.int32) % A,
                                                       R.l1_ball(0.3), **kw),
    "s_rect": lambda m, **kw: R.s_rectangular_l1_value_iteration(m, 0.4, **kw),
}


#: The problems SOLVERS solve, for the float64 references: (set, policy) of
#: ``np_reference`` (MPI's fixed point is the robust optimum), or the budget.
REFERENCE = {"vi": (R.l1_ball(0.3), None), "vi_kl_penalty": (R.kl_penalty(0.5), None),
             "mpi": (R.tv_penalty(0.7), None), "eval": (R.l1_ball(0.3), np.arange(S) % A),
             "s_rect": 0.4}


# ------------------------------------------ s-rectangular L1 references
def _l1_curve(w, p):
  """The worst value ``g(xi)`` of ``E_P[w]`` over the L1 ball of radius xi
  around p (nominal support): ``xi / 2`` of mass moves from the highest-w
  slots to the cheapest one, so g is piecewise linear with knots ``(xi_k,
  g_k)``, xi_k twice the cumulative mass of the k highest donors; the last
  knot is the floor ``w_min`` (all mass moved)."""
  live = np.flatnonzero(p > 0)
  j = live[np.argmin(w[live])]
  donors = sorted((i for i in live if i != j), key=lambda i: -w[i])
  xi, g = [0.0], [float(p[live] @ w[live])]
  for i in donors:
    xi.append(xi[-1] + 2 * p[i])
    g.append(g[-1] - p[i] * (w[i] - w[j]))
  return np.array(xi), np.array(g)


def _budget_for(curve, u):
  """The least radius xi with g(xi) <= u (u at or above the floor)."""
  xi, g = curve
  k = int(np.argmax(g <= u))
  if k == 0:
    return 0.0
  return xi[k - 1] + (g[k - 1] - u) / (g[k - 1] - g[k]) * (xi[k] - xi[k - 1])


def np_s_rect_backup(ns, p, tr, gamma, v, kappa, mask):
  """s-rectangular L1 backup with slot rewards, exactly: by the minimax
  theorem ``(T V)(s) = min { max_a g_a(xi_a) : xi >= 0, sum_a xi_a <= kappa
  }``, i.e. the least level u whose budget ``h(u) = sum_a g_a^{-1}(u)`` is at
  most kappa; h is piecewise linear between the knot values of the curves,
  so u is found on those knots and interpolated on one piece (no bisection)."""
  out = np.zeros(p.shape[0])
  for s in range(p.shape[0]):
    curves = [_l1_curve(tr[s, a] + gamma * v[ns[s, a]], p[s, a])
              for a in range(p.shape[1]) if mask[s, a]]
    lo = max(c[1][-1] for c in curves)                  # every floor reached
    knots = np.unique([lo] + [x for c in curves for x in c[1] if x > lo])
    h = np.array([sum(_budget_for(c, u) for c in curves) for u in knots])
    if h[0] <= kappa:
      out[s] = lo
      continue
    i = int(np.argmax(h <= kappa))                      # h(max_a g_a(0)) = 0
    out[s] = knots[i - 1] + (h[i - 1] - kappa) / (h[i - 1] - h[i]) * (knots[i] - knots[i - 1])
  return out


def lp_s_rect_backup(ns, p, tr, gamma, v, kappa, mask, support="nominal"):
  """The same backup by one LP per state (the adversary's side of the
  minimax): ``min z`` over ``(z, P [A, K], t [A, K])``, ``z >= E_{P_a}[r_a +
  gamma V]`` for every valid a, ``t >= |P - P0|``, ``sum t <= kappa``, P in
  the simplex on the nominal support (every slot with ``support="all"``)."""
  s_n, a_n, k = p.shape
  n = 1 + 2 * a_n * k
  out = np.zeros(s_n)
  for s in range(s_n):
    c = np.zeros(n)
    c[0] = 1.0
    a_ub, b_ub, a_eq, bounds = [], [], [], [(None, None)]
    for a in range(a_n):
      o = 1 + a * k
      keep = np.ones(k, bool) if support == "all" else p[s, a] > 0
      if mask[s, a]:
        row = np.zeros(n)
        row[0] = -1.0
        row[o:o + k] = np.where(keep, tr[s, a] + gamma * v[ns[s, a]], 0.0)
        a_ub.append(row)
        b_ub.append(0.0)
      for i in range(k):
        for sign in (1.0, -1.0):
          row = np.zeros(n)
          row[o + i], row[o + a_n * k + i] = sign, -1.0
          a_ub.append(row)
          b_ub.append(sign * p[s, a, i])
      eq = np.zeros(n)
      eq[o:o + k] = 1.0
      a_eq.append(eq)
      bounds += [(0, None if keep[i] else 0) for i in range(k)]
    bounds += [(0, None)] * (a_n * k)
    row = np.zeros(n)
    row[1 + a_n * k:] = np.repeat(mask[s], k)
    a_ub.append(row)
    b_ub.append(kappa)
    res = linprog(c, A_ub=np.array(a_ub), b_ub=b_ub, A_eq=np.array(a_eq), b_eq=np.ones(a_n),
                  bounds=bounds, method="highs")
    assert res.status == 0, res.message
    out[s] = res.fun
  return out


def np_s_rect_vi(ns, p, tr, gamma, mask, kappa, rtol=1e-13, max_iters=200_000):
  """float64 VI with :func:`np_s_rect_backup` from zero to a residual below
  ``rtol * (1 + max|V|)``; ``(V, bound)`` as :func:`np_robust_vi`."""
  return np_fixed_point(lambda v: np_s_rect_backup(ns, p, tr, gamma, v, kappa, mask),
                        p.shape[0], gamma, np.abs(tr).max(), rtol, max_iters,
                        "reference s-rectangular VI")


@pytest.mark.slow
def test_result_fields_and_policy_convention():
  m = mdp_of(arrays(0, 0.8))
  core = ("values", "q", "iterations", "residual", "converged", "error_bound", "worst_probs")
  for name, run in SOLVERS.items():
    out = run(m, tol=1e-3)
    for f in core:
      assert hasattr(out, f), (name, f)
    assert out.error_bound.shape == () and out.converged.dtype == jnp.bool_
    if name != "eval":
      assert out.policy.dtype == jnp.int32 and out.policy.shape == (S,), name
  s_rect = SOLVERS["s_rect"](m, tol=1e-3)
  assert isinstance(s_rect, R.SRectangularSolution)
  assert s_rect.policy_probs.shape == (S, A)
  np.testing.assert_array_equal(s_rect.policy, np.argmax(np.asarray(s_rect.policy_probs), 1))
  hull = R.hull_robust_value_iteration(R.model_set(m.replace(transition_rewards=None),
                                                   jnp.stack([m.probs, m.probs[:, ::-1]])),
                                       tol=1e-3)
  assert hull.policy.dtype == jnp.int32 and hull.error_bound.shape == ()


def test_solver_metadata():
  expect = {
      # reverse mode: the implicit robust fixed point (jaxrl_dp.robust.implicit).
      R.robust_value_iteration: (True, "control", True),
      R.robust_modified_policy_iteration: (True, "control", True),
      R.robust_policy_evaluation: (True, "evaluation", True),
      R.robust_finite_horizon: (False, "finite_horizon", True),
      R.s_rectangular_l1_value_iteration: (True, "control", True),
      R.hull_robust_value_iteration: (True, "control", False),
      R.iwocs: (True, "control", False),
  }
  for fn, (inf_h, kind, reverse) in expect.items():
    info = solver_info(fn)
    assert info is not None, fn.__name__
    assert (info.infinite_horizon, info.kind, info.reverse_mode) == (inf_h, kind, reverse)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SOLVERS))
def test_error_bound_holds_in_float32(name):
  run = SOLVERS[name]
  cases = [(arrays(1, 0.9), dict(tol=1e-4)),                 # converges
           (arrays(2, 0.9), dict(tol=1e-6, max_iters=4)),    # max_iters runs out
           (arrays(3, 0.99), dict(tol=1e-7))]                # tol below the float32 floor
  for arr, kw in cases:
    m = mdp_of(arr, dtype=jnp.float32)
    if name == "s_rect":
      ns, p, tr, gamma, mask = mdp_arrays(m)
      budget = float(np.float32(REFERENCE[name]))
      ref, ref_bound = np_s_rect_vi(ns, p, tr, gamma, mask, budget)
      np.testing.assert_allclose(lp_s_rect_backup(ns, p, tr, gamma, ref, budget, mask), ref,
                                 rtol=0, atol=1e-9 * (1 + np.abs(ref).max()))
    else:
      ref, ref_bound = np_reference(m, *REFERENCE[name])
    out = run(m, **kw)
    err = np.max(np.abs(np.asarray(out.values, np.float64) - ref))
    bound = float(out.error_bound)
    assert np.isfinite(bound) and err + ref_bound <= bound, (name, kw, err, bound)
    if bool(out.converged):
      assert bound <= kw["tol"]
    if kw.get("max_iters") == 4:
      assert int(out.iterations) == 4 and not bool(out.converged)
    if kw["tol"] == 1e-7:
      assert not bool(out.converged)          # cannot be certified in float32


@pytest.mark.parametrize("name", list(SOLVERS))
def test_traced_invalid_discount_never_converges(name):
  run = SOLVERS[name]
  m = mdp_of(arrays(4, 0.5))

  @jax.jit
  def solve(d):
    out = run(m.replace(discount=d), tol=1e-3, max_iters=50)
    return out.converged, out.error_bound

  for d in (1.0, 1.5, -0.2, float("nan")):
    conv, bound = solve(jnp.float32(d))
    assert not bool(conv) and np.isinf(float(bound)), (name, d)
  conv, bound = solve(jnp.float32(0.5))
  assert bool(conv) and float(bound) <= 1e-3


def test_option_checks_at_the_boundary():
  """v0 / terminal_values as lists (accepted) or of a wrong shape / complex /
  non-finite (named errors), counts and tolerances through core.options, and
  policies checked on their original values (no int32 wrap)."""
  m = mdp_of(arrays(5, 0.8))
  u = R.l1_ball(0.2)
  start = [0.5] * S
  a = R.robust_value_iteration(m, u, tol=1e-3, v0=start)
  b = R.robust_value_iteration(m, u, tol=1e-3, v0=jnp.full(S, 0.5))
  np.testing.assert_array_equal(a.values, b.values)
  R.robust_modified_policy_iteration(m, u, tol=1e-3, v0=start)
  R.s_rectangular_l1_value_iteration(m, 0.2, tol=1e-3, v0=start)
  fh = R.robust_finite_horizon(m.replace(discount=jnp.float32(1.0)), u, horizon=2,
                               terminal_values=start)
  np.testing.assert_array_equal(fh.values[-1], np.full(S, 0.5, np.float32))
  calls = {
      "vi": lambda **kw: R.robust_value_iteration(m, u, **kw),
      "mpi": lambda **kw: R.robust_modified_policy_iteration(m, u, **kw),
      "eval": lambda **kw: R.robust_policy_evaluation(m, np.zeros(S, int), u, **kw),
      "s_rect": lambda **kw: R.s_rectangular_l1_value_iteration(m, 0.2, **kw),
  }
  for name, call in calls.items():
    for bad in ([0.0] * (S + 1), np.zeros(S, complex), [np.inf] + [0.0] * (S - 1)):
      with pytest.raises(jd.InvalidMDPError, match="v0"):
        call(v0=bad)
    with pytest.raises(jd.InvalidMDPError, match="max_iters"):
      call(max_iters=2**31)
    for bad_tol in (None, float("nan"), -1.0, "1e-3"):
      with pytest.raises(jd.InvalidMDPError, match="tol"):
        call(tol=bad_tol)
  with pytest.raises(jd.InvalidMDPError, match="terminal_values"):
    R.robust_finite_horizon(m, u, horizon=2, terminal_values=[0.0] * (S - 1))
  with pytest.raises(jd.InvalidMDPError, match="horizon"):
    R.robust_finite_horizon(m, u, horizon=2.0)
  with pytest.raises(jd.InvalidMDPError, match="policy"):
    R.robust_policy_evaluation(m, np.array([0, 1, 2**32, 0, 1, 0], np.int64), u)
  with pytest.raises(jd.InvalidMDPError, match="cast it with"):
    R.robust_policy_evaluation(m, np.zeros(S), u)
  with pytest.raises(jd.InvalidMDPError, match="num_steps"):
    R.s_rectangular_l1_value_iteration(m, 0.2, num_steps=0)
