"""core.mdp constructors and validator: dtypes, casts, discount, atol, sizes.

Regression tests for issue 10, section 1, items 6, 7 and 11 (the core part):
bad input gets the documented named error, good input of any real dtype
gives the same numbers as a float64 NumPy reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core import memory
from jaxrl_dp.core.errors import InsufficientMemoryError, InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_discount, validate_mdp

from _reference import evaluate, optimal_values, random_dense, random_sparse

GAMMA = 0.9


def _small(seed=0, s=4, a=2):
  p, r = random_dense(np.random.default_rng(seed), s, a)
  return p, r


# ------------------------------------------------------------- item 6: dtype
@pytest.mark.parametrize("dtype", [jnp.int32, np.int64, bool, jnp.complex64, "U3", object])
def test_non_float_dtype_is_refused(dtype):
  p, r = _small()
  with pytest.raises(InvalidMDPError, match=r"^dtype = .*expected a floating dtype"):
    TabularMDP.from_dense(p, r, GAMMA, dtype=dtype)
  ns, ps, rs = random_sparse(np.random.default_rng(1), 4, 2, 2)
  with pytest.raises(InvalidMDPError, match=r"^dtype = .*expected a floating dtype"):
    TabularMDP.from_sparse(ns, ps, rs, GAMMA, dtype=dtype)
  with pytest.raises(InvalidMDPError, match=r"^dtype = .*expected a floating dtype"):
    TabularMDP.from_deterministic(np.zeros((3, 2), int), np.ones((3, 2)), dtype=dtype)


def test_float64_without_x64_is_refused_not_silently_float32():
  p, r = _small()
  if jax.config.jax_enable_x64:  # pragma: no cover - the suite runs without x64
    pytest.skip("x64 is on")
  with pytest.raises(InvalidMDPError, match=r"dtype = float64: needs jax_enable_x64"):
    TabularMDP.from_dense(p, r, GAMMA, dtype=np.float64)
  with jax.enable_x64(True):
    m = TabularMDP.from_dense(p, r, GAMMA, dtype=np.float64)
    assert m.probs.dtype == jnp.float64 and m.rewards.dtype == jnp.float64


def test_reward_overflowing_float32_is_refused_naming_the_entry():
  p, r = _small()
  r[2, 1] = 1e300
  with pytest.raises(InvalidMDPError,
                     match=r"^rewards\[2, 1\] = 1e\+300: overflows float32"):
    TabularMDP.from_dense(p, r, GAMMA)
  # Per-transition rewards: named in their own field.
  tr = np.zeros(p.shape)
  tr[1, 0, 3] = -1e300
  with pytest.raises(InvalidMDPError, match=r"^rewards\[1, 0, 3\] = -1e\+300: overflows"):
    TabularMDP.from_dense(p, tr, GAMMA)
  # The same MDP is fine in float64 (validated in the dtype it is stored in).
  with jax.enable_x64(True):
    m = TabularMDP.from_dense(p, r, GAMMA, dtype=np.float64)
    assert float(m.rewards[2, 1]) == 1e300
  # Values that already are inf / NaN are the validator's: "a finite number".
  r[2, 1] = np.inf
  with pytest.raises(InvalidMDPError, match=r"^rewards\[2, 1\] = inf: expected a finite number"):
    TabularMDP.from_dense(p, r, GAMMA)


@pytest.mark.parametrize("field", ["probs", "rewards", "initial", "discount"])
def test_complex_input_is_refused(field):
  p, r = _small()
  kw = dict(probs=p, rewards=r, discount=GAMMA, initial=np.full(4, 0.25))
  kw[field] = np.asarray(kw[field]) + 0j  # imaginary part 0: still refused
  with pytest.raises(InvalidMDPError, match=rf"^{field}"):
    TabularMDP.from_dense(kw["probs"], kw["rewards"], kw["discount"], initial=kw["initial"])


@pytest.mark.parametrize("atol", [np.nan, np.inf, -1e-3, "1e-5", None, True, 1j])
def test_bad_atol_is_refused(atol):
  p, r = _small()
  with pytest.raises(InvalidMDPError, match=r"^atol = "):
    TabularMDP.from_dense(p * 0.5, r, GAMMA, atol=atol)  # rows sum to 0.5
  m = TabularMDP.from_dense(p, r, GAMMA)
  with pytest.raises(InvalidMDPError, match=r"^atol = "):
    validate_mdp(m, atol=atol)


def test_probabilities_validated_after_the_cast():
  # Rows summing to 1 + 3e-6 pass the default atol in float32 too; a row that
  # is off by 2e-5 is refused with its index whatever the input dtype.
  p, r = _small()
  p[3, 1] *= 1 + 2e-5
  for x in (p, p.astype(np.float32), p.tolist()):
    with pytest.raises(InvalidMDPError, match=r"^probs\[3, 1, :\] sums to"):
      TabularMDP.from_dense(x, r, GAMMA)


# --------------------------------------------------- item 7: int/bool rewards
@pytest.mark.parametrize("kind", ["int", "bool", "list"])
def test_int_and_bool_rewards_are_cast_and_solved(kind):
  rng = np.random.default_rng(3)
  p, _ = random_dense(rng, 5, 3)
  r_int = rng.integers(-3, 4, (5, 3))
  r = {"int": r_int, "bool": r_int > 0, "list": r_int.tolist()}[kind]
  m = TabularMDP.from_dense(p, r, GAMMA)
  for leaf in (m.probs, m.rewards, m.discount, m.initial):
    assert leaf.dtype == jnp.float32
  assert m.action_mask.dtype == jnp.bool_
  v_ref, _, _ = optimal_values(p, np.asarray(r, np.float64), GAMMA)
  sol = jd.value_iteration(m, tol=1e-5)
  np.testing.assert_allclose(sol.values, v_ref, atol=1e-4 * (1 + np.abs(v_ref).max()))


def test_int_probs_initial_and_discount_are_cast():
  # A one-hot integer transition table (a deterministic MDP written densely).
  p = np.zeros((3, 2, 3), np.int64)
  p[np.arange(3), 0, (np.arange(3) + 1) % 3] = 1
  p[np.arange(3), 1, np.arange(3)] = 1
  r = np.array([[1, 0], [0, 2], [0, 0]])
  m = TabularMDP.from_dense(p, r, 0, initial=np.array([1, 0, 0]))
  assert m.probs.dtype == m.initial.dtype == m.discount.dtype == jnp.float32
  np.testing.assert_array_equal(m.probs, p)
  sol = jd.policy_evaluation(m, np.zeros(3, int))
  np.testing.assert_allclose(sol.values, [1, 0, 0])  # discount 0: V = r_pi


def test_sparse_next_states_int32_after_range_check():
  ns, p, r = random_sparse(np.random.default_rng(0), 4, 2, 2)
  m = TabularMDP.from_sparse(ns, p, r.astype(np.int8), GAMMA)
  assert m.next_states.dtype == jnp.int32 and m.rewards.dtype == jnp.float32
  ns[1, 1, 0] = 2**32  # would wrap to 0 in an int32 cast
  with pytest.raises(InvalidMDPError, match=r"^next_states\[1, 1, 0\] = 4294967296"):
    TabularMDP.from_sparse(ns, p, r, GAMMA)


def test_directly_built_int_mdp_gets_a_named_error_not_a_jax_crash():
  p, r = _small()
  m = TabularMDP.from_dense(p, r, GAMMA)
  bad = m.replace(rewards=jnp.asarray(np.ones((4, 2), np.int32)))
  with pytest.raises(InvalidMDPError, match=r"^rewards: expected a floating dtype"):
    validate_mdp(bad)
  with pytest.raises(InvalidMDPError, match=r"^rewards: expected a floating dtype"):
    jd.value_iteration(bad)
  with pytest.raises(InvalidMDPError, match=r"rewards: expected a floating dtype"):
    jd.stack([m, bad])


def test_checked_once_only_while_the_mdp_cannot_change():
  """``check_solver_input`` skips the checks for an MDP object it passed
  before only when every leaf is an immutable jax.Array: an MDP of NumPy
  arrays edited in place is checked (and refused) again, a refused MDP is
  refused on every call, and the record goes with the MDP."""
  import gc

  from jaxrl_dp.core import mdp as mdp_module
  p, r = random_dense(np.random.default_rng(5), 6, 3)
  # NumPy leaves: checked on every call, so an in-place edit is caught.
  m_np = TabularMDP(probs=np.asarray(p, np.float32), rewards=np.asarray(r, np.float32),
                    discount=np.asarray(0.9, np.float32),
                    initial=np.full(6, 1 / 6, np.float32), action_mask=np.ones((6, 3), bool))
  assert float(jd.value_iteration(m_np, tol=1e-4).error_bound) <= 1e-4
  m_np.discount[...] = 1.0
  with pytest.raises(InvalidMDPError, match=r"discount = 1\.0"):
    jd.value_iteration(m_np, tol=1e-4)
  # jax.Array leaves: recorded once passed, per horizon kind; a refused MDP
  # is never recorded.
  m = jd.TabularMDP.from_dense(p, r, 0.9)
  bad = m.replace(discount=jnp.asarray(1.0, m.rewards.dtype))
  for _ in range(2):
    with pytest.raises(InvalidMDPError, match=r"discount = 1\.0"):
      jd.value_iteration(bad, tol=1e-4)
  assert (id(bad), True) not in mdp_module._PASSED
  sol = jd.value_iteration(m, tol=1e-6)
  assert (id(m), True) in mdp_module._PASSED
  np.testing.assert_allclose(np.asarray(sol.values), optimal_values(p, r, 0.9)[0],
                             atol=float(sol.error_bound) + 1e-5)
  key = (id(m), True)
  del m, sol
  gc.collect()
  assert key not in mdp_module._PASSED


def test_mixed_float_dtypes_get_a_named_error_not_a_jax_crash():
  # Under x64 a float32 model's fields replaced one by one can leave a
  # float64 discount: value iteration then failed inside lax.while_loop
  # (carry of two dtypes) and the speculative solver inside lax.cond.
  with jax.enable_x64(True):
    p, r = _small()
    m = TabularMDP.from_dense(p, r, GAMMA, dtype=np.float32)
    assert m.discount.dtype == jnp.float32
    half = m.replace(discount=jnp.asarray(GAMMA, jnp.float64))
    for call in (validate_mdp, jd.value_iteration, jd.solve,
                 lambda x: jd.speculative_value_iteration(x, tol=1e-3)):
      with pytest.raises(InvalidMDPError, match=r"^discount: dtype float64 differs from "
                                                r"rewards' float32"):
        call(half)
    with pytest.raises(InvalidMDPError, match=r"^probs: dtype float64 differs"):
      jd.value_iteration(m.replace(probs=m.probs.astype(jnp.float64)))
    with pytest.raises(InvalidMDPError, match=r"^initial: dtype float64 differs"):
      jd.policy_iteration(m.replace(initial=m.initial.astype(jnp.float64)))
    # an int initial distribution passed validation, then failed inside the
    # solvers (finfo of int32): named at the boundary now
    point = m.replace(initial=jnp.eye(m.num_states, dtype=jnp.int32)[0])
    for call in (validate_mdp, jd.value_iteration, jd.solve):
      with pytest.raises(InvalidMDPError, match=r"^initial: expected a float array"):
        call(point)
    # every field cast: accepted, and the same values as the float64 NumPy reference
    sol = jd.value_iteration(m, tol=1e-4)
    np.testing.assert_allclose(np.asarray(sol.values), optimal_values(p, r, GAMMA)[0],
                               atol=2e-4)


@pytest.mark.parametrize("field, value, message", [
    ("discount", np.asarray([GAMMA], np.float32), r"^discount: expected shape \(\)"),
    ("initial", np.full(5, 0.2, np.float32), r"^initial: expected shape \(4,\)"),
    ("action_mask", np.ones((4, 2), np.int32), r"^action_mask: expected a bool array, got dtype int32"),
    ("action_mask", np.ones((4, 3), bool), r"^action_mask: expected shape \(4, 2\)"),
    ("probs", np.full((4, 2, 5), 0.2, np.float32), r"^probs: dense layout|^probs: expected shape"),
])
def test_misshapen_fields_get_a_named_error_at_every_solver(field, value, message):
  # Directly replaced fields bypass the constructors: before, a [1] discount
  # failed inside lax.while_loop ("cond_fun must return a boolean scalar"), an
  # int mask was misread by policy evaluation and a wrong-size initial was
  # ignored.
  p, r = _small()
  bad = TabularMDP.from_dense(p, r, GAMMA).replace(**{field: jnp.asarray(value)})
  for call in (validate_mdp, jd.value_iteration, jd.solve, jd.policy_iteration,
               lambda m: jd.policy_evaluation(m, np.zeros(4, np.int32)),
               lambda m: jd.finite_horizon(m, horizon=2)):
    with pytest.raises(InvalidMDPError, match=message):
      call(bad)
  # and jd.stack names the member (an int mask was cast to bool there)
  with pytest.raises(InvalidMDPError, match=rf"^mdps\[1\]\.{field}: "):
    jd.stack([TabularMDP.from_dense(p, r, GAMMA), bad])


def test_stack_and_unstack_keep_dtypes():
  p, r = _small()
  ns, ps, rs = random_sparse(np.random.default_rng(2), 3, 2, 2)
  a = TabularMDP.from_sparse(ns, ps, rs.astype(int), GAMMA)
  b = TabularMDP.from_sparse(ns[:, :1], ps[:, :1], rs[:, :1] > 0, 0.5)
  batch = jd.stack([a, b])
  for name in ("probs", "rewards", "discount", "initial"):
    assert getattr(batch, name).dtype == jnp.float32, name
  assert batch.next_states.dtype == jnp.int32 and batch.action_mask.dtype == jnp.bool_
  for m in jd.unstack(batch):
    assert m.rewards.dtype == jnp.float32 and m.next_states.dtype == jnp.int32
  with jax.enable_x64(True):  # float32 with float64 promotes to float64
    c = TabularMDP.from_sparse(ns, ps, rs, GAMMA, dtype=np.float64)
    mixed = jd.stack([a, c])
    assert mixed.probs.dtype == mixed.initial.dtype == mixed.discount.dtype == jnp.float64
    np.testing.assert_allclose(mixed.rewards[0], np.asarray(a.rewards, np.float64))


# ----------------------------------------------------- item 11: the discount
@pytest.mark.parametrize("discount", ["0.9", None, b"0.9", True, 0.9 + 0j, [0.9, 0.9], object()])
def test_discount_of_wrong_type_is_named(discount):
  p, r = _small()
  with pytest.raises(InvalidMDPError, match=r"^discount"):
    TabularMDP.from_dense(p, r, discount)
  with pytest.raises(InvalidMDPError, match=r"^discount"):
    TabularMDP.from_deterministic(np.zeros((3, 2), int), np.ones((3, 2)), discount)
  if not isinstance(discount, list):  # a vector is a batch of discounts there
    with pytest.raises(InvalidMDPError, match=r"^discount"):
      check_discount(discount, infinite_horizon=True)


def test_discount_range_after_the_cast():
  p, r = _small()
  # 1 - 1e-9 is 1.0 in float32: legal for the MDP, refused by an
  # infinite-horizon solver with the usual message (the value it will use).
  m = TabularMDP.from_dense(p, r, 1 - 1e-9)
  assert float(m.discount) == 1.0
  with pytest.raises(InvalidMDPError, match=r"discount = 1.0: expected a value in \[0, 1\)"):
    jd.value_iteration(m)


# --------------------------------------------- item 11: sizes that grow as S^2
def _huge_chain(s=1_000_000):
  nxt = (np.arange(s) + 1) % s
  return TabularMDP.from_deterministic(nxt[:, None], np.ones((s, 1)), GAMMA)


def test_dense_allocations_are_checked_before_they_happen():
  m = _huge_chain()  # S = 10^6: P_pi would take 3 x 4 TB
  pi = np.zeros(m.num_states, int)
  with pytest.raises(InsufficientMemoryError,
                     match=r"policy_evaluation\(method='exact'\): P_pi \[S, S\].*"
                           r"use policy_evaluation\(method='krylov'\)") as e:
    jd.policy_evaluation(m, pi)
  assert isinstance(e.value, MemoryError) and isinstance(e.value, InvalidMDPError)
  with pytest.raises(InsufficientMemoryError, match=r"policy_iteration.*modified_policy_iteration"):
    jd.policy_iteration(m)
  with pytest.raises(InsufficientMemoryError, match=r"to_dense\(\).*sparse layout"):
    m.to_dense()
  with pytest.raises(InsufficientMemoryError):  # shapes are static: also under jit
    jax.jit(lambda mdp: mdp.to_dense())(m)
  # What the message proposes works, in the sparse layout (closed form 1/(1-g)).
  ev = jd.policy_evaluation(m, pi, method="iterative", tol=1e-3)
  np.testing.assert_allclose(np.asarray(ev.values[:5]), 1 / (1 - GAMMA), rtol=1e-4)


def test_check_dense_size_message_says_what_fits(monkeypatch):
  with pytest.raises(InsufficientMemoryError, match=r"S <= 7 would fit here \(S = 50\): use X"):
    memory.check_dense_size("f: [S, A, S]", (50, 2, 50), np.float32, copies=2,
                            instead="X", available=1000)
  memory.check_dense_size("f", (7, 2, 7), np.float32, copies=2, instead="X", available=1000)
  # Unknown available memory: never refuses on a guess.
  monkeypatch.setattr(memory, "available_memory_bytes", lambda device=None: None)
  memory.check_dense_size("f", (10**7, 10**7), np.float32, instead="X")
  # With little memory, a small exact evaluation is refused too (and the
  # iterative method it proposes gives the linear-solve reference).
  monkeypatch.setattr(memory, "available_memory_bytes", lambda device=None: 100)
  p, r = _small()
  m = TabularMDP.from_dense(p, r, GAMMA)
  pi = np.array([0, 1, 1, 0])
  with pytest.raises(InsufficientMemoryError, match=r"S <= 2 would fit here \(S = 4\)"):
    jd.policy_evaluation(m, pi)
  ev = jd.policy_evaluation(m, pi, method="iterative", tol=1e-5)
  np.testing.assert_allclose(ev.values, evaluate(p, r, GAMMA, pi), atol=1e-4)


def test_available_memory_is_positive_here():
  avail = memory.available_memory_bytes()
  assert avail is None or avail > 0


def test_solvers_refuse_replaced_transitions_that_break_the_certificate():
  """An MDP made with ``replace`` skips the constructors' validation; every
  solver's boundary still refuses the transition entries its certificate
  relies on (a negative or NaN probability, a successor index out of range),
  naming the first one as ``validate_mdp`` would. A valid replaced model
  solves to the float64 NumPy optimum, and replacing only its rewards keeps
  the checked transition arrays (no second host check); a bfloat16 copy
  (rows off 1 by its rounding) is not refused."""
  from jaxrl_dp.core import mdp as mdp_module
  rng = np.random.default_rng(3)
  p, r = random_dense(rng, 6, 2)
  m = jd.TabularMDP.from_dense(p, r, 0.9)
  solvers = [jd.value_iteration, jd.policy_iteration, jd.modified_policy_iteration,
             jd.anderson_value_iteration, jd.solve]
  cases = [(m.replace(probs=m.probs.at[2, 1, 4].set(-0.25)), r"probs\[2, 1, 4\] = -0\.25"),
           (m.replace(probs=m.probs.at[0, 0, 1].set(jnp.nan)), r"probs\[0, 0, 1\] = nan")]
  ns, ps, rs = random_sparse(rng, 6, 2, 3)
  sp = jd.TabularMDP.from_sparse(ns, ps, rs, 0.9)
  cases.append((sp.replace(next_states=sp.next_states.at[4, 0, 2].set(6)),
                r"next_states\[4, 0, 2\] = 6: expected a state index in \[0, 6\)"))
  cases.append((sp.replace(next_states=sp.next_states.at[1, 1, 0].set(-1)),
                r"next_states\[1, 1, 0\] = -1"))
  for bad, msg in cases:
    for f in solvers:
      with pytest.raises(InvalidMDPError, match=msg):
        f(bad)
  # A valid replaced model: solved, and its reward-only replacement shares
  # the recorded transition arrays.
  m2 = m.replace(rewards=m.rewards * 2.0)
  assert mdp_module._transitions_recorded(m2)
  v_ref, _, _ = optimal_values(np.asarray(m.probs, np.float64),
                               2.0 * np.asarray(m.rewards, np.float64), 0.9)
  sol = jd.value_iteration(m2, tol=1e-3)
  assert np.abs(np.asarray(sol.values, np.float64) - v_ref).max() <= float(sol.error_bound) <= 1e-3
  mdp_module.check_transitions(m.replace(probs=m.probs.astype(jnp.bfloat16),
                                         rewards=m.rewards.astype(jnp.bfloat16),
                                         discount=m.discount.astype(jnp.bfloat16),
                                         initial=m.initial.astype(jnp.bfloat16)))


def test_replaced_transition_rewards_must_keep_rewards_their_expectation():
  """``rewards`` is the expectation of ``transition_rewards`` under ``probs``:
  the planning solvers read the first, the distributional ones the second.
  ``mdp.replace(transition_rewards=t)`` alone left the old ``rewards``, and the
  two families solved two models (value iteration against the categorical
  mean: 1 apart at gamma 0.5 for a +0.5 shift). Refused at every boundary
  (a solver, ``validate_mdp``, ``batch.solve``'s compiled check), naming the
  entry; the consistent replacement solves to the float64 NumPy optimum of
  the shifted rewards, and a float32 model whose rewards were rounded on
  their own (its float64 source cast field by field) passes."""
  from jaxrl_dp import distributional as D
  rng = np.random.default_rng(5)
  ns, p, r = random_sparse(rng, 5, 2, 3)
  m = jd.TabularMDP.from_sparse(ns, p, r[..., None] + rng.uniform(-1, 1, (5, 2, 3)), 0.5)
  t = m.transition_rewards + 0.5
  stale = m.replace(transition_rewards=t)
  want = r"rewards\[(1, )?0, 0\] = .*expectation of transition_rewards under probs"
  for call in (jd.value_iteration, jd.solve,
               lambda x: D.categorical_evaluation(x, jnp.linspace(-4.0, 4.0, 9)),
               lambda x: validate_mdp(x),
               lambda x: jd.batch.solve([m, x], jd.value_iteration, progress=False)):
    with pytest.raises(InvalidMDPError, match=want):
      call(stale)
  # Masked actions are not read by any solver: their rewards are not checked.
  masked = stale.replace(rewards=(m.probs * t).sum(-1).at[3, 1].set(7.0),
                         action_mask=m.action_mask.at[3, 1].set(False))
  validate_mdp(masked)
  good = m.replace(transition_rewards=t, rewards=(m.probs * t).sum(-1))
  dense = np.zeros((5, 2, 5))
  np.add.at(dense, (np.arange(5)[:, None, None], np.arange(2)[None, :, None], np.asarray(ns)),
            np.asarray(m.probs, np.float64))
  r_ref = np.einsum("sak,sak->sa", np.asarray(m.probs, np.float64), np.asarray(t, np.float64))
  v_ref, _, _ = optimal_values(dense, r_ref, 0.5)
  sol = jd.value_iteration(good, tol=1e-4)
  assert np.abs(np.asarray(sol.values, np.float64) - v_ref).max() <= float(sol.error_bound) <= 1e-4
  # Every field rounded to float32 on its own, from float64 ones.
  p64 = np.asarray(p, np.float64)
  t64 = rng.uniform(-100.0, 100.0, (5, 2, 3))
  own = TabularMDP(probs=jnp.asarray(p64, jnp.float32),
                   rewards=jnp.asarray((p64 * t64).sum(-1), jnp.float32),
                   discount=jnp.asarray(0.5, jnp.float32), initial=jnp.full((5,), 0.2),
                   action_mask=jnp.ones((5, 2), bool), next_states=jnp.asarray(ns, jnp.int32),
                   transition_rewards=jnp.asarray(t64, jnp.float32))
  validate_mdp(own)
  assert bool(jd.value_iteration(own, tol=1e-3).converged)


def test_rewards_checked_at_the_boundary_subnormal_ones_accepted():
  """A NaN or infinite reward put in with ``replace`` is refused by name at
  every solver boundary (value iteration returned NaN values, finite
  horizon NaN without a certificate, the LP SciPy's message naming neither
  field nor entry). Per-transition rewards of float32-subnormal size are
  valid: their expectation (computed by the constructor) is accepted, and
  it equals the float64 expectation to the subnormal spacing."""
  p = np.array([[[0.3, 0.7]], [[0.0, 1.0]]])
  r3 = np.array([[[1.1e-40, 2.3e-40]], [[0.0, 1e-40]]])
  tiny = jd.TabularMDP.from_dense(p, r3, 0.9)
  assert tiny.rewards.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(tiny.rewards, np.float64)[:, 0],
                             (p * r3).sum(-1)[:, 0], rtol=0, atol=2e-45)
  m = jd.TabularMDP.from_dense(p, np.array([[1.0], [2.0]]), 0.9)
  for bad, msg in ((m.replace(rewards=m.rewards.at[1, 0].set(jnp.nan)), r"rewards\[1, 0\] = nan"),
                   (m.replace(rewards=m.rewards.at[0, 0].set(jnp.inf)), r"rewards\[0, 0\] = inf")):
    for call in (jd.value_iteration, jd.solve, jd.linear_programming,
                 jd.relative_value_iteration, lambda x: jd.finite_horizon(x, 3)):
      with pytest.raises(InvalidMDPError, match=msg):
        call(bad)


def test_every_family_refuses_replaced_entries():
  """An MDP made with ``replace`` skips the constructors; every family's
  entry point must refuse what ``validate_mdp`` would, naming the entry.
  Random-policy Q, the effective-horizon analysis and the discounted stock
  CVaR returned numbers for negative / NaN probabilities, a state without a
  valid action and an ``initial`` summing to 1.4 (found by a randomized
  sweep); the distributional evaluators accepted the masked state."""
  from jaxrl_dp import distributional as D, random_policy as RP
  good = jd.TabularMDP.from_dense(np.full((2, 2, 2), 0.5), np.array([[0., 1.], [1., 2.]]), 0.9)
  cases = [(good.replace(probs=jnp.array([[[1.5, -.5], [.5, .5]], [[.5, .5], [.5, .5]]])),
            r"probs\[0, 0, 1\] = -0\.5"),
           (good.replace(probs=good.probs.at[0, 0, 0].set(jnp.nan)), r"probs\[0, 0, 0\] = nan"),
           (good.replace(action_mask=jnp.array([[False, False], [True, True]])),
            r"action_mask\[0, :\] has no valid action"),
           (good.replace(initial=jnp.array([0.7, 0.7])), r"initial\[:\] sums to 1\.(4|39999)")]
  calls = {"solve": lambda m: jd.solve(m),
           "random_q": lambda m: RP.random_q(m),
           "random_q finite": lambda m: RP.random_q(m, 3),
           "analyze_effective_horizon": lambda m: RP.analyze_effective_horizon(m, 3),
           "optimize_cvar_discounted": lambda m: D.optimize_cvar_discounted(m, 0.5),
           "categorical_evaluation": lambda m: D.categorical_evaluation(m, jnp.linspace(-5, 25, 11)),
           "quantile_evaluation": lambda m: D.quantile_evaluation(m, 3)}
  for bad, msg in cases:
    for name, call in calls.items():
      with pytest.raises(InvalidMDPError, match=msg):
        call(bad)
