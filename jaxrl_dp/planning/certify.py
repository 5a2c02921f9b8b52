"""Speculate, then certify: accurate a-posteriori certificates and mixed-precision VI.

The EasySpec idea (draft cheaply, verify exactly) carried over to dynamic
programming: iterate in a cheap precision, then verify the answer with ONE
Bellman residual pass computed more accurately than the working precision.

Certificate (:func:`certify`)
-----------------------------
For any values ``V [S]`` of an MDP whose exact Bellman operator ``T`` (of the
MDP AS STORED: the float arrays read as exact numbers) is a
``gamma'``-contraction in the sup norm, ``gamma' = gamma * max_(s, a valid)
sum_k p(s, a, k)`` (stored rows need not sum to exactly 1):

  (1) ``||V - V*|| <= ||T V - V|| / (1 - gamma')``
      (Puterman 1994, Thm 6.2.3 / Prop. 6.6.1 style contraction argument:
      ``||V - V*|| <= ||V - T V|| + ||T V - T V*|| <= res + gamma' ||V - V*||``);

  (2) for ``pi`` any deterministic policy, with ``g = ||T V - T_pi V||`` (0
      when ``pi`` is greedy with respect to ``V``):

      ``0 <= V* - V^pi <= (2 gamma' ||T V - V|| + g) / (1 - gamma')``.

      Proof: ``V* - V^pi = (T V* - T V) + (T V - T_pi V) + (T_pi V - T_pi
      V^pi) <= gamma' ||V* - V|| + g + gamma' ||V - V^pi||``, with (1) and
      ``||V - V^pi|| <= ||T_pi V - V|| / (1 - gamma') <= (res + g) / (1 -
      gamma')``. For a greedy ``pi`` this is Williams & Baird (1993), "Tight
      performance bounds on greedy policies based on imperfect value
      functions", ``2 gamma eps / (1 - gamma)`` for a Bellman residual
      ``eps`` (Singh & Yee 1994 state the same constant for ``eps = ||V -
      V*||``). The computed argmax of the accurately computed q-values is
      greedy up to their rounding, which ``g`` (bounded, not assumed 0)
      accounts for.

``||T V - V||`` is computed ONCE, more accurately than the working precision:

* ``method="float64"`` (the default whenever ``jax_enable_x64`` is on):
  the model and values are cast up to float64 (exactly; a no-op for a
  float64 model) and the residual is computed in plain float64, with its
  rounding bounded like :func:`jaxrl_dp.core.iteration.backup_rounding` but
  at float64's ``u = 2^-53``: ``|fl(d) - d| <= gamma rho (gamma_n + 2u)
  ||V|| + u (|gamma E| + |q| + |d|)`` per ``(s, a)``, ``n`` the terms of one
  expectation (``S`` dense, ``K`` sparse): below ``1e-12 ||V||`` for ``n <=
  10^4``. A dense float64 model is read once: its expectations and row sums
  are two columns of one matrix product
  (:func:`jaxrl_dp.core.bellman.dense_expectation_and_row_sums`).
  This pass costs 1.0-1.5 matrix-vector products (dense S=200-1000, A=8:
  107-1060 us against 61-1053 us; the earlier two reads, a product and a
  row sum, 138-1505 us; in-process A/B on a 2-core Intel Xeon, 2026-12-06).
  A narrower dense model (float32 values of a float32 model, x64 on) is
  never copied to float64: its two reductions convert the entries as they
  read them (5-7 backups at S=200-1000, A=8, where the copy cost 7-33).
* ``method="compensated"`` (the default without x64, and explicitly for
  float64 values certified to about their own ``u |T V - V|``): error-free
  transformations in the working dtype
  (:mod:`jaxrl_dp.core.compensated`). Per ``(s, a)`` the expectation
  ``E = sum_k p_k v_k`` comes as ``E_hi + E_lo`` with a rigorous bound
  ``|E_hi + E_lo - E| <= eps_E``: on a sparse model a Dot2 over the ``K``
  successors (Ogita, Rump & Oishi 2005; one fused compensated reduction;
  ``eps_E = gamma_{n+3} / (1 - gamma_{n+3}) sum |error terms|``, order ``n
  u^2 sum_k p_k |v_k|``, see :func:`jaxrl_dp.core.compensated.sum2`); on a
  dense model sliced matrix products
  (:func:`jaxrl_dp.core.compensated.matvec_and_row_sums`, the Ozaki scheme:
  fixed-point integer slices of ``P`` and ``V`` whose products the matrix
  product computes exactly; ``eps_E <= u / 64 max|V|`` at worst, 3-4x
  faster than the elementwise Dot2 at ``S >= 100``); then ``d = r - v + gamma
  E`` is formed with TwoProduct (``gamma E_hi``) and TwoSum (``r - v``, ``+
  gamma E_hi``), the small parts summed plainly, and rounded once:
  ``|fl(d) - d| <= u |fl(d)| / (1 - u) + gamma_6 sum |small parts| + u
  |gamma E_lo| + gamma eps_E`` (+ an underflow term). The residual is thus
  known to about ``u |T V - V|`` (dense: plus at most ``u / 64 ||V||``),
  not ``n u ||V||``: a certificate of float32 values about as tight as
  float64 would give, without float64.
* The row sums ``rho`` (hence ``gamma'``) are computed the same way
  (compensated sums or the sliced products' ones column, or float64 with
  a ``gamma_n`` bound).

Then ``res_up = max_s (|max_a fl(d_sa)| + max_a err_sa)`` bounds ``||T V -
V||`` (the max over actions moves by at most the largest error), and every
final operation is rounded upwards (factors ``1 + k u``, ``k >= 2``); a
float64 bound cast to float32 rounds up. A discount outside ``[0, 1)`` or
``gamma' >= 1`` gives ``inf``.

Speculative value iteration (:func:`speculative_value_iteration`)
-----------------------------------------------------------------
1. speculate: value iteration (``stop="span"`` by default) on the model cast
   to ``spec_dtype`` (float32 by default; bfloat16 allowed) until its own
   bound meets ``tol`` or its rounding floor;
2. certify the (cast-back) values with :func:`certify`; stop if
   ``error_bound <= tol``. When the speculation ran in the model's own
   dtype (a float32 model speculated in float32) and its own certified bound
   (rounding included) already meets ``tol``, its solution is returned as it
   is and nothing below runs (no certificate pass);
3. polish by defect correction (mixed-precision iterative refinement, as in
   Wilkinson's and Moler's refinement of linear solves, here for the
   nonlinear Bellman equation): the accurate pass also gives ``d_sa = r_sa +
   gamma E[V] - V_s``, and ``V* - V`` is EXACTLY the optimal value of the same
   MDP with rewards ``d`` (``T(V + x) - V = max_a d + gamma P x``). That
   correction MDP is solved again in the cheap precision from 0 (its values
   are small, so its rounding floor is small), ``V <- V + x`` in the working
   precision, and the result is re-certified. Rounds continue while the
   certified bound at least halves (at most ``max_rounds``);
4. when the working precision is float64 and the bound still exceeds
   ``tol``, plain value iteration (``stop``) continues in float64 from the
   best values until its own certified bound meets ``tol`` or ``max_iters``
   backups in all have been spent, and the result is certified once more.

``error_bound`` is always the accurate certificate's, ``converged =
error_bound <= tol``; ``iterations`` counts every backup of every phase (the
certificate passes are not backups). One ``jit``-able program: the rounds are
a ``lax.while_loop`` (each step certifies a candidate, then solves the next
correction under a ``lax.cond``) and the polish a ``lax.cond`` (under
``vmap``, where a cond becomes a select, their loops run zero steps for the
MDPs that do not need them). The certificate's pass is in the program once.

Limits: a float32 vector cannot be certified below about ``u |V| / (1 -
gamma)`` by any residual argument (its own rounding to float32 has a
residual of that order); use a float64 model (x64) for tighter ``tol``.
Cost of one accurate pass, measured on a 2-core Intel Xeon
(``benchmarks/bench_certify.py``, 2026-12-06, best of up to 60 calls; three
runs), in plain backups of the model's own dtype: the default float64 pass
of a float64 model 0.6-1.3 on the dense S=400, A=8 model (one read and a
short tail, see above) and 0.9-1.9 on the Garnet S=2000, A=8, K=5, i.e.
11-22% of a span-stopped VI solve (5-22 backups; the dense 5-backup solves
19-22%) and <= 0.3% of a sup-norm one; compensated float32 4.0-7.5 on the
Garnet and 8.8-13.6 on the dense model (sliced matrix products; the
elementwise Dot2 they replaced cost 32-43 there, and 14-18 / 38-44 / 37-45
at S = 100 / 400 / 1000 against 5-7 / 10-15 / 9-12 now, in-process A/B,
dense A=8, 2026-12-06); the float64 pass of a float32 model (x64 on) 2.3-9
(it converts the entries as it reads them). Against a dense span-stopped VI
of 3-4 float32 backups the float32 certificate costs 1.5-2.1x the solve
(its float64 pass under x64: 0.56-1.24x). (The 2-core AMD EPYC,
2026-12-04, with the two-read dense pass and separate reductions: float64
1.5-2.3 backups, 24-26% of the dense 5-backup solves.)
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxrl_dp.core import compensated as cp
from jaxrl_dp.core.compensated import Compensated
from jaxrl_dp.core import bellman
from jaxrl_dp.core.bellman import dense_expectation_and_row_sums, sparse_expectation
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import discount_ok, row_bounds, row_sum_stats
from jaxrl_dp.core.mdp import (TabularMDP, as_policy, check_mdp_structure,
                               check_transitions, check_solver_input)
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.protocol import iterative_solve
from jaxrl_dp.core.options import (as_values, check_choice, check_int,
                                   check_max_iters, check_tol, initial_values, tol_arg)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, check_adjoint,
                                        implicit_greedy_solution)
from jaxrl_dp.planning.value_iteration import STOP_RULES, value_iteration_solver

METHODS = ("auto", "compensated", "float64")


@flax.struct.dataclass
class Certificate:
  """An accurate a-posteriori certificate of values ``V [S]`` (one MDP).

  Attributes:
    bellman_residual: ``[]`` an upper bound on ``||T V - V||_inf`` (exact
      ``T`` of the stored MDP), computed more accurately than the working
      precision (see the module docstring).
    error_bound: ``[]`` ``>= max_s |V(s) - V*(s)|``:
      ``bellman_residual / (1 - modulus)``.
    policy_loss_bound: ``[]`` ``>= max_s V*(s) - V^pi(s)`` for ``policy``:
      ``(2 modulus bellman_residual + g) / (1 - modulus)`` (``g`` bounds
      ``||T V - T_pi V||``; rounding-level for the greedy policy).
    policy: ``int32 [S]`` the greedy policy of the accurately computed
      q-values (first maximizer among valid actions), or the policy given.
    modulus: ``[]`` an upper bound on ``gamma'``, gamma times the largest
      stored row sum over valid actions.
    rounding: ``[]`` the part of ``bellman_residual`` due to rounding (the
      largest per-``(s, a)`` error bound of the accurate pass).
  """

  bellman_residual: jax.Array
  error_bound: jax.Array
  policy_loss_bound: jax.Array
  policy: jax.Array
  modulus: jax.Array
  rounding: jax.Array


# ------------------------------------------------------------ helpers
def _cast_mdp(mdp: TabularMDP, dtype) -> TabularMDP:
  """The MDP with every float leaf cast to ``dtype`` (indices, mask kept)."""
  def cast(x):
    if x is not None and jnp.issubdtype(x.dtype, jnp.floating):
      return x.astype(dtype)
    return x
  return jax.tree_util.tree_map(cast, mdp)


def _up(x, k: int):
  """``x >= 0`` times ``1 + k u`` (``k >= 2`` makes one rounded result an
  upper bound of the exact one; larger ``k`` covers ``k - 1`` roundings)."""
  u = cp.unit_roundoff(x.dtype)
  return x * jnp.asarray(1 + k * u, x.dtype)


def resolve_method(mdp_dtype, values_dtype, method: str) -> tuple[str, DTypeLike]:
  """``(method, dtype)`` of the accurate pass (static): ``"auto"`` picks
  plain float64 when x64 is on, compensated arithmetic otherwise (in the
  wider of the two dtypes)."""
  check_choice("method", method, METHODS)
  wide = jnp.promote_types(mdp_dtype, values_dtype)
  # jax.config's options are properties added at runtime (unknown to mypy).
  x64 = jax.config.jax_enable_x64  # type: ignore[attr-defined]
  if method == "auto":
    method = "float64" if x64 else "compensated"
  if method == "float64":
    if not x64:
      raise InvalidMDPError(
          "method = 'float64': needs jax_enable_x64 (use 'compensated' or 'auto')")
    return method, jnp.float64
  return method, wide


def _residual_compensated(mdp: TabularMDP, v):
  """``(d [S, A], err [S, A], rho_up [S, A])`` in ``v.dtype`` (compensated)."""
  dtype = v.dtype
  u = cp.unit_roundoff(dtype)
  probs, rewards = mdp.probs.astype(dtype), mdp.rewards.astype(dtype)
  gamma = mdp.discount.astype(dtype)
  s, a = rewards.shape
  # (dot2 fallback, dense: v [S] broadcasts against probs [S, A, S], split once)
  vals = v[mdp.next_states] if mdp.is_sparse else v
  n = probs.shape[-1]
  sliced = None if mdp.is_sparse else cp.matvec_and_row_sums(probs.reshape(s * a, n), v)
  if sliced is None:
    e, rho = cp.dot2_and_sum2(probs, vals)                # E, row sums (one read)
  else:                                                   # dense: sliced matrix products
    e, rho = (Compensated(*(t.reshape(s, a) for t in c)) for c in sliced)
  gp, ge1, ge2, ge3 = cp.two_prod(gamma, e.hi)            # gamma E_hi exactly
  t1, f1 = cp.two_sum(rewards, -v[:, None])               # r - v exactly
  t2, f2 = cp.two_sum(t1, gp)
  g3 = gamma * e.lo                                       # within u |g3|
  small = (f1, f2, ge1, ge2, ge3, g3)
  low = ((((f1 + f2) + ge1) + ge2) + ge3) + g3
  abs_low = sum(jnp.abs(t) for t in small)
  d = t2 + low
  g6 = cp.gamma_n(7, u)
  err = (u / (1 - u) * jnp.abs(d) + g6 / (1 - g6) * abs_low + u * jnp.abs(g3)
         + gamma * e.err) * (1 + 8 * u) + cp.underflow_slack(dtype, 4 * n + 16)
  rho_up = _up(jnp.abs(rho.hi + rho.lo) + rho.err, 3)
  return d, err.astype(dtype), rho_up


def _residual_float64(mdp: TabularMDP, v):
  """``(d [S, A], x [S, A], sums, row_max)`` in float64 (plain arithmetic):
  ``d = r + gamma E - v`` and ``x = |gamma E| + |q| + |d|``, whose rounding
  bound is :func:`_float64_error` of ``x``; ``sums [S, A]`` the row sums
  and ``row_max`` None (dense: the tail reduces them with the residual), or
  ``sums`` None and ``row_max`` the bound on the largest row sum (sparse)."""
  m = _cast_mdp(mdp, jnp.float64)
  v = v.astype(jnp.float64)
  gamma = m.discount
  sums = row_max = None
  if m.next_states is not None:  # m.is_sparse
    # The backups' gather (one 1-D gather per index column: 0.55-0.65x the
    # time of the [S, A, K] gather on a Garnet S=2000, A=8, K=5).
    e = sparse_expectation(v, m.next_states, m.probs)
    _, row_max, _ = row_sum_stats(m)                      # >= every valid row sum
  elif mdp.probs.dtype != jnp.float64:
    # E and the row sums (a sum's rounding bound holds in any order). A
    # narrower stored model (float32, bfloat16): each reduction converts its
    # entries on the fly, and the row sums read the model through an
    # optimization barrier, so that XLA neither shares nor materializes a
    # float64 copy of ``probs`` (2x its size, written and read back): the
    # products and sums are the same float64 operations as on the copy.
    # In-process A/B on the 2-core AMD EPYC, float32 dense A=8, the pass
    # without the rest of the certificate: S=400 0.78-0.95 -> 0.41-0.43 ms,
    # S=1000 16.4-18.0 -> ~3.9 ms (the copy's 64 MB write dominated). (On
    # the 2-core Intel Xeon, 2026-12-06, a copy to float64 and the
    # four-column product below: 1.4-4.6x this at S=200-1000.)
    p = mdp.probs
    e = jnp.sum(p.astype(jnp.float64) * v, axis=-1)
    sums = jnp.sum(jax.lax.optimization_barrier(p), axis=-1, dtype=jnp.float64)
  else:
    # One read: the expectations and the row sums as two columns of one
    # matrix product.
    e, sums = dense_expectation_and_row_sums(m.probs, v)
  ge = gamma * e
  q = m.rewards + ge
  d = q - v[:, None]
  return d, jnp.abs(ge) + jnp.abs(q) + jnp.abs(d), sums, row_max


def _float64_error(x, gamma, row_max, v_max, n: int):
  """The float64 pass's rounding bound of one ``d`` (``|fl(d) - d|``) from
  its ``x`` (any shape; monotone in ``x``): ``(gamma rho (gamma_n + 2u)
  ||V|| + u x) (1 + 8u)`` plus the underflow slack of its ``n + 8``
  operations (the relative model fails below the smallest normal number, and
  XLA on CPU flushes subnormal results to zero: values of ~1e-307 had their
  residual flushed to 0 and were certified exact)."""
  u = cp.unit_roundoff(jnp.float64)
  gn = cp.gamma_n(n, u)
  return ((gamma * row_max * (gn + 2 * u) * v_max + u * x) * (1 + 8 * u)
          + cp.underflow_slack(jnp.float64, n + 8))


def _max0(*xs):
  """The largest entry of each of the ``[S]`` arrays ``xs`` (``0`` for an
  empty one; a NaN propagates), in ONE reduction."""
  z = jnp.zeros((), xs[0].dtype)
  return jax.lax.reduce(tuple(xs), (z,) * len(xs),
                        lambda a, b: tuple(jnp.maximum(p, q) for p, q in zip(a, b)), (0,))


def _certify_parts(mdp: TabularMDP, v, policy, method: str):
  """``(Certificate in v.dtype, d [S, A] in the pass's dtype)``.

  The per-state quantities (the largest ``d`` and its action, the largest
  rounding bound, the row-sum statistics) come from one reduction over the
  actions, the global ones from two reductions over the states: on XLA:CPU
  every small reduction is a kernel of its own, and the pass is short (16
  kernels after the product against 26 with separate reductions; dense
  float64, A=8, S=100 / 200 / 400 / 1000: 44 / 88 / 230 / 1033 against 49 /
  109 / 275 / 1077 us, the product alone ~212 us at S=400; in-process,
  2-core Intel Xeon, 2026-12-06). The rounding bound of a
  float64 pass, :func:`_float64_error`, is monotone in ``x``, so its
  largest value over the actions is its value at the largest ``x``.
  """
  out_dtype = v.dtype
  method, dtype = resolve_method(mdp.rewards.dtype, v.dtype, method)
  mask = mdp.action_mask
  gamma = mdp.discount.astype(dtype)
  extra: tuple[jax.Array, ...]
  if method == "float64":
    d, w, sums, row_max = _residual_float64(mdp, v)
    extra = () if sums is None else (sums, jnp.abs(sums - 1.0))
  else:
    d, w, rho_up = _residual_compensated(mdp, v.astype(dtype))
    extra = (rho_up,)
  carried = (w,) if policy is None else ()
  mx, argmax, at, maxima = bellman.masked_max_argmax_with(d, mask, carried, (w,) + extra)
  w_s = maxima[0]                                         # the largest bound's input per state
  if policy is None:
    pol, d_pi, w_pi = argmax, mx, at[0]
  else:
    pol = policy.astype(jnp.int32)
    d_pi = jnp.take_along_axis(d, pol[:, None], axis=1)[:, 0]
    w_pi = jnp.take_along_axis(w, pol[:, None], axis=1)[:, 0]
  if method == "float64":
    n = mdp.probs.shape[-1]
    if sums is None:
      (v_max,) = _max0(jnp.abs(v.astype(dtype)))
    else:
      v_max, sums_max, dev_max = _max0(jnp.abs(v.astype(dtype)), maxima[1], maxima[2])
      row_max = row_bounds(n, sums_max, dev_max, n, jnp.float64)[1]
    rho = row_max

    def err(x):
      return _float64_error(x, gamma, row_max, v_max, n)
  else:
    (rho,) = _max0(maxima[1])

    def err(x):
      return x
  e_s, err_pi = err(w_s), err(w_pi)
  res_max, gap_max, e_max = _max0(jnp.abs(mx) + e_s, (mx - d_pi) + e_s + err_pi, e_s)
  res_up = _up(res_max, 3)
  modulus = _up(gamma * rho, 2)
  ok = discount_ok(gamma) & (modulus < 1) & jnp.isfinite(res_up)
  one_minus = jnp.where(ok, 1 - modulus, 1)
  bound = _up(res_up / one_minus, 4)
  gap = _up(gap_max, 4)
  loss = _up((2 * modulus * res_up + gap) / one_minus, 6)
  inf = jnp.asarray(jnp.inf, dtype)
  bound, loss = jnp.where(ok, bound, inf), jnp.where(ok, loss, inf)
  res_up = jnp.where(jnp.isnan(res_up), inf, res_up)
  modulus = jnp.where(jnp.isnan(modulus), inf, modulus)
  rounding = _up(e_max, 2)
  cert = Certificate(
      bellman_residual=cp.round_up(res_up, out_dtype),
      error_bound=cp.round_up(bound, out_dtype),
      policy_loss_bound=cp.round_up(loss, out_dtype),
      policy=pol,
      modulus=cp.round_up(modulus, out_dtype),
      rounding=cp.round_up(rounding, out_dtype))
  return cert, d


# ------------------------------------------------------------- certify
def certify(mdp: TabularMDP, values: jax.Array, *, policy: jax.Array | None = None,
            method: str = "auto") -> Certificate:
  """Certifies values ``V [S]`` with one accurate Bellman residual pass.

  Args:
    mdp: one MDP (``S`` states, ``A`` actions; dense or sparse; ``jax.vmap``
      for batches).
    values: ``[S]`` the values to certify (any float dtype; e.g. from a
      float32 or bfloat16 solve).
    policy: optional ``int [S]`` policy whose loss ``V* - V^pi`` to bound
      (default: the greedy policy of ``values``).
    method: ``"auto"`` (plain float64 with its rounding bound when x64 is
      on, else compensated), ``"compensated"`` or ``"float64"`` (static).

  Returns:
    :class:`Certificate` (bounds in ``values``' dtype, rounded up). See the
    module docstring for the inequalities and the rounding analysis.
  """
  check_mdp_structure(mdp)
  check_transitions(mdp)
  s = mdp.rewards.shape[0]
  vdtype = values.dtype if (hasattr(values, "dtype") and jnp.issubdtype(
      values.dtype, jnp.floating)) else mdp.rewards.dtype
  values = as_values("values", values, (s,), vdtype)
  if policy is not None:
    policy = as_policy(policy, mdp, deterministic=True)
  resolve_method(mdp.rewards.dtype, vdtype, method)
  return _certify(mdp, values, policy, method=method)


@functools.partial(jax.jit, static_argnames=("method",))
def _certify(mdp, values, policy, *, method):
  return _certify_parts(mdp, values, policy, method)[0]


# ------------------------------------------------- speculative solving
def _capped_solve(solver_, op, v0, tol, cap) -> Solution:
  """``iterative_solve`` with a TRACED cap ``cap`` on the number of steps."""
  valid = op.valid()

  def cond(st):
    return valid & (st.iteration < cap) & ~solver_.done(st, tol)

  st = jax.lax.while_loop(cond, lambda st: solver_.step(op, st), solver_.init(op, v0))
  return solver_.finalize(op, st, tol, valid)


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def speculative_value_iteration(mdp: TabularMDP, *, tol: float = 1e-6,
                                max_iters: int = 10_000, spec_dtype: Any = None,
                                stop: str = "span", max_rounds: int = 8,
                                method: str = "auto",
                                v0: Optional[jax.Array] = None,
                                adjoint: Optional[ImplicitAdjoint] = None) -> Solution:
  """Value iteration in a cheap precision, certified and polished accurately.

  See the module docstring for the phases (speculate, certify, defect
  correction rounds, float64 polish) and the certificate.

  Args:
    mdp: one MDP (``S`` states, ``A`` actions; dense or sparse; ``jax.vmap``
      for batches); discount in ``[0, 1)``.
    tol: bound on ``max_s |V(s) - V*(s)|`` to certify (can be traced).
    max_iters: static cap on the backups of all phases together.
    spec_dtype: the cheap precision (``jnp.float32`` by default;
      ``jnp.bfloat16``, ``jnp.float16`` or ``jnp.float64`` accepted).
    stop: the stopping rule of the VI phases, ``"span"`` (default) or
      ``"sup"`` (see :func:`jaxrl_dp.value_iteration`).
    max_rounds: static cap on defect-correction rounds (``>= 0``).
    method: the certificate's arithmetic (:func:`certify`).
    v0: optional start values ``[S]``.
    adjoint: how derivatives solve their linear system
      (:class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint`, static; default
      GMRES).

  Derivatives: ``jax.grad``, ``jax.vjp`` and ``jax.jvp`` work by the
  implicit function theorem at the fixed point of ``T_pi`` for the returned
  policy in the model's dtype, as for :func:`jaxrl_dp.value_iteration`
  (``v0`` and ``tol`` carry none); no phase is differentiated.

  Returns:
    :class:`Solution` in the model's dtype: ``values [S]``, ``q [S, A]`` (of
    the returned values), ``policy int32 [S]`` (the certificate's greedy
    policy), ``iterations`` (backups, all phases), ``residual`` (the
    certified bound on ``||T V - V||``), ``converged`` (``error_bound <=
    tol``), ``error_bound`` (the accurate certificate's; or, when the
    speculation ran in the model's dtype and met ``tol`` by itself, value
    iteration's solution as it is, its own bound and residual).
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_tol(tol)
  check_choice("stop", stop, STOP_RULES)
  max_iters = check_max_iters(max_iters)
  max_rounds = check_int("max_rounds", max_rounds, minimum=0, maximum=1000)
  dtype = mdp.rewards.dtype
  spec = jnp.dtype(jnp.float32 if spec_dtype is None else spec_dtype)
  if not jnp.issubdtype(spec, jnp.floating):
    raise InvalidMDPError(f"spec_dtype = {spec_dtype!r}: expected a float dtype")
  if jnp.finfo(spec).bits > jnp.finfo(dtype).bits:
    spec = jnp.dtype(dtype)
  resolve_method(dtype, dtype, method)
  if v0 is not None:
    v0 = as_values("v0", v0, mdp.rewards.shape[:1], dtype)
  tol = tol_arg(tol, dtype)
  return _speculative(mdp, tol, v0, max_iters=max_iters, spec=spec.name, stop=stop,
                      max_rounds=max_rounds, method=method, adjoint=check_adjoint(adjoint))


def _speculate(mdp, tol, v0, max_iters, spec, stop) -> Solution:
  """Phase 1 of :func:`speculative_value_iteration`: value iteration on the
  model cast to ``spec``, as :func:`~jaxrl_dp.value_iteration` runs it (from
  the default start, zeros, the first backup is read from the rewards alone:
  its ``first_step``, one pass over the transitions fewer)."""
  zero_start = v0 is None
  v0 = initial_values(v0, mdp.rewards)
  spec = jnp.dtype(spec)
  return iterative_solve(value_iteration_solver(stop, zero_start),
                         NominalOperator(_cast_mdp(mdp, spec)), v0.astype(spec),
                         tol.astype(spec), max_iters=max_iters)


def _polish(mdp, tol, v0, sol, max_iters, spec, stop, max_rounds, method) -> Solution:
  """Phases 2-4 of :func:`speculative_value_iteration` after the speculation
  ``sol`` (:func:`_certify_and_polish`)."""
  v0 = initial_values(v0, mdp.rewards)
  spec = jnp.dtype(spec)
  return _certify_and_polish(mdp, _cast_mdp(mdp, spec), sol, tol, v0,
                             value_iteration_solver(stop), discount_ok(mdp.discount),
                             max_iters, spec, max_rounds, method)


@functools.partial(jax.jit, static_argnames=("max_iters", "spec", "stop",
                                             "max_rounds", "method", "adjoint"))
def _speculative(mdp, tol, v0, *, max_iters, spec, stop, max_rounds, method, adjoint=None):
  args = (max_iters, spec, stop, max_rounds, method)

  def run(m, tol_, v0_):
    sol = _speculate(m, tol_, v0_, max_iters, spec, stop)
    if jnp.dtype(spec) == jnp.dtype(m.rewards.dtype):
      # The speculation ran in the working precision: its own bound is
      # already a certificate of the returned values (rounding included).
      # When it meets ``tol`` there is nothing to verify (one certificate
      # pass saved: ~10 backups on a dense float32 model); otherwise certify
      # and polish.
      valid = discount_ok(m.discount)
      return jax.lax.cond(valid & sol.converged, lambda s: s,
                          lambda s: _polish(m, tol_, v0_, s, *args), sol)
    return _polish(m, tol_, v0_, sol, *args)

  # ``keep_q``: both outcomes' q is ``r + gamma P values`` of their values.
  # (``v0=None``, the zero start, is an empty leaf: it stays None inside.)
  return implicit_greedy_solution(run, mdp, tol, v0, adjoint=adjoint, keep_q=True)


def _certify_and_polish(mdp, mdp_s, sol, tol, v0, vi, valid, max_iters, spec, max_rounds,
                        method):
  """Phases 2-4 of :func:`speculative_value_iteration` after the speculation
  ``sol`` (``mdp_s`` the model in ``spec``, ``vi`` the value-iteration solver,
  ``v0`` the start values, ``valid`` the discount's check)."""
  dtype = mdp.rewards.dtype
  v = sol.values.astype(dtype)
  v = jnp.where(jnp.isfinite(v), v, v0)
  # 2. certify, and 3. defect correction: V* - V is the optimal value of the
  # MDP with rewards d. One loop whose step certifies a candidate (the
  # speculation first, then each corrected one) and, while the rounds go on,
  # solves the next correction: the certificate pass is in the program once.
  def round_cond(c):
    return c[-1]

  def round_body(c):
    v_try, v_, cert_, d_, it, k, _ = c
    cert_new, d_new = _certify_parts(mdp, v_try, None, method)
    first = k == 0
    better = first | (cert_new.error_bound < cert_.error_bound)
    pick = lambda new, old: jax.tree_util.tree_map(
        lambda a, b: jnp.where(better, a, b), new, old)
    improving = first | (cert_new.error_bound <= 0.5 * cert_.error_bound)
    v_, cert_, d_ = pick(v_try, v_), pick(cert_new, cert_), pick(d_new, d_)
    more = (valid & (k < max_rounds) & (cert_.error_bound > tol)
            & (it < max_iters) & improving)

    def correction(_):
      rew = jnp.where(mdp.action_mask, d_, 0).astype(spec)
      mdp_c = mdp_s.replace(rewards=rew, transition_rewards=None)
      tol_c = (0.25 * jnp.minimum(tol, cert_.error_bound)).astype(spec)
      # (A zero cap where no round is due: under ``vmap`` the cond is a select.)
      corr = _capped_solve(vi, NominalOperator(mdp_c), jnp.zeros_like(v0, spec),
                           tol_c, jnp.where(more, max_iters - it, 0))
      step = jnp.where(jnp.isfinite(corr.values), corr.values, 0).astype(dtype)
      return v_ + step, it + corr.iterations

    v_next, it = jax.lax.cond(more, correction, lambda _: (v_, it), None)
    return v_next, v_, cert_, d_, it, k + 1, more

  # The best-so-far slots start as placeholders (zeros): round 0 always
  # replaces them with the speculation and its certificate.
  cert0 = jax.eval_shape(lambda: _certify_parts(mdp, v, None, method))
  cert0, d0 = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), cert0)
  carry = (v, v, cert0, d0, sol.iterations, jnp.asarray(0, jnp.int32), jnp.asarray(True))
  _, v, cert, _, iters, _, _ = jax.lax.while_loop(round_cond, round_body, carry)

  # 4. plain VI in the working precision when it is float64.
  if jnp.finfo(dtype).bits >= 64 and spec != jnp.dtype(dtype):
    need = valid & (cert.error_bound > tol) & (iters < max_iters)

    def polish(c):
      v_, cert_, it = c
      cap = jnp.where(need, max_iters - it, 0)
      sol_h = _capped_solve(vi, NominalOperator(mdp), v_, tol, cap)
      cert_h, _ = _certify_parts(mdp, sol_h.values, None, method)
      better = cert_h.error_bound < cert_.error_bound
      pick = lambda new, old: jax.tree_util.tree_map(
          lambda a, b: jnp.where(better, a, b), new, old)
      return pick(sol_h.values, v_), pick(cert_h, cert_), it + sol_h.iterations

    v, cert, iters = jax.lax.cond(need, polish, lambda c: c, (v, cert, iters))

  op = NominalOperator(mdp)
  bound = jnp.where(valid, cert.error_bound, jnp.inf).astype(dtype)
  return Solution(values=v, q=op.q_values(v), policy=cert.policy,
                  iterations=iters, residual=cert.bellman_residual,
                  converged=valid & (bound <= tol), error_bound=bound)


__all__ = ["Certificate", "certify", "resolve_method",
           "speculative_value_iteration"]
