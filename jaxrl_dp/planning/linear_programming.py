"""Linear programming for discounted MDPs: a host-side reference method.

The primal LP of a discounted MDP (Puterman, section 6.9)::

  min_V  sum_s mu(s) V(s)
  s.t.   V(s) >= r(s, a) + gamma sum_s' P(s' | s, a) V(s')   for every valid (s, a)

has the optimal values ``V*`` as its unique solution for any ``mu > 0``. It is
solved here by HiGHS through :func:`scipy.optimize.linprog` on the HOST, in
float64, with the constraint matrix stored as a ``scipy.sparse`` CSR matrix
(``S*A`` rows, ``S`` columns, ``S*A*(K + 1)`` nonzeros: a sparse MDP stays
sparse). It is meant as an independent reference for small and medium MDPs
(tests, benchmarks, checking a fast solver): it is neither jittable nor
vmappable, and it refuses traced input with an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.options import check_tol, is_concrete
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution



#: Rewards above this (absolute) are scaled into ``[-1, 1]`` by a power of two
#: before HiGHS sees them (which reads ``|b| >= 1e20`` as infinite); smaller
#: ones go as they are (HiGHS's absolute tolerances then stay in reward units).
LP_REWARD_SCALE_LIMIT = 1e12

def host_arrays(mdp: TabularMDP, what: str):
  """``(next_states [S, A, K] or None, probs, rewards [S, A], gamma, mask)``
  of one MDP as float64 NumPy (the MDP as stored), refusing tracers."""
  if not is_concrete(mdp):
    raise InvalidMDPError(
        f"{what} runs on the host (NumPy/SciPy) and cannot be traced: call it "
        f"outside jax.jit / jax.vmap / jax.grad (it is a reference method, not "
        f"a jittable kernel)")
  ns = None if mdp.next_states is None else np.asarray(mdp.next_states, np.int64)
  p = np.asarray(mdp.probs, np.float64)
  r = np.asarray(mdp.rewards, np.float64)
  gamma = float(np.asarray(mdp.discount, np.float64))
  mask = np.asarray(mdp.action_mask, bool)
  return ns, p, r, gamma, mask


def host_expected_next(ns, p, v):
  """``E[v(s') | s, a]`` in float64: ``[S, A]``."""
  if ns is None:
    return np.einsum("sat,t->sa", p, v)
  return np.sum(p * v[ns], axis=-1)


def host_residual_bound(ns, p, r, gamma, mask, v, *, policy=None):
  """Float64 certificate of values ``v [S]`` (NumPy, on the host).

  Returns ``(q [S, A], residual, bound)``: ``q = r + gamma P v``, the Bellman
  residual ``||T v - v||_inf`` (``T_pi`` for an ``int [S]`` ``policy``), and
  ``bound = ((1 + u) residual + delta) / (1 - gamma rho) (1 + 4u)`` on
  ``||v - V*||`` (``V^pi``), the formula of
  :func:`jaxrl_dp.core.iteration.bellman_residual_bound` with the float64
  rounding ``delta = gamma rho (gamma_n + 2u) ||v|| + 2u ||T v||`` (``n`` the
  number of nonzero terms of one expectation, ``rho`` the largest row sum,
  slack ``1 + 8u``). ``inf`` unless ``0 <= gamma rho < 1`` and finite.
  """
  u = np.finfo(np.float64).eps / 2
  with np.errstate(all="ignore"):
    q = r + gamma * host_expected_next(ns, p, v)
    if policy is None:
      rows_p = np.where(mask[..., None], p, 0.0)
      tv = np.max(np.where(mask, q, -np.inf), axis=1)
    else:
      idx = np.arange(r.shape[0])
      rows_p = p[idx, policy][:, None, :]
      tv = q[idx, policy]
    n = int(np.max(np.sum(rows_p != 0, axis=-1)))
    rho = float(np.max(np.sum(rows_p, axis=-1))) * (1 + 2 * n * u)
    residual = float(np.max(np.abs(tv - v)))
    nu = (n + 1) * u
    gamma_n = nu / (1 - nu)
    slack = 1 + 8 * u
    delta = (gamma * rho * (gamma_n + 2 * u) * np.max(np.abs(v))
             + 2 * u * np.max(np.abs(tv))) * slack
    modulus = gamma * rho
    if not (0 <= modulus < 1):
      return q, residual, float("inf")
    bound = ((1 + u) * residual + delta) / (1 - modulus) * (1 + 4 * u)
  return q, residual, (float(bound) if np.isfinite(bound) else float("inf"))


def round_up(x: float, dtype) -> np.ndarray:
  """``x`` in ``dtype``, rounded up (a bound stays a bound after the cast)."""
  y = np.asarray(x, dtype)
  if np.isfinite(y) and float(y) < x:
    y = np.nextafter(y, np.asarray(np.inf, dtype))
  return y


@solver(infinite_horizon=True, kind="control", reverse_mode=False)
def linear_programming(mdp: TabularMDP, *, weights: Any = None,
                       tol: float | None = None) -> Solution:
  """Optimal values by the primal LP, solved by HiGHS on the host (reference).

  ``min_V sum_s mu(s) V(s)`` subject to ``V(s) >= r(s, a) + gamma sum_s' P(s'
  | s, a) V(s')`` for every VALID ``(s, a)`` (masked actions give no
  constraint), with :func:`scipy.optimize.linprog` (``method="highs"``) in
  float64 on the host; the constraint matrix is sparse CSR (``S*A`` rows,
  ``S*A*(K + 1)`` nonzeros). A reference method for small MDPs: NOT
  jittable or vmappable (traced input raises :class:`InvalidMDPError`), no
  derivatives; for large MDPs use :func:`policy_iteration` or
  :func:`value_iteration`.

  Certificate: the returned values (cast to the MDP's dtype) are read back in
  float64 and ``error_bound`` is the Bellman-residual bound ``((1 + u)
  residual + delta) / (1 - gamma rho)`` of
  :func:`jaxrl_dp.core.iteration.bellman_residual_bound`, with ``residual =
  ||T V - V||_inf`` and its float64 rounding ``delta`` computed in NumPy
  (:func:`host_residual_bound`), rounded up to the output dtype. It reflects
  HiGHS's feasibility tolerance (~1e-7 relative at worst) and the cast to
  float32 when the MDP is float32.

  Args:
    mdp: one concrete MDP (``S`` states, ``A`` actions), discount in [0, 1).
    weights: optional ``mu [S]``, positive (default uniform ``1 / S``).
    tol: optional bound required of ``error_bound`` for ``converged``
      (default: HiGHS reports an optimal solution and the bound is finite).

  Returns:
    :class:`Solution` (arrays in the MDP's float dtype): ``values [S]``,
    ``q [S, A]`` of those values, ``policy int32 [S]`` greedy (first maximizer
    among valid actions), ``iterations`` HiGHS's simplex/IPM iterations,
    ``residual = ||T V - V||_inf``, ``converged``, ``error_bound``.

  Raises:
    InvalidMDPError: traced input, bad ``weights`` or ``tol``.
    InsufficientMemoryError: a dense MDP whose ``S*A x S`` constraint matrix
      (and HiGHS's copies) would not fit.
  """
  import jax.numpy as jnp
  import scipy.optimize
  import scipy.sparse

  check_solver_input(mdp, infinite_horizon=True)
  if tol is not None:
    check_tol(tol)
  ns, p, r, gamma, mask = host_arrays(mdp, "linear_programming")
  s, a = r.shape
  if ns is None:
    check_dense_size("linear_programming: LP constraints [S*A, S]", (s, a, s),
                     np.float64, copies=3,
                     instead="policy_iteration(evaluation='krylov') or the "
                     "sparse layout (mdp.to_sparse() keeps the same rows)")
  if weights is None:
    mu = np.full(s, 1.0 / s)
  else:
    mu = np.asarray(weights, np.float64)
    if mu.shape != (s,) or not np.all(np.isfinite(mu)) or not np.all(mu > 0):
      raise InvalidMDPError(
          f"weights: expected {s} finite positive numbers (shape ({s},)), got "
          f"shape {mu.shape}" + ("" if mu.shape != (s,) else
                                 f" with min {float(np.min(mu))!r}"))
  if not (0.0 <= gamma < 1.0):
    raise InvalidMDPError(f"discount = {gamma!r}: expected [0, 1) for the LP")
  sa = np.flatnonzero(mask.reshape(-1))  # valid (s, a) pairs
  rows_s = sa // a
  if ns is None:
    cols = np.broadcast_to(np.arange(s), (s, a, s)).reshape(s * a, s)[sa]
    vals = p.reshape(s * a, s)[sa]
  else:
    k = ns.shape[-1]
    cols = ns.reshape(s * a, k)[sa]
    vals = p.reshape(s * a, k)[sa]
  m = sa.size
  row_idx = np.repeat(np.arange(m), cols.shape[1])
  # -(V(s) - gamma P V) <= -r  (duplicates in a row are summed by CSR).
  a_ub = scipy.sparse.csr_matrix(
      (np.concatenate([gamma * vals.reshape(-1), -np.ones(m)]),
       (np.concatenate([row_idx, np.arange(m)]),
        np.concatenate([cols.reshape(-1), rows_s]))), shape=(m, s))
  b_ub = -r.reshape(-1)[sa]
  # HiGHS reads |b| >= 1e20 as infinite (rewards of 1e20 gave NaN values):
  # large rewards are scaled by a power of two (exact) into [-1, 1]; the
  # values are scaled back and certified below on the original rewards.
  r_max = float(np.max(np.abs(b_ub))) if b_ub.size else 0.0
  scale = 2.0 ** np.ceil(np.log2(r_max)) if r_max > LP_REWARD_SCALE_LIMIT else 1.0
  res = scipy.optimize.linprog(mu, A_ub=a_ub, b_ub=b_ub / scale, bounds=(None, None),
                               method="highs")
  dtype = np.dtype(mdp.rewards.dtype)
  ok = res.status == 0 and res.x is not None
  v = scale * np.asarray(res.x if res.x is not None else np.full(s, np.nan), np.float64)
  v_out = v.astype(dtype)
  q, residual, bound = host_residual_bound(ns, p, r, gamma, mask,
                                           v_out.astype(np.float64))
  if not ok:
    bound = float("inf")
  converged = ok and np.isfinite(bound) and (tol is None or bound <= float(tol))
  policy = np.argmax(np.where(mask, q, -np.inf), axis=1).astype(np.int32)
  return Solution(values=jnp.asarray(v_out), q=jnp.asarray(q.astype(dtype)),
                  policy=jnp.asarray(policy),
                  iterations=jnp.asarray(int(getattr(res, "nit", 0) or 0),
                                         jnp.int32),
                  residual=jnp.asarray(residual, dtype),
                  converged=jnp.asarray(bool(converged)),
                  error_bound=jnp.asarray(round_up(bound, dtype)))
