"""Matrix-free generators: large MDPs as :class:`jaxrl_dp.core.functional.FunctionalMDP`.

Each generator returns a model whose transitions are computed by a jittable
function of ``(state, action, params)`` (module-level functions here, so
models of the same sizes share compiled programs) and whose numeric
parameters live in ``params`` (leaves: ``jax.vmap`` / ``jax.jvp`` over them
work). Sizes are static Python ints and reach ``10^8`` states:

* :func:`functional_gridworld` - an ``N``-dimensional grid with slip
  (``side=465, dim=3``: 100,544,625 states);
* :func:`inventory` - a single-item stock with stochastic demand
  (``max_stock=10**8 - 1``: ``10^8`` states);
* :func:`tandem_queue` - two queues in series with a controlled first
  server (``capacity1=capacity2=9999``: ``10^8`` states).

``model.materialize()`` gives the same MDP as a sparse
:class:`jaxrl_dp.TabularMDP` for small sizes.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.mdp import float_dtype
from jaxrl_dp.core.options import check_int

__all__ = ["functional_gridworld", "gridworld_distance_values", "inventory",
           "tandem_queue"]

_MAX_STATES = 2**31 - 1


def _check_prob(name, x, *, upper_open=False):
  if not np.isscalar(x) and np.ndim(x) != 0:
    return x  # arrays (e.g. traced under vmap) are the caller's responsibility
  try:
    v = float(x)
  except (TypeError, ValueError):
    raise InvalidMDPError(f"{name} = {x!r}: expected a real number in [0, 1]") from None
  if not (0.0 <= v <= 1.0) or (upper_open and v == 1.0):
    raise InvalidMDPError(f"{name} = {x!r}: expected a real number in [0, 1"
                          f"{')' if upper_open else ']'}")
  return x


def _as_params(params, dtype):
  """The numeric parameters as arrays of the model's float dtype."""
  dt = float_dtype(dtype)
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dt), params)


def _check_size(name, total):
  if total > _MAX_STATES:
    raise InvalidMDPError(f"{name}: {total} states exceed 2**31 - 1 (int32 state indices)")


# ------------------------------------------------------------------ gridworld
def _grid_fn(dim: int, side: int):
  strides = [side**i for i in range(dim)]
  s_goal = side**dim - 1

  def fn(state, action, params):
    slip = params["slip"]
    coords = [(state // st) % side for st in strides]
    moves = []
    for i in range(dim):  # slot 2i: -1 along axis i, slot 2i + 1: +1
      for sign in (-1, 1):
        c = coords[i] + sign
        ok = (c >= 0) & (c < side)
        moves.append(jnp.where(ok, state + sign * strides[i], state))
    ns = jnp.stack(moves).astype(jnp.int32)
    k = 2 * dim
    p = slip / k + (1 - slip) * (jnp.arange(k) == action)
    goal = state == s_goal
    ns = jnp.where(goal, state, ns)
    reward = jnp.where(goal, 0.0, -1.0)
    return ns, p.astype(jnp.result_type(slip, float)), reward

  return fn


_GRID_FNS: dict = {}


def functional_gridworld(side: int, dim: int = 2, *, slip: float = 0.1,
                         discount: float = 0.99, block_size: Optional[int] = None,
                         dtype: Any = None) -> FunctionalMDP:
  """An ``N``-dimensional grid world with slip, matrix-free.

  States are the ``side^dim`` cells, index ``s = sum_i c_i side^i`` (``c_0``
  varies fastest). Action ``2i`` moves ``-1`` along axis ``i``, action ``2i
  + 1`` moves ``+1`` (``A = 2 dim``). With probability ``1 - slip`` the
  chosen move happens, with probability ``slip`` a uniformly random one of
  the ``2 dim`` moves (the chosen one included); a move off the grid stays
  in place. The ``K = 2 dim`` slots are the ``2 dim`` moves. Every step
  costs ``-1`` except in the goal ``(side - 1, ..., side - 1)`` (index
  ``S - 1``), which is absorbing with reward 0.

  With ``slip = 0`` the optimal value is ``-(1 - gamma^d(s)) / (1 - gamma)``
  with ``d(s)`` the Manhattan distance to the goal
  (:func:`gridworld_distance_values`).

  Size: ``side=465, dim=3`` has 100,544,625 states (``side=10**4, dim=2``:
  ``10^8``).

  Args:
    side: cells per axis, a Python int ``>= 2``.
    dim: number of axes, a Python int ``>= 1``.
    slip: in ``[0, 1]``, stored in ``params["slip"]``.
    discount: in ``[0, 1]``.
    block_size, dtype: as in :meth:`FunctionalMDP.create`.

  Returns:
    A :class:`FunctionalMDP` with ``S = side^dim``, ``A = K = 2 dim`` and
    ``params = {"slip": slip}``.
  """
  side = check_int("side", side, minimum=2)
  dim = check_int("dim", dim, minimum=1)
  _check_size("functional_gridworld", side**dim)
  _check_prob("slip", slip)
  key = (dim, side)
  if key not in _GRID_FNS:
    _GRID_FNS[key] = _grid_fn(dim, side)
  return FunctionalMDP.create(_GRID_FNS[key], side**dim, 2 * dim, 2 * dim, discount,
                              params=_as_params({"slip": slip}, dtype),
                              block_size=block_size, dtype=dtype)


def gridworld_distance_values(side: int, dim: int, discount: float) -> np.ndarray:
  """The optimal values of :func:`functional_gridworld` with ``slip = 0``.

  Args:
    side, dim: the grid's sizes.
    discount: gamma.

  Returns:
    ``[S]`` float64 ``-(1 - gamma^d(s)) / (1 - gamma)`` with ``d`` the
    Manhattan distance to the goal (memory: ``S`` float64).
  """
  s = np.arange(side**dim, dtype=np.int64)
  d = np.zeros(side**dim, np.int64)
  for i in range(dim):
    d += side - 1 - (s // side**i) % side
  g = float(discount)
  return -(1.0 - g ** d.astype(np.float64)) / (1.0 - g)


# ------------------------------------------------------------------ inventory
_INVENTORY_FNS: dict = {}


def inventory(max_stock: int, max_order: int, demand: ArrayLike, *, price: float = 4.0,
              order_cost: float = 2.0, fixed_cost: float = 0.5,
              holding_cost: float = 0.1, discount: float = 0.95,
              block_size: Optional[int] = None, dtype: Any = None) -> FunctionalMDP:
  """A single-item inventory with stochastic demand, matrix-free.

  State: the stock ``s`` in ``0 .. M`` (``M = max_stock``, ``S = M + 1``).
  Action: the order ``q`` in ``0 .. max_order`` (``A = max_order + 1``),
  valid when ``s + q <= M``. The order arrives at once, ``y = s + q``; the
  demand ``D = d`` has probability ``demand[d]`` (``d = 0 .. K - 1``); the
  next stock is ``max(y - d, 0)`` (unmet demand is lost). Per-slot reward:
  ``price * min(y, d) - order_cost * q - fixed_cost * [q > 0] -
  holding_cost * y``; the model's reward is its expectation over ``D``.

  Size: ``max_stock = 10**8 - 1`` gives ``10^8`` states.

  Args:
    max_stock: ``M``, a Python int ``>= 1``.
    max_order: the largest order, a Python int ``>= 0``.
    demand: ``[K]`` demand probabilities (``K`` static); in ``params``.
    price, order_cost, fixed_cost, holding_cost: real numbers (``params``).
    discount: in ``[0, 1]``.
    block_size, dtype: as in :meth:`FunctionalMDP.create`.

  Returns:
    A :class:`FunctionalMDP` with ``S = M + 1``, ``A = max_order + 1``,
    ``K = len(demand)``, an action mask and per-slot rewards.
  """
  m = check_int("max_stock", max_stock)
  q = check_int("max_order", max_order, minimum=0)
  _check_size("inventory", m + 1)
  dem = np.asarray(demand, dtype=np.float64) if not isinstance(demand, jax.Array) else demand
  if dem.ndim != 1 or dem.shape[0] < 1:
    raise InvalidMDPError(f"demand: expected a [K] probability vector, got shape {dem.shape}")
  if isinstance(dem, np.ndarray):
    if not (np.isfinite(dem).all() and (dem >= 0).all()) or abs(dem.sum() - 1) > 1e-6:
      raise InvalidMDPError(f"demand = {dem.tolist()}: expected probabilities summing to 1")
  k = int(dem.shape[0])
  key = (m, k, q + 1)
  if key not in _INVENTORY_FNS:
    _INVENTORY_FNS[key] = _make_inventory(m, k, q + 1)
  fn, mask = _INVENTORY_FNS[key]
  params = {"demand": dem, "price": price, "order_cost": order_cost,
            "fixed_cost": fixed_cost, "holding_cost": holding_cost}
  return FunctionalMDP.create(fn, m + 1, q + 1, k, discount, params=_as_params(params, dtype),
                              action_mask=mask, block_size=block_size, dtype=dtype)


def _make_inventory(max_stock: int, num_demands: int, num_actions: int):
  def fn(state, action, params):
    y = jnp.minimum(state + action, max_stock)
    d = jnp.arange(num_demands)
    ns = jnp.maximum(y - d, 0).astype(jnp.int32)
    sales = jnp.minimum(y, d)
    cost = (params["order_cost"] * action + params["fixed_cost"] * (action > 0)
            + params["holding_cost"] * y)
    return ns, params["demand"], params["price"] * sales - cost

  def mask(state, params):
    del params
    return state + jnp.arange(num_actions) <= max_stock

  return fn, mask


# --------------------------------------------------------------- tandem queue
def _make_tandem(c1: int, c2: int):
  def fn(state, action, params):
    q1, q2 = state // (c2 + 1), state % (c2 + 1)
    lam, mu2 = params["arrival"], params["service2"]
    mu1 = params["service1"]
    rate = lam + jnp.max(mu1) + mu2
    arrive = jnp.where(q1 < c1, state + (c2 + 1), state)
    serve1 = jnp.where((q1 > 0) & (q2 < c2), state - (c2 + 1) + 1, state)
    serve2 = jnp.where(q2 > 0, state - 1, state)
    ns = jnp.stack([arrive, serve1, serve2, state]).astype(jnp.int32)
    p_a, p_1, p_2 = lam / rate, mu1[action] / rate, mu2 / rate
    p = jnp.stack([p_a, p_1, p_2, 1.0 - p_a - p_1 - p_2])
    h = params["holding_cost"]
    reward = -(h[0] * q1 + h[1] * q2 + params["service_cost"][action])
    return ns, p, reward

  return fn


_TANDEM_FNS: dict = {}


def tandem_queue(capacity1: int, capacity2: int, *, arrival: float = 0.3,
                 service1: Sequence[float] = (0.2, 0.4), service2: float = 0.35,
                 service_cost: Sequence[float] = (0.0, 1.0),
                 holding_cost: tuple[float, float] = (1.0, 1.0),
                 discount: float = 0.99, block_size: Optional[int] = None,
                 dtype: Any = None) -> FunctionalMDP:
  """Two queues in series (uniformized, discrete time), matrix-free.

  State ``(q1, q2)`` with ``0 <= q1 <= C1``, ``0 <= q2 <= C2``, index ``s =
  q1 (C2 + 1) + q2`` (``S = (C1 + 1)(C2 + 1)``). Action ``a`` sets the first
  server's rate ``mu1[a]`` (``A = len(service1)``) at cost
  ``service_cost[a]`` per step. With ``L = arrival + max(mu1) + service2``,
  one step is (``K = 4`` slots): an arrival to queue 1 with probability
  ``arrival / L`` (lost when ``q1 = C1``); a service at queue 1 with
  ``mu1[a] / L`` (the job moves to queue 2; nothing happens when ``q1 = 0``
  or queue 2 is full, ``q2 = C2``: blocking); a service at queue 2 with
  ``service2 / L`` (when ``q2 > 0``); otherwise nothing. Reward: ``-(h1 q1 +
  h2 q2 + service_cost[a])`` with ``(h1, h2) = holding_cost``.

  Size: ``capacity1 = capacity2 = 9999`` gives ``10^8`` states.

  Args:
    capacity1, capacity2: ``C1``, ``C2``, Python ints ``>= 1``.
    arrival, service2: rates ``>= 0``; ``service1``: ``[A]`` rates ``>= 0``;
      ``service_cost``: ``[A]``; ``holding_cost``: ``[2]`` (all in
      ``params``).
    discount: in ``[0, 1]``.
    block_size, dtype: as in :meth:`FunctionalMDP.create`.

  Returns:
    A :class:`FunctionalMDP` with ``S = (C1 + 1)(C2 + 1)``, ``A =
    len(service1)``, ``K = 4``.
  """
  c1 = check_int("capacity1", capacity1)
  c2 = check_int("capacity2", capacity2)
  _check_size("tandem_queue", (c1 + 1) * (c2 + 1))
  mu1 = np.asarray(service1, np.float64)
  cost = np.asarray(service_cost, np.float64)
  hold = np.asarray(holding_cost, np.float64)
  if mu1.ndim != 1 or mu1.size < 1 or cost.shape != mu1.shape:
    raise InvalidMDPError(
        f"service1 / service_cost: expected two [A] arrays of the same length, got "
        f"{mu1.shape} and {cost.shape}")
  if hold.shape != (2,):
    raise InvalidMDPError(f"holding_cost: expected 2 numbers, got shape {hold.shape}")
  rates = np.concatenate([[float(arrival), float(service2)], mu1])
  if not (np.isfinite(rates).all() and (rates >= 0).all()) or rates.sum() <= 0:
    raise InvalidMDPError(
        f"rates: expected finite rates >= 0, not all 0; got arrival={arrival}, "
        f"service1={mu1.tolist()}, service2={service2}")
  key = (c1, c2)
  if key not in _TANDEM_FNS:
    _TANDEM_FNS[key] = _make_tandem(c1, c2)
  params = {"arrival": float(arrival), "service1": mu1, "service2": float(service2),
            "service_cost": cost, "holding_cost": hold}
  return FunctionalMDP.create(_TANDEM_FNS[key], (c1 + 1) * (c2 + 1), mu1.size, 4,
                              discount, params=_as_params(params, dtype),
                              block_size=block_size, dtype=dtype)
