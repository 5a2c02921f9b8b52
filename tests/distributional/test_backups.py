"""Distributional representations: projections and risk functionals against
hand-worked cases and independent float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import distributional as dd


# ------------------------------------------------ independent references
def np_cramer_project(atoms, probs, support):
  """Cramer projection via its CDF characterization (float64).

  The projected CDF at z_i (i < N-1) is the average of the original CDF F
  over [z_i, z_{i+1}], and 1 at z_{N-1}. For a step F,
  int_a^b F = sum_j p_j * clip(b - max(x_j, a), 0, b - a).
  """
  atoms = np.asarray(atoms, np.float64)
  probs = np.asarray(probs, np.float64)
  z = np.asarray(support, np.float64)
  n = z.size
  cdf = np.ones(n)
  for i in range(n - 1):
    a, b = z[i], z[i + 1]
    integral = np.sum(probs * np.clip(b - np.maximum(atoms, a), 0.0, b - a))
    cdf[i] = integral / (b - a)
  cdf[-1] = probs.sum()
  return np.diff(np.concatenate([[0.0], cdf]))


def np_quantiles(atoms, probs, n):
  """inf{x : F(x) >= tau_i} at tau_i = (2i-1)/2N by sorting (float64)."""
  order = np.argsort(atoms)
  x, c = np.asarray(atoms)[order], np.cumsum(np.asarray(probs, np.float64)[order])
  taus = (2 * np.arange(1, n + 1) - 1) / (2 * n)
  return np.array([x[np.argmax(c >= t)] for t in taus])


def np_cvar_ru(atoms, probs, alpha):
  """Rockafellar-Uryasev: max over b of b - E[(b - G)^+] / alpha (the max is
  attained at an atom)."""
  atoms = np.asarray(atoms, np.float64)
  probs = np.asarray(probs, np.float64)
  return max(b - np.sum(probs * np.maximum(b - atoms, 0.0)) / alpha for b in atoms)


def np_var(atoms, probs, alpha):
  order = np.argsort(atoms)
  x, c = np.asarray(atoms)[order], np.cumsum(np.asarray(probs, np.float64)[order])
  return x[np.argmax(c >= alpha - 1e-12)]


# ------------------------------------------------------ categorical project
def test_projection_hand_worked_cases():
  p = dd.categorical_project(jnp.arange(5.0), jnp.array([.1, .2, .1, .3, .3]),
                             jnp.arange(3.0, 8.0))
  np.testing.assert_allclose(p, [.7, .3, 0, 0, 0], atol=1e-7)
  # Split in proportion to proximity, on a non-uniform support.
  z = jnp.array([0.0, 1.0, 3.0])
  np.testing.assert_allclose(dd.categorical_project(jnp.array([2.0]), jnp.ones(1), z), [0, .5, .5], atol=1e-7)
  np.testing.assert_allclose(dd.categorical_project(jnp.array([0.25]), jnp.ones(1), z), [.75, .25, 0], atol=1e-7)
  np.testing.assert_allclose(dd.categorical_project(jnp.array([2.5]), jnp.ones(1), z), [0, .25, .75], atol=1e-7)
  # Outside the support: to the end atoms.
  np.testing.assert_allclose(
      dd.categorical_project(jnp.array([-5.0, 10.0]), jnp.array([.4, .6]), z), [.4, 0, .6], atol=1e-7)
  # N = 1: everything on the single atom.
  np.testing.assert_allclose(dd.categorical_project(jnp.array([-1.0, 3.0]), jnp.array([.5, .5]), jnp.array([7.0])), [1.0])


def test_projection_vs_float64_reference_conservation_and_mean():
  rng = np.random.default_rng(0)
  m = 24
  with jax.enable_x64(True):
    project = jax.jit(jax.vmap(dd.categorical_project))
    for n in (2, 5, 11):
      b = 8
      z = np.stack([np.sort(rng.choice(np.linspace(-5, 5, 200), n, replace=False)) for _ in range(b)])
      atoms = rng.uniform(-7, 7, (b, m))
      probs = rng.dirichlet(np.ones(m), b)
      probs[:, m // 2:] *= rng.random((b, 1)) < 0.5  # some with fewer atoms
      probs /= probs.sum(1, keepdims=True)
      got = np.asarray(project(atoms, probs, z))
      for i in range(b):
        np.testing.assert_allclose(got[i], np_cramer_project(atoms[i], probs[i], z[i]), atol=1e-12)
      np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-12)
      assert (got >= -1e-15).all()
      # Mean preserved after clipping the atoms into the support range.
      inside = np.clip(atoms, z[:, :1], z[:, -1:])
      np.testing.assert_allclose(np.sum(got * z, 1), np.sum(probs * inside, 1), atol=1e-12)
  # float32, batched [S, A, M] with a shared support: equals the loop.
  z = np.array([-2.0, -0.5, 0.0, 1.0, 4.0])
  atoms = rng.uniform(-3, 5, (4, 3, 7))
  probs = rng.dirichlet(np.ones(7), (4, 3))
  got = np.asarray(dd.categorical_project(jnp.asarray(atoms, jnp.float32), jnp.asarray(probs, jnp.float32), z))
  assert got.shape == (4, 3, 5)
  for i in range(4):
    for j in range(3):
      np.testing.assert_allclose(got[i, j], np_cramer_project(atoms[i, j], probs[i, j], z), atol=2e-6)
  np.testing.assert_allclose(got.sum(-1), 1.0, atol=2e-6)


def test_projection_exact_on_support():
  z = np.array([-1.0, 0.0, 0.5, 2.0, 7.0])
  atoms = np.array([0.5, 7.0, -1.0, 0.5, 2.0, 7.0])
  probs = np.array([.1, .2, .05, .25, .3, .1])
  got = np.asarray(dd.categorical_project(atoms, probs, z))
  np.testing.assert_allclose(got, [.05, 0, .35, .3, .3], atol=1e-7)


@pytest.mark.slow
def test_projection_jit_vmap_and_batched_support():
  rng = np.random.default_rng(1)
  supports = np.sort(rng.uniform(-3, 3, (5, 6)), axis=1)
  atoms = rng.uniform(-4, 4, (5, 9)).astype(np.float32)
  probs = rng.dirichlet(np.ones(9), 5).astype(np.float32)
  eager = np.stack([dd.categorical_project(a, p, z) for a, p, z in zip(atoms, probs, supports)])
  jitted = jax.jit(dd.categorical_project)
  loop = np.stack([jitted(a, p, jnp.asarray(z, jnp.float32)) for a, p, z in zip(atoms, probs, supports)])
  vm = jax.vmap(dd.categorical_project)(atoms, probs, jnp.asarray(supports, jnp.float32))
  np.testing.assert_allclose(loop, eager, atol=1e-6)
  np.testing.assert_allclose(vm, eager, atol=1e-6)
  for i in range(5):
    np.testing.assert_allclose(eager[i], np_cramer_project(atoms[i], probs[i], supports[i]), atol=2e-6)


def test_cramer_distance_closed_form():
  z = jnp.array([0.0, 1.0, 3.0])
  # F_p = [1, 1, 1], F_q = [0, 1, 1] on [0, 1): distance^2 = 1 * 1.
  np.testing.assert_allclose(dd.cramer_distance(jnp.array([1.0, 0, 0]), jnp.array([0, 1.0, 0]), z), 1.0)
  # F differ by .5 on [1, 3): distance^2 = .25 * 2.
  np.testing.assert_allclose(dd.cramer_distance(jnp.array([0, 1.0, 0]), jnp.array([0, .5, .5]), z), np.sqrt(.5), rtol=1e-6)


# --------------------------------------------------------- quantile project
def test_quantile_projection_hand_cases_and_reference():
  # Ties at tau take the midpoint of the neighbouring atoms.
  np.testing.assert_allclose(dd.quantile_project(jnp.arange(4.0), jnp.full(4, .25), 2), [0.5, 2.5])
  np.testing.assert_allclose(dd.quantile_project(jnp.array([10.0, 0.0]), jnp.array([.7, .3]), 2), [0.0, 10.0])
  np.testing.assert_allclose(dd.quantile_project(jnp.array([10.0, 0.0]), jnp.array([.7, .3]), 1), [10.0])
  np.testing.assert_allclose(dd.quantile_levels(4), [1 / 8, 3 / 8, 5 / 8, 7 / 8])
  rng = np.random.default_rng(2)
  m = 30
  fine = np.linspace(0, 1, 20001)[1:-1]
  with jax.enable_x64(True):
    for n in (1, 4, 13):
      atoms = rng.normal(size=(6, m))
      probs = rng.dirichlet(np.ones(m), 6)
      got = np.asarray(jax.jit(dd.quantile_project, static_argnums=2)(atoms, probs, n))
      for i in range(6):
        np.testing.assert_allclose(got[i], np_quantiles(atoms[i], probs[i], n), atol=0)
        # W1-optimality: no perturbation of the locations is closer in W1.
        order = np.argsort(atoms[i])
        c = np.cumsum(probs[i][order])
        finv = atoms[i][order][np.minimum(np.searchsorted(c, fine), m - 1)]
        cell = np.minimum((fine * n).astype(int), n - 1)
        w1 = lambda locs: np.mean(np.abs(finv - np.sort(locs)[cell]))
        base = w1(got[i])
        for _ in range(5):
          assert base <= w1(got[i] + rng.normal(scale=0.1, size=n)) + 1e-4


def test_quantile_projection_batched_jit_vmap():
  rng = np.random.default_rng(3)
  atoms = rng.normal(size=(3, 4, 10)).astype(np.float32)
  probs = rng.dirichlet(np.ones(10), (3, 4)).astype(np.float32)
  got = np.asarray(dd.quantile_project(atoms, probs, 5))
  assert got.shape == (3, 4, 5)
  for i in range(3):
    for j in range(4):
      np.testing.assert_allclose(got[i, j], np_quantiles(atoms[i, j], probs[i, j], 5), atol=1e-7)
  jit = jax.jit(dd.quantile_project, static_argnums=2)(atoms, probs, 5)
  vm = jax.vmap(lambda a, p: dd.quantile_project(a, p, 5))(atoms, probs)
  np.testing.assert_allclose(jit, got)
  np.testing.assert_allclose(vm, got)
  np.testing.assert_allclose(dd.wasserstein_distance(jnp.array([0.0, 1.0]), jnp.array([1.0, 3.0])), 1.5)
  np.testing.assert_allclose(dd.wasserstein_distance(jnp.array([0.0, 1.0]), jnp.array([1.0, 3.0]), p=float("inf")), 2.0)


# --------------------------------------------------------- risk functionals
ATOMS = np.array([3.0, 1.0, 2.0, 5.0])
PROBS = np.array([.1, .4, .2, .3])


def test_risk_functionals_hand_worked_and_numpy():
  d = dd.Distribution(jnp.asarray(ATOMS), jnp.asarray(PROBS))
  np.testing.assert_allclose(dd.mean(d), 2.6, rtol=1e-6)
  np.testing.assert_allclose(dd.variance(d), PROBS @ (ATOMS - 2.6) ** 2, rtol=1e-6)
  for alpha, var in [(.05, 1), (.4, 1), (.45, 2), (.6, 2), (.7, 3), (.71, 5), (1.0, 5)]:
    assert float(dd.value_at_risk(d, alpha)) == var, alpha
    assert np_var(ATOMS, PROBS, alpha) == var
  np.testing.assert_allclose(dd.cvar(d, .5), (.4 * 1 + .1 * 2) / .5, rtol=1e-6)
  np.testing.assert_allclose(dd.cvar(d, 1.0), 2.6, rtol=1e-6)
  for alpha in [.01, .1, .3, .4, .55, .65, .8, .95, 1.0]:
    np.testing.assert_allclose(dd.cvar(d, alpha), np_cvar_ru(ATOMS, PROBS, alpha), rtol=1e-6)
  np.testing.assert_allclose(dd.expected_utility(d, jnp.exp), PROBS @ np.exp(ATOMS), rtol=1e-6)
  np.testing.assert_allclose(dd.threshold_probability(d, 2.0), .6, rtol=1e-6)
  np.testing.assert_allclose(dd.threshold_probability(d, 2.5), .4, rtol=1e-6)
  # Objects match the functions; vmap over alpha == loop.
  alphas = jnp.array([.1, .3, .5, .9])
  np.testing.assert_allclose(jax.vmap(lambda a: dd.CVaR(a)(d))(alphas),
                             [dd.cvar(d, float(a)) for a in alphas], rtol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda a: dd.VaR(a)(d))(0.45), 2.0)


@pytest.mark.slow
def test_risk_on_quantile_representation_and_closed_forms():
  # alpha = k / N picks the k-th of N equal-mass atoms despite float rounding.
  for n in (3, 10, 49):
    q = dd.quantile_distribution(jnp.arange(n, dtype=jnp.float32))
    ks = np.arange(1, n + 1)
    alphas = jnp.asarray(ks / n, jnp.float32)
    np.testing.assert_array_equal(jax.vmap(lambda a: dd.value_at_risk(q, a))(alphas), ks - 1)
    np.testing.assert_allclose(jax.vmap(lambda a: dd.cvar(q, a))(alphas), (ks - 1) / 2, rtol=1e-5, atol=1e-5)
  # Quantile grid of U[0, 1] with N = 1000: closed forms within 1/N.
  n = 1000

  @jax.jit
  def functionals(locs):
    u = dd.quantile_distribution(locs)
    al = jnp.array([.05, .3, 1.0])
    return (jax.vmap(lambda a: dd.cvar(u, a))(al), jax.vmap(lambda a: dd.value_at_risk(u, a))(al),
            dd.variance(u), dd.threshold_probability(u, .25), dd.expected_utility(u, lambda x: x ** 2))

  cv, var, variance, thr, eu = functionals((2 * jnp.arange(1, n + 1) - 1) / (2.0 * n))
  # Within 1/N of U[0, 1]'s closed forms, and exactly (to float32 rounding)
  # the discrete ones of the atoms x_i = (2i - 1) / (2N), mass 1/N each: at
  # alpha = k/N, CVaR = k / (2N) = alpha / 2, VaR = x_k = (2k - 1) / (2N);
  # variance (N^2 - 1) / (12 N^2); P(X > 1/4) = 3/4 (no atom at 1/4);
  # E[X^2] = (4N^2 - 1) / (12 N^2).
  np.testing.assert_allclose(cv, np.array([.05, .3, 1.0]) / 2, atol=1.0 / n)
  np.testing.assert_allclose(var, [.05, .3, 1.0], atol=1.0 / n)
  assert abs(float(variance) - 1 / 12) < 1.0 / n
  assert abs(float(thr) - .75) < 1.0 / n
  np.testing.assert_allclose(eu, 1 / 3, atol=1.0 / n)
  # (float32 sums of N terms: within N u = 6e-5 relative at worst.)
  ks, nu = np.array([50, 300, 1000]), n * np.finfo(np.float32).eps / 2
  np.testing.assert_allclose(cv, ks / (2 * n), rtol=nu)
  np.testing.assert_allclose(var, (2 * ks - 1) / (2 * n), rtol=1e-6)
  np.testing.assert_allclose(variance, (n ** 2 - 1) / (12 * n ** 2), rtol=nu)
  np.testing.assert_allclose(thr, 0.75, rtol=nu)
  np.testing.assert_allclose(eu, (4 * n ** 2 - 1) / (12 * n ** 2), rtol=nu)


def test_risk_batched_categorical_support():
  rng = np.random.default_rng(4)
  z = np.array([-1.0, 0.0, 2.0, 3.0])
  probs = rng.dirichlet(np.ones(4), (5, 3))
  d = dd.categorical_distribution(z, probs)
  for fn, ref in [(lambda d: dd.cvar(d, .3), lambda p: np_cvar_ru(z, p, .3)),
                  (lambda d: dd.value_at_risk(d, .3), lambda p: np_var(z, p, .3)),
                  (dd.mean, lambda p: p @ z),
                  (dd.variance, lambda p: p @ (z - p @ z) ** 2)]:
    got = np.asarray(fn(d))
    assert got.shape == (5, 3)
    want = np.array([[ref(probs[i, j]) for j in range(3)] for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, float("nan")])
def test_bad_alpha(alpha):
  d = dd.Distribution(jnp.asarray(ATOMS), jnp.asarray(PROBS))
  for fn in (dd.cvar, dd.value_at_risk):
    with pytest.raises(jd.InvalidMDPError, match=r"alpha = .*expected a value in \(0, 1\]"):
      fn(d, alpha)
  with pytest.raises(jd.InvalidMDPError, match=r"alpha\[1\] = 2.0"):
    dd.cvar(d, jnp.array([.5, 2.0]))


def test_bad_support_probs_and_sizes():
  a, p = jnp.arange(3.0), jnp.full(3, 1 / 3)
  with pytest.raises(jd.InvalidMDPError, match=r"support\[2\] = 1.0: expected a strictly increasing"):
    dd.categorical_project(a, p, jnp.array([0.0, 1.0, 1.0, 2.0]))
  with pytest.raises(jd.InvalidMDPError, match=r"support\[1\] = 0.0: expected a strictly"):
    dd.categorical_project(a, p, jnp.array([1.0, 0.0]))
  with pytest.raises(jd.InvalidMDPError, match=r"support: expected rank 1"):
    dd.categorical_project(a, p, jnp.ones((2, 2)))
  with pytest.raises(jd.InvalidMDPError, match=r"support: expected N >= 1"):
    dd.categorical_project(a, p, jnp.zeros((0,)))
  with pytest.raises(jd.InvalidMDPError, match=r"support\[1\] = nan"):
    dd.categorical_project(a, p, jnp.array([0.0, jnp.nan]))
  with pytest.raises(jd.InvalidMDPError, match=r"probs\[:\] sums to 0.9"):
    dd.categorical_project(a, jnp.array([.3, .3, .3]), jnp.arange(3.0))
  with pytest.raises(jd.InvalidMDPError, match=r"probs\[1\] = -0.5: expected a probability >= 0"):
    dd.quantile_project(a, jnp.array([1.0, -.5, .5]), 2)
  with pytest.raises(jd.InvalidMDPError, match=r"atoms: shape \(4,\) does not broadcast against probs \(3,\)"):
    dd.categorical_project(jnp.arange(4.0), p, jnp.arange(3.0))
  for n in (0, -1, 2.0, True):
    with pytest.raises(jd.InvalidMDPError, match=r"num_quantiles = .*expected a Python int >= 1"):
      dd.quantile_project(a, p, n)
  with pytest.raises(jd.InvalidMDPError, match="num_quantiles = 0"):
    dd.quantile_levels(0)
  with pytest.raises(jd.InvalidMDPError, match="dist: expected a jaxrl_dp.distributional.Distribution"):
    dd.mean(jnp.ones(3))
  # A Distribution built directly is checked where a risk functional reads it
  # (CVaR_0.5 of masses [0.7, 0.7] on [0, 1] was 0).
  bad = dd.Distribution(jnp.array([0.0, 1.0]), jnp.array([0.7, 0.7]))
  for risk in (dd.mean, lambda d: dd.cvar(d, 0.5)):
    with pytest.raises(jd.InvalidMDPError, match=r"dist.probs\[:\] sums to 1.39"):
      risk(bad)
  with pytest.raises(jd.InvalidMDPError, match=r"dist.probs\[0\] = -0.5"):
    dd.mean(dd.Distribution(jnp.array([0.0, 1.0]), jnp.array([-0.5, 1.5])))


def test_start_and_terminal_values_and_supports_without_zero():
  m = jd.TabularMDP.from_dense(np.ones((1, 1, 1)), np.ones((1, 1)), 1.0)
  for kwargs, field in ((dict(locs0=[[np.nan, 0.0]]), r"locs0\[0, 0\] = nan"),):
    with pytest.raises(jd.InvalidMDPError, match=field):
      dd.quantile_evaluation(m.replace(discount=jnp.asarray(0.5)), 2, **kwargs)
  with pytest.raises(jd.InvalidMDPError, match=r"terminal_locs\[0, 1\] = inf"):
    dd.quantile_evaluation_finite(m, 2, horizon=2, terminal_locs=[[0.0, np.inf]])
  with pytest.raises(jd.InvalidMDPError, match=r"terminal_locs\[0, 0\] = nan"):
    dd.quantile_control_finite(m, 2, horizon=2, terminal_locs=[[np.nan, 0.0]])
  # One state, reward 1, two steps: the return is 2. On a support without 0
  # the terminal delta_0 has no atom; the result was shifted (all mass on 3)
  # with off_support_mass 0. Its whole mass now counts as off the support.
  ex = dd.exact_return_distribution(m, horizon=2, support=jnp.array([1.0, 2.0, 3.0]))
  assert float(ex.off_support_mass) == 1.0
  ex = dd.exact_return_distribution(m, horizon=2, support=jnp.array([0.0, 1.0, 2.0, 3.0]))
  np.testing.assert_array_equal(ex.probs[0, 0], [0.0, 0.0, 1.0, 0.0])
  assert float(ex.off_support_mass) == 0.0


def test_risk_measures_of_an_int_categorical_distribution_are_real():
  """Int atoms with int probabilities: the measures computed in an int dtype
  (the threshold 1.5 cast to 1, alpha 0.5 to 0: ``P(G >= 1.5) = 1`` and a
  CVaR of NaN for a return that is 1 almost surely). Closed forms."""
  d = dd.categorical_distribution(jnp.array([0, 1, 2, 3]), jnp.array([0, 1, 0, 0]))
  assert float(dd.threshold_probability(d, 1.5)) == 0.0
  assert float(dd.threshold_probability(d, 0.5)) == 1.0
  for f in (lambda: dd.cvar(d, 0.5), lambda: dd.value_at_risk(d, 0.5), lambda: dd.mean(d)):
    got = f()
    assert jnp.issubdtype(got.dtype, jnp.floating) and float(got) == 1.0
  one = dd.categorical_distribution(jnp.array([0, 2]), jnp.array([0, 1]))
  assert abs(float(dd.cvar(one, 0.25)) - 2.0) <= 1e-6
