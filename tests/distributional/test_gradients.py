"""Gradients of the distributional solvers against central finite differences
of independent float64 NumPy references: the projected fixed points (the
categorical one by a linear solve in the probabilities, the quantile one by
iterating a NumPy projection), backward induction, and enumeration of every
trajectory for the exact return distributions."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import distributional as dd
from jaxrl_dp.core.solver_info import solver_info

H = 1e-6  # central-difference step (float64)


# ------------------------------------------------------------- references
def _hat(y, z):
  """``[N]`` the Cramer projection of one atom at ``y`` onto ``z`` (the split
  between the two neighbours in proportion to proximity)."""
  w = np.zeros(len(z))
  y = min(max(y, z[0]), z[-1])
  i = min(max(int(np.searchsorted(z, y, side="right")) - 1, 0), len(z) - 2)
  t = (y - z[i]) / (z[i + 1] - z[i])
  w[i] += 1.0 - t
  w[i + 1] += t
  return w


def _categorical_operator(p, r, gamma, z):
  """``[S, A, N, S, N]``: ``eta(s, a)_i = sum_{t, j} op[s, a, i, t, j] eta(t)_j``
  (``r [S, A]`` or per transition ``[S, A, S]``)."""
  s, a, _ = p.shape
  n = len(z)
  op = np.zeros((s, a, n, s, n))
  for i, j, t in itertools.product(range(s), range(a), range(s)):
    rew = r[i, j, t] if r.ndim == 3 else r[i, j]
    op[i, j, :, t, :] = p[i, j, t] * np.stack([_hat(rew + gamma * zk, z) for zk in z], 1)
  return op


def categorical_fixed_point(p, r, gamma, pi, z):
  """The projected fixed point ``eta_C [S, N]`` and its backup ``[S, A, N]``: the
  linear system ``eta = M eta`` with each state's mass 1 (least squares on the
  stacked, consistent system)."""
  s, n = p.shape[0], len(z)
  op = _categorical_operator(p, r, gamma, z)
  m = np.einsum("sa,sainj->sinj", pi, op).reshape(s * n, s * n)
  lhs = np.vstack([np.eye(s * n) - m, np.kron(np.eye(s), np.ones((1, n)))])
  rhs = np.concatenate([np.zeros(s * n), np.ones(s)])
  eta = np.linalg.lstsq(lhs, rhs, rcond=None)[0].reshape(s, n)
  return eta, np.einsum("sainj,nj->sai", op, eta)


def _quantile_project(atoms, w, n):
  order = np.argsort(atoms, kind="stable")
  c = np.cumsum(w[order])
  return atoms[order][[int(np.searchsorted(c, (2 * i + 1) / (2 * n))) for i in range(n)]]


def quantile_fixed_point(p, r, gamma, pi, n):
  """``[S, N]`` by iterating the NumPy quantile backup to a fixed point."""
  s, a, _ = p.shape
  th = np.zeros((s, n))
  for _ in range(2000):
    new = np.stack([_quantile_project(
        np.concatenate([r[i, j] + gamma * th[t] for j in range(a) for t in range(s)]),
        np.concatenate([np.full(n, pi[i, j] * p[i, j, t] / n) for j in range(a) for t in range(s)]),
        n) for i in range(s)])
    if np.array_equal(new, th):
      break
    th = new
  return th


def _central(f, x, d):
  return (f(x + H * d) - f(x - H * d)) / (2 * H)


def _model(seed, s=4, a=2):
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.ones(s), (s, a))
  r = rng.uniform(-1.0, 1.0, (s, a))
  pi = rng.dirichlet(np.ones(a), s)
  return rng, p, r, pi


def _zero_rows(d):
  return d - d.mean(-1, keepdims=True)


# ------------------------------------------------------------ discounted
def test_categorical_evaluation_gradients_match_finite_differences():
  with jax.enable_x64(True):
    rng, p, r, pi = _model(0)
    gamma, z = 0.8, np.linspace(-6.0, 6.0, 9)
    base = jd.TabularMDP.from_dense(p, r, gamma)
    w, wq = rng.normal(size=(4, 9)), rng.normal(size=(4, 2, 9))

    def ours(rew, probs, disc, pol, sup):
      res = dd.categorical_evaluation(base.replace(rewards=rew, probs=probs, discount=disc),
                                      sup, policy=pol, tol=1e-12)
      return jnp.sum(res.probs * w) + jnp.sum(res.q_probs * wq)

    def ref(rew, probs, disc, pol, sup):
      eta, q = categorical_fixed_point(probs, rew, disc, pol, sup)
      return np.sum(eta * w) + np.sum(q * wq)

    x = [r, p, np.float64(gamma), pi, z]
    grads = jax.grad(ours, argnums=range(5))(*map(jnp.asarray, x))
    dirs = [rng.normal(size=r.shape), _zero_rows(rng.normal(size=p.shape)), np.float64(1.0),
            _zero_rows(rng.normal(size=pi.shape)), 0.01 * rng.normal(size=z.shape)]
    for i, name in enumerate(["rewards", "probs", "discount", "policy", "support"]):
      def along(xi, i=i):
        return ref(*(xi if k == i else x[k] for k in range(5)))
      want = _central(along, x[i], dirs[i])
      got = float(np.sum(np.asarray(grads[i]) * dirs[i]))
      assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), (name, got, want)


@pytest.mark.slow
def test_categorical_evaluation_forward_mode_jit_and_vmap_agree():
  with jax.enable_x64(True):
    rng, p, r, pi = _model(5)
    base = jd.TabularMDP.from_dense(p, r, 0.9)
    z = jnp.linspace(-8.0, 8.0, 11)
    w = rng.normal(size=(4, 11))

    def ours(rew):
      res = dd.categorical_evaluation(base.replace(rewards=rew), z, policy=jnp.asarray(pi),
                                      tol=1e-12)
      return jnp.sum(res.probs * w)

    rs = jnp.stack([r, r + 0.3])
    grads = [jax.grad(ours)(x) for x in rs]
    d = rng.normal(size=r.shape)
    _, tangent = jax.jvp(ours, (rs[0],), (jnp.asarray(d),))
    np.testing.assert_allclose(tangent, np.sum(np.asarray(grads[0]) * d), rtol=1e-9)
    batched = jax.jit(jax.vmap(jax.grad(ours)))(rs)
    for i in range(2):
      np.testing.assert_allclose(batched[i], grads[i], rtol=1e-9, atol=1e-12)
    # And both against the reference.
    want = _central(lambda x: np.sum(categorical_fixed_point(p, x, 0.9, pi, np.asarray(z))[0]
                                     * w), r, d)
    assert abs(tangent - want) <= 1e-6 * max(1.0, abs(want))


def test_quantile_evaluation_gradients_match_finite_differences():
  with jax.enable_x64(True):
    rng, p, r, pi = _model(1)
    gamma, n = 0.8, 5
    base = jd.TabularMDP.from_dense(p, r, gamma)
    w, wq = rng.normal(size=(4, n)), rng.normal(size=(4, 2, n))

    def ours(rew, disc, probs):
      res = dd.quantile_evaluation(base.replace(rewards=rew, discount=disc, probs=probs), n,
                                   policy=jnp.asarray(pi), tol=1e-12)
      return jnp.sum(res.locs * w) + jnp.sum(res.q_locs * wq)

    def ref(rew, disc):
      th = quantile_fixed_point(p, rew, disc, pi, n)
      q = np.stack([[_quantile_project(
          np.concatenate([rew[i, j] + disc * th[t] for t in range(4)]),
          np.concatenate([np.full(n, p[i, j, t] / n) for t in range(4)]), n)
          for j in range(2)] for i in range(4)])
      return np.sum(th * w) + np.sum(q * wq)

    g_r, g_disc, g_p = jax.grad(ours, argnums=(0, 1, 2))(jnp.asarray(r), jnp.asarray(gamma),
                                                         jnp.asarray(p))
    d = rng.normal(size=r.shape)
    want = _central(lambda x: ref(x, gamma), r, d)
    assert abs(float(np.sum(np.asarray(g_r) * d)) - want) <= 1e-6 * max(1.0, abs(want))
    want = _central(lambda x: ref(r, x), gamma, 1.0)
    assert abs(float(g_disc) - want) <= 1e-6 * max(1.0, abs(want))
    # The atoms at the quantile levels do not move with the probabilities.
    np.testing.assert_array_equal(g_p, 0.0)


@pytest.mark.slow
def test_categorical_evaluation_gradients_sparse_transition_rewards():
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    s, a, k = 5, 3, 2
    ns = np.stack([[rng.choice(s, k, replace=False) for _ in range(a)] for _ in range(s)])
    ps = rng.dirichlet(np.ones(k), (s, a))
    tr = rng.uniform(-1.0, 1.0, (s, a, k))
    pol = rng.integers(0, a, s)
    m = jd.TabularMDP.from_sparse(ns, ps, tr, 0.7)
    z = np.linspace(-4.0, 4.0, 7)
    w = rng.normal(size=(s, 7))

    def dense(probs, rew):
      p = np.zeros((s, a, s))
      r = np.zeros((s, a, s))
      for i, j, kk in itertools.product(range(s), range(a), range(k)):
        p[i, j, ns[i, j, kk]] += probs[i, j, kk]
        r[i, j, ns[i, j, kk]] = rew[i, j, kk]
      return p, r

    def ref(probs, rew):
      p, r = dense(probs, rew)
      return np.sum(categorical_fixed_point(p, r, 0.7, np.eye(a)[pol], z)[0] * w)

    def ours(probs, rew):
      res = dd.categorical_evaluation(m.replace(probs=probs, transition_rewards=rew), z,
                                      policy=jnp.asarray(pol, jnp.int32), tol=1e-12)
      return jnp.sum(res.probs * w)

    g_p, g_r = jax.grad(ours, argnums=(0, 1))(jnp.asarray(ps), jnp.asarray(tr))
    d = _zero_rows(rng.normal(size=ps.shape))
    want = _central(lambda x: ref(x, tr), ps, d)
    assert abs(float(np.sum(np.asarray(g_p) * d)) - want) <= 1e-6 * max(1.0, abs(want))
    d = rng.normal(size=tr.shape)
    want = _central(lambda x: ref(ps, x), tr, d)
    assert abs(float(np.sum(np.asarray(g_r) * d)) - want) <= 1e-6 * max(1.0, abs(want))


def test_single_atom_support_and_fixed_count():
  with jax.enable_x64(True):
    rng, p, r, pi = _model(3)
    base = jd.TabularMDP.from_dense(p, r, 0.8)
    # One atom: every distribution is that atom, whatever the rewards.
    g = jax.grad(lambda rew: jnp.sum(dd.categorical_evaluation(
        base.replace(rewards=rew), jnp.asarray([0.5]), policy=jnp.asarray(pi)).probs))(
            jnp.asarray(r))
    np.testing.assert_array_equal(g, 0.0)
    # ``num_iters``: the derivative of the iterate, against 3 NumPy backups.
    z = np.linspace(-3.0, 3.0, 6)
    w = rng.normal(size=(4, 6))

    def ref(rew):
      m = np.einsum("sa,sainj->sinj", pi, _categorical_operator(p, rew, 0.8, z))
      eta = np.tile(_hat(0.0, z), (4, 1))
      for _ in range(3):
        eta = np.einsum("sinj,nj->si", m, eta)
      return np.sum(eta * w)

    g = jax.grad(lambda rew: jnp.sum(dd.categorical_evaluation(
        base.replace(rewards=rew), z, policy=jnp.asarray(pi), num_iters=3).probs * w))(
            jnp.asarray(r))
    d = rng.normal(size=r.shape)
    want = _central(ref, r, d)
    assert abs(float(np.sum(np.asarray(g) * d)) - want) <= 1e-6 * max(1.0, abs(want))
  for fn in (dd.categorical_evaluation, dd.quantile_evaluation):
    info = solver_info(fn)
    assert (info.infinite_horizon, info.kind, info.reverse_mode) == (True, "evaluation", True)


# ---------------------------------------------------------- finite horizon
def test_finite_horizon_gradients_match_finite_differences():
  with jax.enable_x64(True):
    rng, p, r, pi = _model(4, s=3)
    gamma, horizon = 0.9, 3
    base = jd.TabularMDP.from_dense(p, r, gamma)
    z = np.linspace(-3.0, 3.0, 7)
    w = rng.normal(size=(3, 7))

    # Categorical backward induction from delta_0 (projected).
    def cat_ref(rew, probs):
      m = np.einsum("sa,sainj->sinj", pi, _categorical_operator(probs, rew, gamma, z))
      eta = np.tile(_hat(0.0, z), (3, 1))
      for _ in range(horizon):
        eta = np.einsum("sinj,nj->si", m, eta)
      return np.sum(eta * w)

    def cat_ours(rew, probs):
      res = dd.categorical_evaluation_finite(base.replace(rewards=rew, probs=probs), z,
                                             horizon=horizon, policy=jnp.asarray(pi))
      return jnp.sum(res.probs[0] * w)

    g_r, g_p = jax.grad(cat_ours, argnums=(0, 1))(jnp.asarray(r), jnp.asarray(p))
    d = rng.normal(size=r.shape)
    want = _central(lambda x: cat_ref(x, p), r, d)
    assert abs(float(np.sum(np.asarray(g_r) * d)) - want) <= 1e-6 * max(1.0, abs(want))
    d = _zero_rows(rng.normal(size=p.shape))
    want = _central(lambda x: cat_ref(r, x), p, d)
    assert abs(float(np.sum(np.asarray(g_p) * d)) - want) <= 1e-6 * max(1.0, abs(want))

    # Exact return distribution: CVaR of the return from state 0 by enumerating
    # every trajectory (actions and next states), against jax.grad w.r.t. the
    # transition probabilities and the policy.
    alpha = 0.3

    def enumerated(probs, pol):
      atoms, mass = [], []
      for path in itertools.product(range(2), range(3), repeat=horizon):
        state, ret, pr = 0, 0.0, 1.0
        for t in range(horizon):
          act, nxt = path[2 * t], path[2 * t + 1]
          pr *= pol[state, act] * probs[state, act, nxt]
          ret += gamma ** t * r[state, act]
          state = nxt
        atoms.append(ret)
        mass.append(pr)
      order = np.argsort(atoms)
      x, m = np.asarray(atoms)[order], np.asarray(mass)[order]
      taken = np.minimum(m, np.maximum(alpha - (np.cumsum(m) - m), 0.0))
      return float(np.sum(taken * x) / alpha)

    support = dd.return_support(base, horizon=horizon)

    def exact_ours(probs, pol):
      res = dd.exact_return_distribution(base.replace(probs=probs), horizon=horizon,
                                         policy=pol, support=support)
      return dd.cvar(dd.categorical_distribution(res.support, res.probs[0, 0]), alpha)

    np.testing.assert_allclose(exact_ours(jnp.asarray(p), jnp.asarray(pi)), enumerated(p, pi),
                               rtol=1e-10)
    g_p, g_pi = jax.grad(exact_ours, argnums=(0, 1))(jnp.asarray(p), jnp.asarray(pi))
    for g, x, d in ((g_p, p, _zero_rows(rng.normal(size=p.shape))),
                    (g_pi, pi, _zero_rows(rng.normal(size=pi.shape)))):
      f = (lambda y: enumerated(y, pi)) if x is p else (lambda y: enumerated(p, y))
      want = _central(f, x, d)
      assert abs(float(np.sum(np.asarray(g) * d)) - want) <= 1e-6 * max(1.0, abs(want))



@pytest.mark.slow
def test_quantile_finite_horizon_gradients_match_finite_differences():
  with jax.enable_x64(True):
    rng, p, r, pi = _model(4, s=3)
    gamma, horizon, n = 0.9, 3, 4
    base = jd.TabularMDP.from_dense(p, r, gamma)
    w = rng.normal(size=(3, n))

    # Quantile backward induction from the point mass at 0.

    def q_ref(rew):
      th = np.zeros((3, n))
      for _ in range(horizon):
        th = np.stack([_quantile_project(
            np.concatenate([rew[i, j] + gamma * th[t] for j in range(2) for t in range(3)]),
            np.concatenate([np.full(n, pi[i, j] * p[i, j, t] / n)
                            for j in range(2) for t in range(3)]), n) for i in range(3)])
      return np.sum(th * w)

    g_r = jax.grad(lambda rew: jnp.sum(dd.quantile_evaluation_finite(
        base.replace(rewards=rew), n, horizon=horizon, policy=jnp.asarray(pi)).locs[0]
        * w))(jnp.asarray(r))
    d = rng.normal(size=r.shape)
    want = _central(q_ref, r, d)
    assert abs(float(np.sum(np.asarray(g_r) * d)) - want) <= 1e-6 * max(1.0, abs(want))
