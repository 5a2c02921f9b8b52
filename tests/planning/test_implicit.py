"""Implicit gradients through fixed points (issue 12, item 2): value iteration and
the soft solvers against central finite differences and the closed form (float64,
dense and sparse), forward mode, the initial distribution, ties, memory
independent of the iteration count, jit / vmap, the Neumann adjoint, and the
ready wirings for other solvers (policy iteration, iterative evaluation)."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.planning import (ImplicitAdjoint, implicit_greedy_solution,
                               implicit_policy_values)
from _reference import optimal_values, random_dense, random_sparse, sparse_to_dense


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _mdp(layout, seed=0, s=6, a=3, k=3, gamma=0.9):
  rng = np.random.default_rng(seed)
  if layout == "dense":
    p, r = random_dense(rng, s, a)
    return jd.TabularMDP.from_dense(p, r, gamma), p, r
  ns, ps, r = random_sparse(rng, s, a, k)
  return jd.TabularMDP.from_sparse(ns, ps, r, gamma), sparse_to_dense(ns, ps), r


def _check_fd(f, params, seed=0, h=1e-6, rtol=1e-6):
  """Gradients of ``f(params)`` (a dict of arrays): one compiled ``grad`` and
  one compiled ``jvp``; per input, ``grad . E`` vs a central difference along
  a random ``E``; the joint ``jvp`` vs ``grad . E``. Returns the gradients."""
  params = {k: jnp.asarray(v) for k, v in params.items()}
  rng = np.random.default_rng(seed)
  dirs = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}
  g = jax.jit(jax.grad(f))(params)
  jv = jax.jit(lambda x, e: jax.jvp(f, (x,), (e,))[1])(params, dirs)
  total = 0.0
  for k in params:
    up = dict(params, **{k: params[k] + h * dirs[k]})
    down = dict(params, **{k: params[k] - h * dirs[k]})
    fd = float((f(up) - f(down)) / (2 * h))
    gd = float(jnp.sum(g[k] * dirs[k]))
    assert abs(gd - fd) <= rtol * max(abs(fd), 1e-3), (k, gd, fd)
    total += gd
  assert abs(float(jv) - total) <= 1e-9 * max(abs(total), 1.0)
  return g


VI_TOL = 1e-12


# ------------------------------------------------------------ value iteration
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("stop", ["sup", "span"])
def test_vi_reward_gradient_is_the_closed_form(layout, stop):
  m, p, _ = _mdp(layout)
  sol = jd.value_iteration(m, tol=VI_TOL, stop=stop)
  pol = np.asarray(sol.policy)
  w = np.linspace(1.0, 2.0, 6)
  g = jax.grad(lambda r: jd.value_iteration(m.replace(rewards=r), tol=VI_TOL,
                                            stop=stop).values @ w)(m.rewards)
  # dV*/dr(s, a) = [(I - gamma P_pi)^{-1}]_{:, s} 1[a = pi(s)].
  inv = np.linalg.inv(np.eye(6) - 0.9 * p[np.arange(6), pol])
  want = np.zeros((6, 3))
  want[np.arange(6), pol] = w @ inv
  np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_vi_gradients_match_finite_differences(layout):
  m, _, _ = _mdp(layout, seed=1)
  w = jnp.linspace(-1.0, 2.0, 6)
  vi = functools.partial(jd.value_iteration, tol=VI_TOL)

  def f(x):
    sol = vi(m.replace(rewards=x["r"], probs=x["p"], discount=x["d"]))
    # q carries gradients too (r + gamma P V at the differentiable V).
    return sol.values @ w + 0.1 * jnp.sum(sol.q ** 2)

  g = _check_fd(f, {"r": m.rewards, "p": m.probs, "d": m.discount}, 1)
  assert g["p"].shape == m.probs.shape  # sparse: on the stored entries [S, A, K]


def test_vi_initial_distribution_gradient():
  m, p, _ = _mdp("dense", seed=2)
  sol = jd.value_iteration(m, tol=VI_TOL)

  def objective(init, r):
    return init @ jd.value_iteration(m.replace(rewards=r, initial=init), tol=VI_TOL).values

  g_init, g_r = jax.grad(objective, argnums=(0, 1))(m.initial, m.rewards)
  np.testing.assert_allclose(g_init, sol.values, rtol=1e-12)
  # d (mu V*) / d r = the discounted state-action occupancy of the optimal policy.
  pol = np.asarray(sol.policy)
  d = np.asarray(m.initial) @ np.linalg.inv(np.eye(6) - 0.9 * p[np.arange(6), pol])
  want = np.zeros((6, 3))
  want[np.arange(6), pol] = d
  np.testing.assert_allclose(g_r, want, rtol=1e-9, atol=1e-12)


def test_vi_ties_return_the_first_maximizer_gradient():
  m, p, r = _mdp("dense", seed=3)
  # Action 2 duplicates action 0: every state where 0 or 2 is optimal is a tie.
  m = m.replace(probs=m.probs.at[:, 2].set(m.probs[:, 0]),
                rewards=m.rewards.at[:, 2].set(m.rewards[:, 0]))
  p, r = np.asarray(m.probs, np.float64), np.asarray(m.rewards, np.float64)
  _, q_ref, _ = optimal_values(p, r, 0.9)
  pol = np.argmax(q_ref, axis=1)          # the first maximizer (q[:, 2] == q[:, 0] bitwise)
  assert np.isin(pol, (0,)).any()          # some state is a tie between actions 0 and 2
  sol = jd.value_iteration(m, tol=VI_TOL)
  np.testing.assert_array_equal(np.asarray(sol.policy), pol)
  g = jax.grad(lambda r: jd.value_iteration(m.replace(rewards=r), tol=VI_TOL).values.sum())(m.rewards)
  # dV*/dr(s, a) = [1^T (I - gamma P_pi)^{-1}]_s 1[a = pi(s)], pi the first maximizer.
  inv = np.linalg.inv(np.eye(6) - 0.9 * p[np.arange(6), pol])
  want = np.zeros((6, 3))
  want[np.arange(6), pol] = np.ones(6) @ inv
  np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-10)


# ------------------------------------- the value-iteration family by name
FAMILY = {
    "anderson_sup": lambda m, **k: jd.anderson_value_iteration(m, tol=VI_TOL, **k),
    "anderson_span": lambda m, **k: jd.anderson_value_iteration(m, tol=VI_TOL, stop="span",
                                                                **k),
    "gauss_seidel": lambda m, **k: jd.gauss_seidel_value_iteration(m, tol=VI_TOL, **k),
    "sor_ranked": lambda m, **k: jd.gauss_seidel_value_iteration(
        m, tol=VI_TOL, omega=1.3, blocks=3, ranking=0.5, **k),
    "anchored_span": lambda m, **k: jd.anchored_value_iteration(m, tol=VI_TOL, stop="span",
                                                                **k),
    "speculative": lambda m, **k: jd.speculative_value_iteration(m, tol=VI_TOL, **k),
}


# sor_ranked and anderson_span: slow (5 and 3.5 s); their siblings gauss_seidel and anderson_sup
# (the same solvers, other options) stay in the default run.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in ("sor_ranked", "anderson_span") else n
    for n in sorted(FAMILY)])
def test_value_iteration_family_reverse_mode_by_name(name):
  """Each method called by name (not only through ``solve``) has reverse mode:
  d (w V*) / d r against the closed form ``w (I - gamma P_pi*)^{-1}`` on the
  optimal actions (float64 reference policy), and (Anderson) the Neumann
  adjoint gives the same gradient."""
  run = FAMILY[name]
  m, p, r = _mdp("sparse" if name.startswith(("sor", "anchored")) else "dense", seed=4)
  _, _, pol = optimal_values(p, r, 0.9)
  w = np.linspace(1.0, 2.0, 6)
  inv = np.linalg.inv(np.eye(6) - 0.9 * p[np.arange(6), pol])
  want = np.zeros((6, 3))
  want[np.arange(6), pol] = w @ inv
  adjoints = (None, ImplicitAdjoint(method="neumann")) if name == "anderson_sup" else (None,)
  for adjoint in adjoints:
    g = jax.grad(lambda rew: run(m.replace(rewards=rew), adjoint=adjoint).values @ w)(m.rewards)
    np.testing.assert_allclose(g, want, rtol=1e-8, atol=1e-9, err_msg=str(adjoint))


@pytest.mark.parametrize("name", [pytest.param("anderson_sup", marks=pytest.mark.slow),
                                  "gauss_seidel"])
def test_value_iteration_family_gradients_match_finite_differences(name):
  """Rewards, the stored sparse probabilities and the discount; values and q.
  (Sup-norm stops: the differences move ``probs`` off the simplex, where the
  span rule's midpoint is not the fixed point.)"""
  m, _, _ = _mdp("sparse", seed=5)
  w = jnp.linspace(-1.0, 2.0, 6)

  def f(x):
    sol = FAMILY[name](m.replace(rewards=x["r"], probs=x["p"], discount=x["d"]))
    return sol.values @ w + 0.1 * jnp.sum(sol.q ** 2)

  g = _check_fd(f, {"r": m.rewards, "p": m.probs, "d": m.discount}, 2)
  assert g["p"].shape == m.probs.shape


# slow: 5 s; a compiled-memory check, unchanged by the default run's numerics
@pytest.mark.slow
def test_memory_does_not_grow_with_iterations():
  s = 150
  m, _, _ = _mdp("sparse", seed=4, s=s, a=2, k=3)
  cap = 987_654

  def f(r):
    return jd.value_iteration(m.replace(rewards=r), tol=VI_TOL, max_iters=cap).values.sum()

  g = jax.grad(f)(m.rewards)
  assert np.isfinite(np.asarray(g)).all()
  # No buffer scales with the iteration cap (no tape), and the sparse adjoint
  # builds nothing S x S (the transposed matvec is a scatter-add).
  text = str(jax.make_jaxpr(jax.grad(f))(m.rewards))
  shapes = [[int(d) for d in shape.split(",") if d]
            for shape in re.findall(r"[a-z]+\d+\[([\d,]*)\]", text)]
  assert shapes and not any(cap in sh for sh in shapes)
  assert not any(sh.count(s) >= 2 for sh in shapes)


@pytest.mark.slow
def test_grad_jit_and_vmap():
  mdps = [_mdp("dense", seed=s)[0] for s in range(3)]
  batch = jd.stack(mdps)

  def f(m, r):
    return jd.value_iteration(m.replace(rewards=r), tol=VI_TOL).values.sum()

  gb = jax.jit(jax.vmap(jax.grad(f, argnums=1)))(batch, batch.rewards)
  for i, m in enumerate(mdps):
    np.testing.assert_allclose(gb[i], jax.grad(f, argnums=1)(m, m.rewards), rtol=1e-12)
  # Soft: vmap over temperatures of the gradient w.r.t. temperature.
  m = mdps[0]
  gt = jax.vmap(jax.grad(lambda t: jd.soft_value_iteration(m, temperature=t, tol=VI_TOL)
                         .values.sum()))(jnp.asarray([0.3, 1.0]))
  for i, t in enumerate((0.3, 1.0)):
    one = jax.grad(lambda t: jd.soft_value_iteration(m, temperature=t, tol=VI_TOL)
                   .values.sum())(jnp.asarray(t))
    np.testing.assert_allclose(gt[i], one, rtol=1e-10)


@pytest.mark.slow
def test_neumann_adjoint_equals_gmres():
  m, _, _ = _mdp("sparse", seed=5, gamma=0.95)
  grads = []
  for adj in (ImplicitAdjoint(), ImplicitAdjoint("neumann"),
              ImplicitAdjoint("gmres", tol=1e-12, restart=5)):
    grads.append(jax.grad(lambda p: jd.value_iteration(m.replace(probs=p), tol=VI_TOL,
                                                       adjoint=adj).values.sum())(m.probs))
  np.testing.assert_allclose(grads[1], grads[0], rtol=1e-8)
  np.testing.assert_allclose(grads[2], grads[0], rtol=1e-8)
  with pytest.raises(jd.InvalidMDPError, match=r"^adjoint.method"):
    jd.value_iteration(m, adjoint=ImplicitAdjoint("cg"))


# ----------------------------------------------------------------- soft
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_soft_vi_gradients_match_finite_differences(layout):
  m, _, _ = _mdp(layout, seed=6)
  w = jnp.linspace(-1.0, 2.0, 6)
  tau = jnp.asarray(0.4)
  rng = np.random.default_rng(0)
  ref = rng.random((6, 3)) + 0.1
  ref = jnp.asarray(ref / ref.sum(1, keepdims=True))

  def f(x):
    sol = jd.soft_value_iteration(
        m.replace(rewards=x["r"], probs=x["p"], discount=x["d"]), temperature=x["t"],
        ref_policy=x["ref"], tol=VI_TOL)
    # The softmax policy carries gradients too (it is smooth).
    return sol.values @ w + jnp.sum(sol.policy * jnp.arange(3.0))

  _check_fd(f, {"r": m.rewards, "p": m.probs, "d": m.discount, "t": tau, "ref": ref}, 1)


@pytest.mark.slow
def test_soft_pi_and_evaluation_gradients():
  m, _, _ = _mdp("sparse", seed=7)
  tau = 0.5
  g_vi = jax.grad(lambda r: jd.soft_value_iteration(m.replace(rewards=r), temperature=tau,
                                                    tol=VI_TOL).values.sum())(m.rewards)
  for evaluation in ("exact", "krylov"):
    g_pi = jax.jit(jax.grad(lambda r: jd.soft_policy_iteration(
        m.replace(rewards=r), temperature=tau, tol=VI_TOL,
        evaluation=evaluation).values.sum()))(m.rewards)
    np.testing.assert_allclose(g_pi, g_vi, rtol=1e-9)  # g_vi: checked vs differences
  # A policy with no tiny probabilities (d^2/dpi^2 of pi log pi is 1 / pi).
  pi = 0.5 * jd.soft_value_iteration(m, temperature=tau, tol=VI_TOL).policy + 0.5 / 3
  x = {"pi": pi, "p": m.probs, "t": jnp.asarray(tau)}
  grads = {}
  for method in ("exact", "krylov", "iterative"):
    def f(x):
      return jd.soft_policy_evaluation(m.replace(probs=x["p"]), x["pi"], temperature=x["t"],
                                       method=method, tol=VI_TOL).values.sum()
    # Central differences for the exact method; the implicit ones must agree.
    grads[method] = _check_fd(f, x, 2) if method == "exact" else jax.jit(jax.grad(f))(x)
  for method in ("krylov", "iterative"):
    for k in grads["exact"]:
      np.testing.assert_allclose(grads[method][k], grads["exact"][k], rtol=1e-8)


# ------------------------------------------------------ ready wirings
@pytest.mark.slow
def test_wiring_policy_iteration_and_iterative_evaluation():
  """What policy_iteration / policy_evaluation need: one call around their
  solve gives them implicit gradients (matches the closed form)."""
  m, p, _ = _mdp("dense", seed=8)

  def pi_grad(r):
    sol = implicit_greedy_solution(lambda mdp: jd.policy_iteration(mdp), m.replace(rewards=r))
    return sol.values.sum()

  g = jax.grad(pi_grad)(m.rewards)
  g_vi = jax.grad(lambda r: jd.value_iteration(m.replace(rewards=r), tol=VI_TOL)
                  .values.sum())(m.rewards)
  np.testing.assert_allclose(g, g_vi, rtol=1e-9)

  pol = jnp.full((6, 3), 1 / 3)

  def ev(r, pol):
    res = implicit_policy_values(
        lambda mdp, pi, tol: jd.policy_evaluation(mdp, pi, method="iterative", tol=tol),
        m.replace(rewards=r), pol, jnp.asarray(VI_TOL))
    return res.values.sum() + 0.1 * res.q.sum()

  g_r, g_pol = jax.grad(ev, argnums=(0, 1))(m.rewards, pol)
  def ex(r, pol):
    res = jd.policy_evaluation(m.replace(rewards=r), pol)
    return res.values.sum() + 0.1 * res.q.sum()

  ex = jax.grad(ex, argnums=(0, 1))(m.rewards, pol)
  np.testing.assert_allclose(g_r, ex[0], rtol=1e-9)
  np.testing.assert_allclose(g_pol, ex[1], rtol=1e-8)


# slow: 6 s; keep_q's Q derivative is checked against closed forms in test_solve_gradients' default test
@pytest.mark.slow
def test_keep_q_returns_the_solvers_q_with_the_recomputed_q_derivative():
  """``implicit_greedy_solution(..., keep_q=True)``: the primal ``q`` is the
  solver's own (no second Q pass), and its derivative (rewards, transitions,
  discount) equals that of ``q = r + gamma P V``
  recomputed from the differentiable values (the default, ``keep_q=False``);
  the rewards' gradient also against the closed form (transitions and
  discount against closed forms: tests/planning/test_solve_gradients.py)."""
  m, p, r = _mdp("sparse", seed=9)
  sol = jd.policy_iteration(m)
  kept = implicit_greedy_solution(lambda mdp: jd.policy_iteration(mdp), m, keep_q=True)
  assert kept.q is not None and np.array_equal(np.asarray(kept.q), np.asarray(sol.q))
  w = jnp.asarray(np.random.default_rng(4).normal(size=r.shape))

  def loss(params, keep):
    mm = m.replace(rewards=params["r"], probs=params["p"], discount=params["g"])
    out = implicit_greedy_solution(lambda mdp: jd.policy_iteration(mdp), mm, keep_q=keep)
    return jnp.sum(w * out.q) + out.values[2]

  params = {"r": m.rewards, "p": m.probs, "g": m.discount}
  g_keep = jax.jit(jax.grad(lambda x: loss(x, True)))(params)
  g_new = jax.jit(jax.grad(lambda x: loss(x, False)))(params)
  for k in params:
    np.testing.assert_allclose(np.asarray(g_keep[k]), np.asarray(g_new[k]), rtol=1e-10,
                               atol=1e-12, err_msg=k)
  # An independent reference for the rewards: Q = r + gamma P (I - gamma P_pi)^-1 r_pi.
  pi = np.asarray(sol.policy)
  rows = np.arange(6)
  inv = np.linalg.inv(np.eye(6) - 0.9 * p[rows, pi])
  u = 0.9 * np.einsum("sa,sat->t", np.asarray(w), p)
  u[2] += 1.0
  want = np.asarray(w).copy()
  want[rows, pi] += u @ inv
  np.testing.assert_allclose(np.asarray(g_keep["r"]), want, rtol=1e-9, atol=1e-12)


def _slow_chain():
  """RiverSwim (S=50) at gamma 0.999, where restarted GMRES(20) stalls (before
  the verification its 200 cycles returned a 100% wrong derivative), and the
  closed form ``dV*(0)/dr(s, pi*(s)) = (I - gamma P_pi*)^-1[0, s]`` of a NumPy
  linear solve at the optimal policy."""
  m = jd.suites.river_swim(num_states=50, discount=0.999)
  p, r = sparse_to_dense(np.asarray(m.next_states), np.asarray(m.probs)), np.asarray(m.rewards)
  sol = jd.policy_iteration(m)
  pi, rows = np.asarray(sol.policy), np.arange(50)
  inv = np.linalg.inv(np.eye(50) - 0.999 * p[rows, pi])
  want = np.zeros(r.shape)
  want[rows, pi] = inv[0]

  def grad(adjoint):
    return np.asarray(jax.jit(jax.grad(lambda rw: jd.value_iteration(
        m.replace(rewards=rw), tol=1e-9, stop="span", adjoint=adjoint).values[0]))(m.rewards))

  return m, sol, want, grad, (rows, pi)


@pytest.mark.slow  # (~10 s on a 2-core host: the slow run, to keep the default run under 10 min)
def test_adjoint_solves_are_verified_and_converge_on_slow_chains():
  """The default adjoint (GMRES(20), then GMRES(100) where that has not
  converged) equals the closed form; an adjoint that cannot converge
  (GMRES(20)) gives NaN, never a wrong number; the Krylov occupancy raises on
  the host when its solve misses ``tol``."""
  m, sol, want, grad, on_policy = _slow_chain()
  np.testing.assert_allclose(grad(None), want, rtol=1e-8, atol=1e-8 * np.abs(want).max())
  # (Off-policy rewards do not enter T_pi: their derivative stays an exact 0.)
  assert np.isnan(grad(ImplicitAdjoint(restart=20))[on_policy]).all()
  with pytest.raises(ValueError, match="did not reach"):
    jd.state_occupancy(m, sol.policy, method="krylov", max_iters=1)


@pytest.mark.slow
def test_explicit_adjoints_on_slow_chains():
  """GMRES(100) equals the closed form; Neumann with too few steps gives NaN;
  the Krylov occupancy (default adjoint) equals the exact (LU) one."""
  m, sol, want, grad, on_policy = _slow_chain()
  np.testing.assert_allclose(grad(ImplicitAdjoint(restart=100)), want, rtol=1e-8,
                             atol=1e-8 * np.abs(want).max())
  assert np.isnan(grad(ImplicitAdjoint("neumann", max_iters=50))[on_policy]).all()
  d = jd.state_occupancy(m, sol.policy, method="krylov")
  np.testing.assert_allclose(np.asarray(d), np.asarray(jd.state_occupancy(m, sol.policy)),
                             rtol=1e-8)
