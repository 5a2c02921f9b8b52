"""R2PVI on linear d-rectangular regularized robust MDPs (d-RRMDPs), with the
PEVI and DRPVI (TV ball) baselines.

Model (Tang, Liu, Xu, ICML 2025). A finite-horizon linear MDP with features
``phi(s, a)`` in the probability simplex of ``R^D``: ``r_h(s, a) = phi^T
theta_h`` and ``P_h(. | s, a) = sum_i phi_i(s, a) mu_{h,i}(.)``. The
d-rectangular regularized robust Bellman update perturbs every factor
``mu_{h,i}`` separately, paying ``lam * D(mu || mu_{h,i})``::

  Q_h(s, a) = phi(s, a)^T (theta_h + z_h),
  z_{h,i}   = inf_mu E_mu[V_{h+1}] + lam D(mu || mu_{h,i}),

and the inner infimum has a scalar dual (``TV = 1/2 L1``; ``min_s`` over all
states, since a TV perturbation may move mass anywhere; KL and chi-square keep
``mu << mu_{h,i}``)::

  TV:   z_i = E_{mu_i}[ min(V, min_s V(s) + lam) ]
  KL:   z_i = -lam log E_{mu_i}[ exp(-V / lam) ]
  chi2: z_i = sup_alpha  E_{mu_i}[V]_alpha - Var_{mu_i}([V]_alpha) / (4 lam),
        [V]_alpha = min(V, alpha).

R2PVI (offline, pessimistic) replaces each ``E_{mu_i}[f(V)]`` by a ridge
regression of the targets ``f(V_{h+1}(s'_tau))`` on ``phi_tau`` and subtracts
the d-rectangular bonus ``Gamma_h(s, a) = beta sum_i ||phi_i(s, a) e_i||_{
Lambda_h^{-1}} = beta sum_i phi_i(s, a) sqrt([Lambda_h^{-1}]_ii)``, with
``Lambda_h = sum_tau phi_tau phi_tau^T + ridge I``; ``Q`` is clipped to
``[0, H - h]`` (``h = 0..H-1``, so ``H - h`` steps remain) and the policy is
greedy. PEVI (Jin, Yang, Wang 2021) regresses ``r + V(s')`` and subtracts the
elliptical bonus ``beta ||phi||_{Lambda^{-1}}`` (``bonus="d_rectangular"``
gives the bonus above). DRPVI (Liu, Xu 2024) is the constrained counterpart for
the TV ball ``TV(mu, mu_i) <= rho``: ``z_i = max_alpha E_{mu_i}[V]_alpha -
rho (alpha - min_s V(s))``.

Data layout (a documented choice). Next states are indices into a finite state
table (what every experiment here evaluates on): an :class:`OfflineDataset`
holds per step ``features [H, N, D]``, ``rewards [H, N]``, ``next_states int32
[H, N]`` and the feature table ``feature_table [S, A, D]`` of every (s, a). Every
regression target is a function of ``V_{h+1}(s')``: TV, KL and PEVI compute
``sum_tau phi_tau f(V(s'_tau))`` per sample (a gather and a mat-vec, O(N D)
per step); chi-square and DRPVI, whose alpha search needs sums over the samples
sorted by ``V(s')``, use the per-step aggregate ``M_h [S, D] = sum_tau phi_tau
1{s'_tau = s}`` (one scatter-add, built once), so their search costs O(S D^2)
per step whatever N. Optional ``known_q [S, A]``
with ``known_mask`` marks actions whose value is known exactly and is not
learned (an action that ends the episode with a known reward, e.g. exercising
an American option; absorbing states); samples of such actions must not be in
the dataset.

Exactness of the dual steps (given the regressed quantities):
  * TV, KL: closed forms. KL estimates ``E exp(-V / lam) = 1 + E expm1(-V /
    lam)`` by regressing ``expm1(-V / lam)``: the constant 1 (a known integral
    of a probability measure) is not shrunk by the ridge. This differs from a
    ridge regression of ``exp(-V / lam)`` itself by the ridge deficit ``1 -
    Lambda^{-1} sum phi`` (``O(ridge / n)``) and is what makes R2PVI-KL tend
    to PEVI as ``lam -> inf`` at a fixed ridge (the plain regression gives
    ``-lam log(1 - deficit) -> inf``). It is evaluated without cancellation
    (see :func:`kl_dual_update`); ``z`` is then clipped to ``[0, H - h - 1]``
    (the range of ``V_{h+1}``), i.e. the paper's clip of the regressed
    exponential moment to ``[exp(-(H - h - 1) / lam), 1]``.
  * chi-square: the per-dimension supremum over ``alpha`` of the regressed
    objective ``z1(alpha) - (z2(alpha) - z1(alpha)^2) / (4 lam)`` (``z1, z2``
    the ridge estimates of ``E[V]_alpha``, ``E[V]_alpha^2``) is computed
    EXACTLY: between consecutive sorted values of ``V`` both are linear in
    ``alpha`` / ``alpha^2``, so the objective is a quadratic per segment,
    maximised at an endpoint or at its clipped stationary point (no generic
    optimizer; alpha ranges over ``[min_s V, max_s V]``, which contains the
    maximiser of the population objective).
  * DRPVI's ``max_alpha`` is over a piecewise-linear function of alpha: exact
    at the sorted values of ``V``.

Everything is a pure function of arrays: the backward induction is one
``lax.scan``; ``lam``, ``beta``, ``rho`` and ``ridge`` are traced, so
``jax.vmap`` over a grid of them works (the public functions check concrete
values on the host and skip the checks under tracing).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core.reductions import nan_max
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import default_float_dtype
from jaxrl_dp.core.options import check_choice, is_concrete

DIVERGENCES = ("tv", "kl", "chi2")
BONUSES = ("elliptical", "d_rectangular")
#: Tolerance on ``sum_i phi_i = 1`` and ``phi_i >= 0`` in :func:`check_dataset`.
SIMPLEX_ATOL = 1e-5


# ------------------------------------------------------------------ types
@flax.struct.dataclass
class OfflineDataset:
  """Offline data of a finite-horizon linear MDP, per step (leading axis H).

  Attributes:
    features: ``[H, N, D]`` ``phi(s_h^tau, a_h^tau)`` (rows in the simplex).
    rewards: ``[H, N]`` observed rewards.
    next_states: ``int32 [H, N]`` indices of ``s_{h+1}^tau`` in the table.
    feature_table: ``[S, A, D]`` ``phi(s, a)`` of every state and action (rows
      in the simplex), used for the next-state values and the policy.
    action_mask: ``bool [S, A]`` valid actions (at least one per state).
    known_q: ``[S, A]`` values of the known actions (see ``known_mask``).
    known_mask: ``bool [S, A]``; ``Q_h(s, a) = known_q[s, a]`` for every h
      where True (not learned, not clipped).
  """

  features: jax.Array
  rewards: jax.Array
  next_states: jax.Array
  feature_table: jax.Array
  action_mask: jax.Array
  known_q: jax.Array
  known_mask: jax.Array

  @property
  def horizon(self) -> int:
    return self.features.shape[-3]

  @property
  def num_samples(self) -> int:
    return self.features.shape[-2]

  @property
  def dim(self) -> int:
    return self.features.shape[-1]

  @property
  def num_states(self) -> int:
    return self.feature_table.shape[-3]

  @property
  def num_actions(self) -> int:
    return self.feature_table.shape[-2]


@flax.struct.dataclass
class LinearPVIResult:
  """Result of :func:`r2pvi`, :func:`pevi` and :func:`drpvi_tv`.

  Index h is the step (0 = first decision); ``values[H]`` is 0.

  Attributes:
    weights: ``[H, D]`` ``theta_hat_h + z_h`` (``Q = phi^T w - Gamma``).
    dual: ``[H, D]`` the dual / regression part ``z_h``.
    q: ``[H, S, A]`` pessimistic Q on the feature table (clipped; known
      actions set to ``known_q``).
    values: ``[H + 1, S]`` ``max_a q`` over valid actions.
    policy: ``int32 [H, S]`` greedy policy (a time-dependent policy for a
      tabular finite-horizon model with S states).
    bonus: ``[H, S, A]`` the pessimism bonus ``Gamma_h``.
  """

  weights: jax.Array
  dual: jax.Array
  q: jax.Array
  values: jax.Array
  policy: jax.Array
  bonus: jax.Array


# ------------------------------------------------------------- validation
def _first_bad(mask: ArrayLike) -> tuple[int, ...]:
  idx = np.argwhere(mask)
  return tuple(int(i) for i in idx[0])


def _check_simplex(name: str, x: np.ndarray, atol: float) -> None:
  if not np.all(np.isfinite(x)):
    i = _first_bad(~np.isfinite(x))
    raise InvalidMDPError(f"{name}{list(i)} = {x[i]}: expected finite features")
  neg = x < -atol
  if np.any(neg):
    i = _first_bad(neg)
    raise InvalidMDPError(f"{name}{list(i)} = {x[i]:.6g}: features must lie in the "
                     f"probability simplex (entries >= 0)")
  sums = x.sum(-1)
  bad = np.abs(sums - 1.0) > atol
  if np.any(bad):
    i = _first_bad(bad)
    raise InvalidMDPError(f"{name}{list(i)}: features sum to {sums[i]:.6g}; expected "
                     f"rows in the probability simplex (sum 1 within {atol})")


def make_dataset(features: ArrayLike, rewards: ArrayLike, next_states: ArrayLike,
                 feature_table: ArrayLike, *, action_mask: ArrayLike | None = None,
                 known_q: ArrayLike | None = None, known_mask: ArrayLike | None = None,
                 validate: bool = True, atol: float = SIMPLEX_ATOL,
                 dtype: Any = None) -> OfflineDataset:
  """Builds (and by default validates) an :class:`OfflineDataset`.

  Args:
    features: ``[H, N, D]``; rewards ``[H, N]``; next_states int ``[H, N]``;
      feature_table ``[S, A, D]``.
    action_mask: ``bool [S, A]`` (default all valid; another dtype is
      refused, not cast).
    known_q, known_mask: ``[S, A]`` and ``bool [S, A]`` (default none known).
    validate: run :func:`check_dataset`.
    dtype: float dtype (default float32, float64 under ``jax_enable_x64``).

  Returns:
    The :class:`OfflineDataset`.

  Raises:
    InvalidMDPError (a ValueError): a wrong shape, features outside the simplex, a next state out
      of range, non-finite rewards, a state without a valid action.
  """
  if dtype is None:
    dtype = default_float_dtype()
  feature_table_np = np.asarray(feature_table)
  s, a = feature_table_np.shape[:2] if feature_table_np.ndim == 3 else (0, 0)
  action_mask = np.ones((s, a), bool) if action_mask is None else np.asarray(action_mask)
  known_mask = np.zeros((s, a), bool) if known_mask is None else np.asarray(known_mask)
  known_q = np.zeros((s, a)) if known_q is None else np.asarray(known_q)
  raw = dict(features=np.asarray(features), rewards=np.asarray(rewards),
             next_states=np.asarray(next_states), feature_table=feature_table_np,
             action_mask=action_mask, known_q=known_q, known_mask=known_mask)
  if validate:
    check_dataset(raw, atol=atol)
  return OfflineDataset(
      features=jnp.asarray(raw["features"], dtype),
      rewards=jnp.asarray(raw["rewards"], dtype),
      next_states=jnp.asarray(raw["next_states"], jnp.int32),
      feature_table=jnp.asarray(feature_table_np, dtype),
      action_mask=jnp.asarray(action_mask, bool),
      known_q=jnp.asarray(known_q, dtype),
      known_mask=jnp.asarray(known_mask, bool))


def _check_next_states(field: str, ns: np.ndarray, s: int) -> None:
  """Refuses a next-state index outside ``[0, s)``, naming the first."""
  bad = (ns < 0) | (ns >= s)
  if np.any(bad):
    i = _first_bad(bad)
    raise InvalidMDPError(f"{field}{list(i)} = {ns[i]}: expected an index in [0, {s})")


def check_dataset(ds: Any, *, atol: float = SIMPLEX_ATOL) -> None:
  """Host-side checks of an :class:`OfflineDataset` (or a dict of its fields).

  Args:
    ds: the dataset, or a dict of its fields.
    atol: tolerance on the feature simplex.

  Raises:
    InvalidMDPError: naming the field and the first offending entry.
  """
  get = (lambda k: np.asarray(ds[k])) if isinstance(ds, dict) else (
      lambda k: np.asarray(getattr(ds, k)))
  f, r, ns, tab = get("features"), get("rewards"), get("next_states"), get("feature_table")
  if f.ndim != 3:
    raise InvalidMDPError(f"features: expected shape [H, N, D], got {f.shape}")
  h, n, d = f.shape
  if h < 1 or n < 1 or d < 1:
    raise InvalidMDPError(f"features: expected H, N, D >= 1, got shape {f.shape}")
  if tab.ndim != 3 or tab.shape[-1] != d:
    raise InvalidMDPError(f"feature_table: expected shape [S, A, D] with D = {d}, got {tab.shape}")
  s, a, _ = tab.shape
  if r.shape != (h, n):
    raise InvalidMDPError(f"rewards: expected shape [H, N] = {(h, n)}, got {r.shape}")
  if ns.shape != (h, n):
    raise InvalidMDPError(f"next_states: expected shape [H, N] = {(h, n)}, got {ns.shape}")
  for name in ("action_mask", "known_q", "known_mask"):
    x = get(name)
    if x.shape != (s, a):
      raise InvalidMDPError(f"{name}: expected shape [S, A] = {(s, a)}, got {x.shape}")
    if name != "known_q" and x.dtype != np.bool_:
      raise InvalidMDPError(f"{name}: expected a bool array, got dtype {x.dtype}")
  if not np.issubdtype(ns.dtype, np.integer):
    raise InvalidMDPError(f"next_states: expected integer indices, got dtype {ns.dtype}")
  _check_next_states("next_states", ns, s)
  if not np.all(np.isfinite(r)):
    i = _first_bad(~np.isfinite(r))
    raise InvalidMDPError(f"rewards{list(i)} = {r[i]}: expected finite rewards")
  kq = get("known_q")
  if not np.all(np.isfinite(kq)):
    i = _first_bad(~np.isfinite(kq))
    raise InvalidMDPError(f"known_q{list(i)} = {kq[i]}: expected finite values")
  am = get("action_mask")
  if not np.all(am.any(-1)):
    i = _first_bad(~am.any(-1))
    raise InvalidMDPError(f"action_mask[{i[0]}]: state {i[0]} has no valid action")
  _check_simplex("features", f, atol)
  _check_simplex("feature_table", tab, atol)


def _check_scalar(name: str, x, *, positive: bool, upper=None) -> None:
  if not is_concrete(x):
    return
  arr = np.asarray(x, dtype=np.float64)
  if arr.ndim != 0:
    raise InvalidMDPError(
        f"{name}: expected a scalar (jax.vmap over a grid), got shape {arr.shape}")
  v = float(arr)
  if not np.isfinite(v):
    raise InvalidMDPError(f"{name} = {v}: expected a finite number")
  if v < 0 or (positive and v == 0):
    raise InvalidMDPError(f"{name} = {v}: expected {'> 0' if positive else '>= 0'}")
  if upper is not None and v > upper:
    raise InvalidMDPError(f"{name} = {v}: expected <= {upper}")


def _check_dataset_type(ds) -> None:
  """The solvers' check: the type, and (concrete) the next-state indices,
  which a gather would otherwise clamp (an :class:`OfflineDataset` built
  without :func:`make_dataset` is not validated)."""
  if not isinstance(ds, OfflineDataset):
    raise InvalidMDPError(
        f"dataset: expected an OfflineDataset (see make_dataset), got {type(ds).__name__}")
  # (int features or rewards set the backward pass's dtype: a scan-carry
  # TypeError, and ridge / beta / lam cast to int)
  for name in ("features", "feature_table", "rewards", "known_q"):
    dt = jnp.result_type(getattr(ds, name))
    if not jnp.issubdtype(dt, jnp.floating):
      raise InvalidMDPError(
          f"dataset.{name}: expected a float array, got dtype {jnp.dtype(dt).name} "
          f"(make_dataset converts)")
  if is_concrete(ds.next_states):
    _check_next_states("dataset.next_states", np.asarray(ds.next_states),
                       ds.feature_table.shape[0])


# --------------------------------------------------------------- regression
def ridge_regression(features: jax.Array, targets: jax.Array, ridge: ArrayLike) -> jax.Array:
  """``argmin_w sum_tau (y_tau - phi_tau^T w)^2 + ridge ||w||^2``.

  Args:
    features: ``[N, D]``; targets: ``[N]`` or ``[N, M]`` (M regressions with
      the same design); ridge: ``> 0`` scalar.

  Returns:
    ``[D]`` or ``[D, M]``: ``(Phi^T Phi + ridge I)^{-1} Phi^T y`` (Cholesky).
  """
  d = features.shape[-1]
  gram = features.T @ features + ridge * jnp.eye(d, dtype=features.dtype)
  chol = jax.scipy.linalg.cho_factor(gram, lower=True)
  return jax.scipy.linalg.cho_solve(chol, features.T @ targets)


def gram_inverse(features: jax.Array, ridge: ArrayLike) -> jax.Array:
  """``Lambda^{-1} = (Phi^T Phi + ridge I)^{-1}``: ``[N, D]`` -> ``[D, D]``.

  Args:
    features: ``[N, D]`` features ``Phi``.
    ridge: ``> 0``.

  Returns:
    ``[D, D]``.
  """
  d = features.shape[-1]
  eye = jnp.eye(d, dtype=features.dtype)
  chol = jax.scipy.linalg.cho_factor(features.T @ features + ridge * eye, lower=True)
  inv = jax.scipy.linalg.cho_solve(chol, eye)
  return 0.5 * (inv + inv.T)


def next_state_design(features: jax.Array, next_states: jax.Array,
                      num_states: int) -> jax.Array:
  """``M [S, D]`` with ``M[s] = sum_tau phi_tau 1{s'_tau = s}``.

  ``sum_tau phi_tau f(V(s'_tau)) = M^T f(V)`` for any target ``f``.

  Args:
    features: ``[N, D]`` features of the transitions.
    next_states: ``int [N]`` their next states.
    num_states: ``S`` (static).

  Returns:
    ``[S, D]``.
  """
  return jnp.zeros((num_states, features.shape[-1]), features.dtype).at[next_states].add(features)


# ------------------------------------------------------------------ bonuses
def d_rectangular_bonus(table: jax.Array, gram_inv: jax.Array,
                        beta: float | jax.Array) -> jax.Array:
  """``beta sum_i phi_i sqrt([Lambda^{-1}]_ii)``: ``[..., D]`` -> ``[...]``.

  Args:
    table: ``[..., D]`` features.
    gram_inv: ``[D, D]`` inverse Gram matrix.
    beta: bonus scale ``>= 0``.

  Returns:
    ``[...]`` bonuses.
  """
  return beta * (table @ jnp.sqrt(jnp.clip(jnp.diagonal(gram_inv), 0.0, None)))


def elliptical_bonus(table: jax.Array, gram_inv: jax.Array,
                     beta: float | jax.Array) -> jax.Array:
  """``beta sqrt(phi^T Lambda^{-1} phi)``: ``[..., D]`` -> ``[...]``.

  Args:
    table: ``[..., D]`` features.
    gram_inv: ``[D, D]`` inverse Gram matrix.
    beta: bonus scale ``>= 0``.

  Returns:
    ``[...]`` bonuses.
  """
  quad = jnp.einsum("...i,ij,...j->...", table, gram_inv, table)
  return beta * jnp.sqrt(jnp.clip(quad, 0.0, None))


# --------------------------------------------------------------- dual steps
# Each takes next-state values v [S], the design M [S, D] (or any weights:
# with M = mu^T (columns = distributions) and gram_inv = I it evaluates the
# population dual of every factor) and Lambda^{-1} [D, D]; returns z [D].
class _Sum(NamedTuple):
  """The linear map ``f [S] -> C^T f[rows] [D]``: a design ``M [S, D]``
  (``rows`` None) or the samples ``phi [N, D]`` with next states ``[N]``."""
  coef: jax.Array
  rows: jax.Array | None

  def values(self, f: jax.Array) -> jax.Array:
    """``f`` at the rows of ``coef``: ``[S]`` -> ``[R]``."""
    return f if self.rows is None else f[self.rows]

  def __call__(self, f: jax.Array) -> jax.Array:
    return self.coef.T @ self.values(f)


def _design_sum(design):
  """``f [S] -> M^T f [D]`` for a design ``M [S, D]``."""
  return _Sum(design, None)


def _sample_sum(features, next_states):
  """``f [S] -> sum_tau phi_tau f(s'_tau) [D]`` (a gather and a mat-vec)."""
  return _Sum(features, next_states)


def _regression(v, project, gram_inv):
  return gram_inv @ project(v)


def _tv(v, project, gram_inv, lam):
  return gram_inv @ project(jnp.minimum(v, jnp.min(v) + lam))


def _signed_log_terms(c: jax.Array, log_scale: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(log |c| + log_scale, sign(c))``, ``-inf`` where ``c = 0`` (finite
  gradients there)."""
  nz = c != 0
  ell = jnp.where(nz, jnp.log(jnp.abs(jnp.where(nz, c, 1.0))) + log_scale, -jnp.inf)
  return ell, jnp.sign(c)


def _kl(v, project, gram_inv, lam, v_cap, deficit):
  # ``1 + y = deficit + Lambda^{-1} C^T exp(-x / lam)`` summed in the log
  # domain: each column j of ``C`` is shifted by the smallest value it
  # weights, ``m_j``, so that ``u_j = sum_r C_rj exp(-(x_r - m_j) / lam)`` has
  # a term equal to ``C_rj`` (no underflow, whatever ``x / lam``); the terms
  # ``G_ij u_j exp(-m_j / lam)`` and ``deficit_i`` (of either sign) are then
  # added relative to the largest. The shifts only scale: their gradients are
  # stopped (the sum does not depend on them).
  x = project.values(v)
  c = project.coef
  nz = c != 0
  m = jax.lax.stop_gradient(jnp.min(jnp.where(nz, x[:, None], jnp.inf), axis=0))
  has = jnp.isfinite(m)
  m = jnp.where(has, m, 0.0)
  arg = jnp.where(nz, -(x[:, None] - m) / lam, 0.0)
  u = jnp.sum(jnp.where(nz, c * jnp.exp(arg), 0.0), axis=0)
  ell, sgn = _signed_log_terms(gram_inv * jnp.where(has, u, 0.0), -m / lam)
  if deficit is not None:
    ell_d, sgn_d = _signed_log_terms(deficit, jnp.zeros_like(deficit))
    ell = jnp.concatenate([ell, ell_d[:, None]], axis=1)
    sgn = jnp.concatenate([sgn, sgn_d[:, None]], axis=1)
  top = jax.lax.stop_gradient(jnp.max(ell, axis=1))
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  total = jnp.sum(jnp.where(jnp.isfinite(ell), sgn * jnp.exp(ell - top[:, None]), 0.0),
                  axis=1)
  pos = total > 0
  z = jnp.where(pos, -lam * (top + jnp.log(jnp.where(pos, total, 1.0))), jnp.inf)
  return jnp.clip(z, 0.0, v_cap)


def regression_update(v: jax.Array, design: jax.Array, gram_inv: jax.Array) -> jax.Array:
  """Non-robust: ``Lambda^{-1} M^T V`` (ridge estimate of ``E_{mu_i} V``).

  Args:
    v: ``[S]`` next-step values.
    design: ``[S, D]`` next-state design (:func:`next_state_design`).
    gram_inv: ``[D, D]`` inverse Gram matrix (:func:`gram_inverse`).

  Returns:
    ``[D]`` the per-dimension estimates ``z``.
  """
  return _regression(v, _design_sum(design), gram_inv)


def tv_dual_update(v: jax.Array, design: jax.Array, gram_inv: jax.Array,
                   lam: ArrayLike) -> jax.Array:
  """TV-regularized: ridge estimate of ``E_{mu_i}[min(V, min_s V + lam)]``.

  Args:
    v: ``[S]`` next-step values.
    design: ``[S, D]`` next-state design (:func:`next_state_design`).
    gram_inv: ``[D, D]`` inverse Gram matrix (:func:`gram_inverse`).
    lam: penalty weight ``>= 0``.

  Returns:
    ``[D]`` the per-dimension estimates ``z``.
  """
  return _tv(v, _design_sum(design), gram_inv, lam)


def kl_dual_update(v: jax.Array, design: jax.Array, gram_inv: jax.Array, lam: ArrayLike,
                   v_cap: ArrayLike, deficit: jax.Array | None = None) -> jax.Array:
  """KL-regularized: ``z = -lam log(1 + y)``, ``y`` the ridge estimate of
  ``E_{mu_i} expm1(-V / lam)``; clipped to ``[0, v_cap]`` (module doc).

  ``1 + y = deficit + Lambda^{-1} M^T exp(-V / lam)`` with the ridge deficit
  ``deficit = 1 - Lambda^{-1} sum_tau phi_tau`` (``[D]``; 0 for population
  inputs, the default), summed in the log domain: each column of ``M`` is
  scaled by ``exp(-m_j / lam)``, ``m_j`` the smallest ``V`` it weights, and
  the terms are added relative to the largest, so that no ``V / lam``
  overflows or underflows whatever its size, and small ``lam`` loses no
  precision to cancellation.

  Args:
    v: ``[S]`` next-step values.
    design: ``[S, D]`` next-state design (:func:`next_state_design`).
    gram_inv: ``[D, D]`` inverse Gram matrix (:func:`gram_inverse`).
    lam: penalty weight ``> 0``.
    v_cap: upper clip of ``z``.
    deficit: ``[D]`` ridge deficit (:func:`ridge_deficit`) or None (0).

  Returns:
    ``[D]`` the per-dimension estimates ``z``.
  """
  return _kl(v, _design_sum(design), gram_inv, lam, v_cap, deficit)


def ridge_deficit(features: jax.Array, gram_inv: jax.Array,
                  ridge: float | jax.Array) -> jax.Array:
  """``1 - Lambda^{-1} sum_tau phi_tau`` without cancellation: ``[N, D]`` -> ``[D]``.

  With ``e = 1 - Phi 1`` (row-sum residuals, 0 for exact simplex rows),
  ``Lambda^{-1} Phi^T 1 = 1 - ridge Lambda^{-1} 1 + Lambda^{-1} Phi^T e``.

  Args:
    features: ``[N, D]`` features ``Phi``.
    gram_inv: ``[D, D]`` from :func:`gram_inverse` (same ``ridge``).
    ridge: ``> 0``.

  Returns:
    ``[D]``.
  """
  e = 1.0 - jnp.sum(features, axis=-1)
  return ridge * jnp.sum(gram_inv, axis=-1) - gram_inv @ (features.T @ e)


def _segments(v, design, gram_inv):
  """Per segment k (``alpha in [u_k, u_{k+1}]``, u sorted values of v):
  ridge estimates ``z1 = a_k + alpha b_k`` of ``E[V]_alpha`` and ``z2 = c_k +
  alpha^2 b_k`` of ``E[V]_alpha^2``; all ``[S, D]``; and ``u [S]``."""
  order = jnp.argsort(v)
  u = v[order]
  m = design[order]                                   # [S, D]
  cm = jnp.cumsum(m, axis=0)
  upper = cm[-1][None, :] - cm                         # sum_{j > k} m_j
  p1 = jnp.cumsum(m * u[:, None], axis=0)              # sum_{j <= k} m_j u_j
  p2 = jnp.cumsum(m * (u * u)[:, None], axis=0)
  return p1 @ gram_inv, upper @ gram_inv, p2 @ gram_inv, u


def chi2_dual_update(v: jax.Array, design: jax.Array, gram_inv: jax.Array,
                     lam: ArrayLike) -> jax.Array:
  """chi-square-regularized: ``max_alpha z1 - (z2 - z1^2) / (4 lam)`` per
  dimension, exact over ``alpha in [min V, max V]`` (module doc).

  Args:
    v: ``[S]`` next-step values.
    design: ``[S, D]`` next-state design (:func:`next_state_design`).
    gram_inv: ``[D, D]`` inverse Gram matrix (:func:`gram_inverse`).
    lam: penalty weight ``> 0``.

  Returns:
    ``[D]`` the per-dimension estimates ``z``.
  """
  a, b, c, u = _segments(v, design, gram_inv)
  lo = u[:, None]
  hi = jnp.concatenate([u[1:], u[-1:]])[:, None]
  k4 = 4.0 * lam

  def g(alpha):
    z1 = a + alpha * b
    return z1 - (c + alpha * alpha * b - z1 * z1) / k4

  # g = A0 + A1 alpha + A2 alpha^2 on the segment.
  a2 = (b * b - b) / k4
  a1 = b + 2.0 * a * b / k4
  concave = a2 < 0
  stat = jnp.where(concave, -a1 / jnp.where(concave, 2.0 * a2, 1.0), lo)
  stat = jnp.clip(stat, lo, hi)
  best = jnp.maximum(jnp.maximum(g(lo), g(hi)), g(stat))
  return nan_max(best, 0)


def tv_ball_dual_update(v: jax.Array, design: jax.Array, gram_inv: jax.Array,
                        rho: ArrayLike) -> jax.Array:
  """DRPVI (TV ball ``TV <= rho``): ``max_alpha z1(alpha) - rho (alpha - min V)``
  over ``alpha`` in the sorted values of V (exact: piecewise linear).

  Args:
    v: ``[S]`` next-step values.
    design: ``[S, D]`` next-state design (:func:`next_state_design`).
    gram_inv: ``[D, D]`` inverse Gram matrix (:func:`gram_inverse`).
    rho: the ball's radius in ``[0, 1]``.

  Returns:
    ``[D]`` the per-dimension estimates ``z``.
  """
  a, b, _, u = _segments(v, design, gram_inv)
  vals = a + u[:, None] * b - rho * (u - u[0])[:, None]
  return nan_max(vals, 0)


# ----------------------------------------------------------- backward pass
def _designs(ds: OfflineDataset) -> jax.Array:
  """``M_h`` for every step, ``[H, S, D]`` (one flat scatter-add)."""
  h, n, d = ds.features.shape
  s = ds.num_states
  rows = (ds.next_states + s * jnp.arange(h, dtype=ds.next_states.dtype)[:, None]).reshape(-1)
  flat = jnp.zeros((h * s, d), ds.features.dtype).at[rows].add(ds.features.reshape(-1, d))
  return flat.reshape(h, s, d)


def _prepare(ds: OfflineDataset, ridge, beta, bonus_kind, need_design):
  gram_inv = jax.vmap(gram_inverse, in_axes=(0, None))(ds.features, ridge)       # [H, D, D]
  design = _designs(ds) if need_design else None
  theta = jnp.einsum("hij,hj->hi", gram_inv, jnp.einsum("hnj,hn->hj", ds.features, ds.rewards))
  if bonus_kind == "d_rectangular":
    bonus = jax.vmap(d_rectangular_bonus, in_axes=(None, 0, None))(ds.feature_table, gram_inv, beta)
  else:
    bonus = jax.vmap(elliptical_bonus, in_axes=(None, 0, None))(ds.feature_table, gram_inv, beta)
  deficit = jax.vmap(ridge_deficit, in_axes=(0, 0, None))(ds.features, gram_inv, ridge)
  return gram_inv, design, theta, bonus, deficit


def _backward(ds: OfflineDataset, update, ridge, beta, bonus_kind,
              need_design=False) -> LinearPVIResult:
  """Backward induction ``h = H-1 .. 0`` with ``z_h = update(V_{h+1}, data_h,
  Lambda_h^{-1}, v_cap, deficit_h)``; ``data_h`` is the design ``M_h [S, D]``
  when ``need_design`` (chi2, DRPVI: the alpha search runs over S sorted
  values), else a function ``f [S] -> sum_tau phi_tau f(s'_tau)`` (a gather
  and a mat-vec per target, no scatter)."""
  horizon = ds.horizon
  gram_inv, design, theta, bonus, deficit = _prepare(ds, ridge, beta, bonus_kind, need_design)
  dtype = ds.feature_table.dtype
  steps = jnp.arange(horizon)

  def step(v_next, xs):
    h, g_inv, m, th, gam, dfc, phi, ns = xs
    data = m if need_design else _sample_sum(phi, ns)
    remaining = (horizon - h).astype(dtype)
    z = update(v_next, data, g_inv, remaining - 1.0, dfc)
    w = th + z
    q = jnp.clip(ds.feature_table @ w - gam, 0.0, remaining)
    q = jnp.where(ds.known_mask, ds.known_q, q)
    v = bellman.masked_max(q, ds.action_mask)
    return v, (w, z, q, v)

  v_end = jnp.zeros((ds.num_states,), dtype)
  _, (w, z, q, v) = jax.lax.scan(step, v_end, (steps, gram_inv, design, theta, bonus, deficit,
                                         ds.features, ds.next_states),
                                 reverse=True)
  values = jnp.concatenate([v, v_end[None]], axis=0)
  policy = bellman.greedy_policy(q, ds.action_mask[None])
  return LinearPVIResult(weights=w, dual=z, q=q, values=values, policy=policy, bonus=bonus)


@functools.partial(jax.jit, static_argnames=("divergence",))
def _r2pvi(ds, lam, beta, ridge, *, divergence):
  if divergence == "tv":
    update = lambda v, proj, gi, cap, dfc: _tv(v, proj, gi, lam)
  elif divergence == "kl":
    update = lambda v, proj, gi, cap, dfc: _kl(v, proj, gi, lam, cap, dfc)
  else:
    update = lambda v, m, gi, cap, dfc: chi2_dual_update(v, m, gi, lam)
  return _backward(ds, update, ridge, beta, "d_rectangular", need_design=divergence == "chi2")


@functools.partial(jax.jit, static_argnames=("bonus",))
def _pevi(ds, beta, ridge, *, bonus):
  update = lambda v, proj, gi, cap, dfc: _regression(v, proj, gi)
  return _backward(ds, update, ridge, beta, bonus)


@jax.jit
def _drpvi(ds, rho, beta, ridge):
  update = lambda v, m, gi, cap, dfc: tv_ball_dual_update(v, m, gi, rho)
  return _backward(ds, update, ridge, beta, "d_rectangular", need_design=True)


def r2pvi(dataset: OfflineDataset, *, divergence: str = "tv", lam: ArrayLike = 1.0,
          beta: ArrayLike = 0.0, ridge: ArrayLike = 1.0) -> LinearPVIResult:
  """Robust Regularized Pessimistic Value Iteration (Tang, Liu, Xu 2025).

  Args:
    dataset: an :class:`OfflineDataset` (``make_dataset``).
    divergence: ``"tv"``, ``"kl"`` or ``"chi2"`` (static).
    lam: regularization ``lambda`` (``>= 0`` for TV, ``> 0`` otherwise);
      a traced scalar (vmap over a grid).
    beta: pessimism coefficient (``>= 0``) of the d-rectangular bonus.
    ridge: ridge ``> 0`` of ``Lambda = sum phi phi^T + ridge I``.

  Gradients: a ``lax.scan``; ``jax.grad`` works w.r.t. ``lam``, ``beta``
  and ``ridge`` (piecewise smooth: one-sided at the kinks of the clipping and
  of the dual's minimisers). Takes a dataset, not an MDP, so it carries no
  ``@solver`` metadata (``batch.solve`` does not apply; vmap over datasets).

  Returns:
    :class:`LinearPVIResult` (``policy [H, S]`` greedy on the feature table).
  """
  _check_dataset_type(dataset)
  check_choice("divergence", divergence, DIVERGENCES)
  _check_scalar("lam", lam, positive=divergence != "tv")
  _check_scalar("beta", beta, positive=False)
  _check_scalar("ridge", ridge, positive=True)
  dtype = dataset.feature_table.dtype
  return _r2pvi(dataset, jnp.asarray(lam, dtype), jnp.asarray(beta, dtype),
                jnp.asarray(ridge, dtype), divergence=divergence)


def pevi(dataset: OfflineDataset, *, beta: ArrayLike = 0.0, ridge: ArrayLike = 1.0,
         bonus: str = "elliptical") -> LinearPVIResult:
  """Pessimistic value iteration (Jin, Yang, Wang 2021), no robustness.

  ``Q_h = phi^T Lambda^{-1} sum phi (r + V_{h+1}(s')) - Gamma`` clipped to
  ``[0, H - h]``; ``bonus="elliptical"`` (``beta ||phi||_{Lambda^{-1}}``, the
  paper's) or ``"d_rectangular"`` (R2PVI's, for like-for-like comparisons).
  Gradients: as :func:`r2pvi` (``jax.grad`` w.r.t. ``beta``, ``ridge``).

  Args:
    dataset: the offline data.
    beta: bonus scale ``>= 0``.
    ridge: ``> 0``.
    bonus: ``"elliptical"`` or ``"d_rectangular"``.

  Returns:
    :class:`LinearPVIResult`, as :func:`r2pvi`.
  """
  _check_dataset_type(dataset)
  check_choice("bonus", bonus, BONUSES)
  _check_scalar("beta", beta, positive=False)
  _check_scalar("ridge", ridge, positive=True)
  dtype = dataset.feature_table.dtype
  return _pevi(dataset, jnp.asarray(beta, dtype), jnp.asarray(ridge, dtype), bonus=bonus)


def drpvi_tv(dataset: OfflineDataset, *, rho: ArrayLike = 0.1, beta: ArrayLike = 0.0,
             ridge: ArrayLike = 1.0) -> LinearPVIResult:
  """DRPVI (Liu, Xu 2024) with a d-rectangular TV ball ``TV(mu, mu_i) <= rho``.

  ``z_i = max_{alpha in [min V, max V]} E_hat[V]_alpha - rho (alpha - min_s V)``
  (exact at the sorted values of V); d-rectangular bonus as R2PVI.
  ``rho`` in ``[0, 1]``. Gradients: as :func:`r2pvi` (``jax.grad`` w.r.t.
  ``rho``, ``beta``, ``ridge``).

  Args:
    dataset: the offline data.
    rho: the ball's radius in ``[0, 1]``.
    beta: bonus scale ``>= 0``.
    ridge: ``> 0``.

  Returns:
    :class:`LinearPVIResult`, as :func:`r2pvi`.
  """
  _check_dataset_type(dataset)
  _check_scalar("rho", rho, positive=False, upper=1.0)
  _check_scalar("beta", beta, positive=False)
  _check_scalar("ridge", ridge, positive=True)
  dtype = dataset.feature_table.dtype
  return _drpvi(dataset, jnp.asarray(rho, dtype), jnp.asarray(beta, dtype),
                jnp.asarray(ridge, dtype))
