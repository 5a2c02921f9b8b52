"""Implicit gradients through the robust solvers (issue 12, item 2): robust VI,
MPI and robust policy evaluation w.r.t. rewards, nominal probabilities (dense and
sparse: on the stored entries), discount, the set's size, the initial
distribution and a float policy, against central finite differences in float64
(relative 1e-6) for the L1 ball, TV / KL / chi-square penalties, KL ball,
chi-square ball and L2 ball; the closed form ``(I - gamma P*_pi)^{-1}`` of the
reward gradient; forward = reverse mode; vmap; the Wasserstein ball's values
derivative and its named refusal for the others; the KL-ball envelope of
``worst_case`` against finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import robust as R
from _reference import random_dense, random_sparse, sparse_to_dense


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


TOL = 1e-13
S, A = 6, 3


def _mdp(layout, seed=0, gamma=0.9):
  rng = np.random.default_rng(seed)
  if layout == "dense":
    p, r = random_dense(rng, S, A)
    return jd.TabularMDP.from_dense(p, r, gamma)
  ns, ps, r = random_sparse(rng, S, A, 4)
  return jd.TabularMDP.from_sparse(ns, ps, r, gamma)


def _check_fd(f, x, seed=0, h=1e-6, rtol=1e-6, jvp=True, grad=None):
  """``grad f . e`` vs a central difference along a random ``e`` per input
  (probability directions keep the row sums: the tangent of the simplex);
  the joint ``jvp`` vs ``grad``. Returns the gradients."""
  x = {k: jnp.asarray(v) for k, v in x.items()}
  rng = np.random.default_rng(seed)
  dirs = {}
  for k, v in x.items():
    e = rng.normal(size=np.shape(v))
    if k in ("p", "pi", "init"):
      e = e - e.mean(-1, keepdims=True)
    dirs[k] = jnp.asarray(e)
  fj = jax.jit(f)
  g = (grad or jax.jit(jax.grad(f)))(x)
  total = 0.0
  for k in x:
    up = dict(x, **{k: x[k] + h * dirs[k]})
    down = dict(x, **{k: x[k] - h * dirs[k]})
    fd = float((fj(up) - fj(down)) / (2 * h))
    gd = float(jnp.sum(g[k] * dirs[k]))
    assert abs(gd - fd) <= rtol * max(abs(fd), 1e-3), (k, gd, fd)
    total += gd
  if jvp:
    jv = jax.jit(lambda x, e: jax.jvp(f, (x,), (e,))[1])(x, dirs)
    assert abs(float(jv) - total) <= 1e-8 * max(abs(total), 1.0)
  return g


SETS = {
    "l1_ball": R.l1_ball(0.3),
    "tv_penalty": R.tv_penalty(0.5),
    "kl_penalty": R.kl_penalty(0.7),
    "chi2_penalty": R.chi2_penalty(0.8),
    "kl_ball": R.kl_ball(0.1),
    "chi2_ball": R.chi2_ball(0.2),
    "l2_ball": R.lp_ball(0.05, p=2.0),
}
FAST = {("sparse", "kl_ball")}


def _vi_objective(m, uset):
  w = jnp.linspace(-1.0, 2.0, S)

  def f(x):
    mdp = m.replace(rewards=x["r"], probs=x["p"], discount=x["d"], initial=x["init"])
    sol = R.robust_value_iteration(mdp, uset.replace(size=x["s"]), tol=TOL)
    # values, the initial distribution, and q (recomputed from the values)
    return sol.values @ w + x["init"] @ sol.values + 0.05 * jnp.sum(sol.q)

  x = {"r": m.rewards, "p": m.probs, "d": m.discount, "init": m.initial,
       "s": jnp.asarray(float(uset.size))}
  return f, x


@pytest.mark.parametrize("layout,name", [
    pytest.param(layout, name, marks=() if (layout, name) in FAST else pytest.mark.slow)
    for layout in ("dense", "sparse") for name in SETS])
def test_robust_vi_gradients_match_finite_differences(layout, name):
  m = _mdp(layout, seed=1)
  f, x = _vi_objective(m, SETS[name])
  g = _check_fd(f, x, seed=2, jvp=(layout, name) not in FAST)
  assert g["p"].shape == m.probs.shape      # sparse: on the stored entries [S, A, K]
  if (layout, name) in FAST:
    # The reward gradient in closed form: the objective is w . V + init . V +
    # 0.05 sum q, so dJ/dr(s, a) = y_s 1[a = pi(s)] + 0.05, y = c (I - gamma P*_pi)^{-1}
    # with c = w + init + 0.05 gamma sum_{s', a'} P*(. | s', a') (expected rewards:
    # the adversary's kernel does not move with r).
    sol = R.robust_value_iteration(m, SETS[name], tol=TOL)
    pol = np.asarray(sol.policy)
    worst = sparse_to_dense(np.asarray(m.next_states), np.asarray(sol.worst_probs))
    c = (np.linspace(-1.0, 2.0, S) + np.asarray(m.initial)
         + 0.05 * 0.9 * worst.sum(axis=(0, 1)))
    y = c @ np.linalg.inv(np.eye(S) - 0.9 * worst[np.arange(S), pol])
    want = np.full((S, A), 0.05)
    want[np.arange(S), pol] += y
    np.testing.assert_allclose(g["r"], want, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_reward_gradient_is_the_worst_case_closed_form():
  """d V*_robust / d r(s, a) = [(I - gamma P*_pi)^{-1}]_{:, s} 1[a = pi(s)]
  (expected rewards: the adversary's kernel does not move with r), NumPy."""
  m = _mdp("sparse", seed=3)
  uset = R.l1_ball(0.4)
  sol = R.robust_value_iteration(m, uset, tol=TOL)
  pol = np.asarray(sol.policy)
  worst = sparse_to_dense(np.asarray(m.next_states), np.asarray(sol.worst_probs))
  p_star = worst[np.arange(S), pol]
  w = np.linspace(1.0, 2.0, S)
  g = jax.grad(lambda r: R.robust_value_iteration(m.replace(rewards=r), uset, tol=TOL)
               .values @ w)(m.rewards)
  want = np.zeros((S, A))
  want[np.arange(S), pol] = w @ np.linalg.inv(np.eye(S) - 0.9 * p_star)
  np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-11)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kl_ball", "l1_ball"])
def test_robust_evaluation_gradients(name):
  m = _mdp("dense", seed=4)
  uset = SETS[name]
  pi = jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(A), S))
  w = jnp.linspace(-1.0, 2.0, S)

  def f(x):
    res = R.robust_policy_evaluation(m.replace(rewards=x["r"], probs=x["p"], discount=x["d"]),
                                     x["pi"], uset.replace(size=x["s"]), tol=TOL)
    return res.values @ w

  _check_fd(f, {"r": m.rewards, "p": m.probs, "d": m.discount, "pi": pi,
                "s": jnp.asarray(float(uset.size))}, seed=5)


@pytest.mark.parametrize("name", ["l1_ball", pytest.param("kl_ball", marks=pytest.mark.slow)])
def test_robust_finite_horizon_gradients(name):
  """``robust_finite_horizon`` (a ``lax.scan``; the inner worst case by its
  closed form or envelope rule) against central differences: rewards,
  probs, discount, radius and terminal values."""
  m = _mdp("sparse", seed=7)
  uset = SETS[name]
  w = jnp.linspace(-1.0, 2.0, S)

  def f(x):
    res = R.robust_finite_horizon(m.replace(rewards=x["r"], probs=x["p"], discount=x["d"]),
                                  uset.replace(size=x["s"]), horizon=4,
                                  terminal_values=x["t"])
    return res.values[0] @ w + 0.1 * res.values[2] @ w

  _check_fd(f, {"r": m.rewards, "p": m.probs, "d": m.discount,
                "s": jnp.asarray(float(uset.size)), "t": jnp.linspace(0.0, 1.0, S)}, seed=8)


@pytest.mark.slow
def test_robust_mpi_gradient_equals_vi():
  m = _mdp("sparse", seed=6)
  uset = R.chi2_ball(0.2)
  gv = jax.grad(lambda p: R.robust_value_iteration(m.replace(probs=p), uset, tol=TOL)
                .values.sum())(m.probs)
  gm = jax.grad(lambda p: R.robust_modified_policy_iteration(m.replace(probs=p), uset, tol=TOL)
                .values.sum())(m.probs)
  np.testing.assert_allclose(gm, gv, rtol=1e-8, atol=1e-10)


def _wasserstein_case():
  m = _mdp("sparse", seed=7)
  cost = np.abs(np.arange(S)[:, None] - np.arange(S)[None, :]).astype(float)
  return m, R.wasserstein_ball(0.3, cost)


@pytest.mark.slow
def test_wasserstein_values_derivative():
  m, uset = _wasserstein_case()

  def f(x):
    return R.robust_value_iteration(m.replace(rewards=x["r"], discount=x["d"]), uset,
                                    tol=TOL).values.sum()

  _check_fd(f, {"r": m.rewards, "d": m.discount}, seed=8)


def test_wasserstein_refusals():
  m, uset = _wasserstein_case()
  with pytest.raises(jd.InvalidMDPError, match=r"^wasserstein_ball: derivatives with respect "
                                               r"to probs"):
    jax.grad(lambda p: R.robust_value_iteration(m.replace(probs=p), uset, tol=TOL)
             .values.sum())(m.probs)
  # Under jit the refusal comes at trace time, before anything is compiled.
  with pytest.raises(jd.InvalidMDPError, match=r"^wasserstein_ball: .*radius"):
    jax.jit(jax.grad(lambda s: R.robust_value_iteration(m, uset.replace(size=s), tol=TOL)
                     .values.sum()))(jnp.asarray(0.3))


@pytest.mark.slow
def test_vmap_of_gradients_over_a_batch():
  mdps = [_mdp("dense", seed=s) for s in range(3)]
  batch = jd.stack(mdps)
  uset = R.kl_penalty(0.5)

  def f(m, p):
    return R.robust_value_iteration(m.replace(probs=p), uset, tol=TOL).values.sum()

  gb = jax.jit(jax.vmap(jax.grad(f, argnums=1)))(batch, batch.probs)
  for i, m in enumerate(mdps):
    np.testing.assert_allclose(gb[i], jax.grad(f, argnums=1)(m, m.probs), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("radius", [0.05, pytest.param(1e-3, marks=pytest.mark.slow),
                                    pytest.param(0.5, marks=pytest.mark.slow)])
def test_kl_ball_worst_case_envelope(radius):
  """``worst_case(.., kl_ball)`` value derivatives (values, probs on the simplex
  tangent, radius) vs central differences; d/dvalues is the worst case."""
  rng = np.random.default_rng(9)
  v = jnp.asarray(rng.normal(size=6))
  p0 = jnp.asarray(rng.dirichlet(np.ones(6)))

  def f(x):
    return R.worst_case(x["v"], x["p"], R.kl_ball(x["s"]))[0]

  grad = jax.jit(jax.grad(f))
  g = _check_fd(f, {"v": v, "p": p0, "s": jnp.asarray(radius)}, seed=10, h=1e-7,
                jvp=radius != 0.05, grad=grad)
  np.testing.assert_allclose(g["v"], R.worst_case(v, p0, R.kl_ball(radius))[1], atol=1e-12)
  # A saturated radius (> -log P0(argmin)): the value is min V, locally flat.
  g = grad({"v": v, "p": p0, "s": jnp.asarray(50.0)})
  assert float(g["s"]) == 0.0
  np.testing.assert_allclose(g["v"], np.eye(6)[int(np.argmin(v))], atol=1e-12)
