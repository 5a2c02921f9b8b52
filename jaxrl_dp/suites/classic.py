"""Classic small benchmark MDPs: Chain, RiverSwim, forest management.

All are built on the host (their structure is fixed by static sizes) and
assembled into a sparse :class:`TabularMDP`; numeric parameters that only
enter probabilities or rewards may be traced (e.g. ``jax.vmap`` over
discounts).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import (TabularMDP, check_distribution,
                               default_float_dtype)
from jaxrl_dp.suites import _common


def _one_hot(n, i):
  x = np.zeros(n)
  x[i] = 1.0
  return x


def chain(num_states: int = 5, slip: ArrayLike = 0.2, discount: float = 0.99, *,
          small_reward: float = 2.0, large_reward: float = 10.0) -> TabularMDP:
  """The "Chain" problem of Strens (2000) and Dearden, Friedman & Russell (1998).

  Strens, "A Bayesian framework for reinforcement learning", ICML 2000;
  Dearden, Friedman & Russell, "Bayesian Q-learning", AAAI 1998 (5 states,
  discount 0.99 there).

  States ``0 .. N-1`` in a line, start in state 0. Actions:

    * 0 ("a", forward): move to ``s + 1`` with reward 0; in the last state
      ``N - 1`` stay there with reward ``large_reward`` (10);
    * 1 ("b", back): return to state 0 with reward ``small_reward`` (2).

  With probability ``slip`` (0.2) the agent slips and the *other* action's
  effect happens instead (with that action's reward). So, e.g.,
  ``P(s+1 | s, forward) = 1 - slip``, ``P(0 | s, forward) = slip``.

  Per-transition rewards are stored (``transition_rewards [S, 2, 2]``; slot
  0 is the forward outcome, slot 1 the return to state 0), ``rewards [S, 2]``
  is their expectation: forward ``slip * 2`` (``(1 - slip) * 10 + slip * 2``
  in the last state), back ``(1 - slip) * 2`` (``+ slip * 10`` in the last).

  Args:
    num_states: N >= 2 (static); 5 is the standard problem.
    slip: probability in [0, 1] (may be traced).
    discount: scalar in [0, 1].
    small_reward, large_reward: the two rewards (may be traced).

  Returns:
    Sparse :class:`TabularMDP` with ``K = 2``.
  """
  n = _common.check_int("num_states", num_states, 2)
  _common.check_probability("slip", slip)
  _common.check_scalar_discount(discount)
  _common.check_real("small_reward", small_reward)
  _common.check_real("large_reward", large_reward)
  dtype = default_float_dtype()
  s = np.arange(n)
  fwd = np.minimum(s + 1, n - 1)
  next_states = np.stack([np.stack([fwd, np.zeros(n, int)], -1)] * 2, axis=1)
  slip = jnp.asarray(slip, dtype)
  keep = 1.0 - slip
  # probs[s, a, k]: a=0 forward intended -> slot 0 w.p. 1-slip; a=1 back.
  p_fwd = jnp.stack([keep, slip])
  p_back = jnp.stack([slip, keep])
  probs = jnp.broadcast_to(jnp.stack([p_fwd, p_back])[None], (n, 2, 2))
  last = jnp.asarray(s == n - 1)
  r_fwd = jnp.where(last, jnp.asarray(large_reward, dtype), 0.0)
  r_back = jnp.broadcast_to(jnp.asarray(small_reward, dtype), (n,))
  tr_slots = jnp.stack([r_fwd, r_back], -1)  # [S, 2] reward of each outcome
  transition_rewards = jnp.broadcast_to(tr_slots[:, None, :], (n, 2, 2))
  rewards = _common.expected_rewards(probs, transition_rewards)
  return _common.assemble(
      next_states=next_states, probs=probs, rewards=rewards, discount=discount,
      initial=_one_hot(n, 0), transition_rewards=transition_rewards)


RIVER_SWIM_VARIANTS = ("strehl_littman", "osband")


def river_swim(num_states: int = 6, discount: float = 0.95, *,
               variant: str = "strehl_littman",
               initial: ArrayLike | None = None) -> TabularMDP:
  """RiverSwim (Strehl & Littman 2008), and the rescaled Osband et al. variant.

  Strehl & Littman, "An analysis of model-based Interval Estimation for
  Markov decision processes", JCSS 74(8), 2008, Fig. 2. States ``0 .. N-1``
  along a river flowing left. Action 0 (LEFT, with the current) moves to
  ``max(s - 1, 0)`` with probability 1. Action 1 (RIGHT, against the current):

  ``variant="strehl_littman"`` (default, the original):

    * state 0: stay w.p. 0.7, move right w.p. 0.3;
    * middle states: move left 0.1, stay 0.6, move right 0.3;
    * last state ``N - 1``: move left 0.7, stay 0.3;
    * rewards: 5 for LEFT in state 0 (the self-loop); 10000 on the RIGHT
      self-loop of the last state (a per-transition reward, so the expected
      ``rewards[N-1, 1] = 0.3 * 10000 = 3000``); 0 otherwise.

  ``variant="osband"`` (Osband, Russo & Van Roy, "(More) efficient
  reinforcement learning via posterior sampling", NIPS 2013):

    * state 0: stay 0.4, right 0.6; middle: left 0.05, stay 0.6, right 0.35;
      last: left 0.4, stay 0.6;
    * rewards ``r(0, LEFT) = 0.005`` and ``r(N-1, RIGHT) = 1`` (state-action).

  Per-transition rewards are stored as ``transition_rewards [S, 2, 3]``
  (slots: left neighbour, stay, right neighbour; unused slots have
  probability 0).

  Args:
    num_states: N >= 2 (static); 6 is the standard problem.
    discount: scalar in [0, 1] (papers use 0.95 to 0.99 or a finite horizon).
    variant: ``"strehl_littman"`` or ``"osband"``.
    initial: ``[N]`` start distribution; default one-hot on state 0 (the
      leftmost state, as in Osband et al.).

  Returns:
    Sparse :class:`TabularMDP` with ``K = 3``.
  """
  n = _common.check_int("num_states", num_states, 2)
  if variant not in RIVER_SWIM_VARIANTS:
    raise InvalidMDPError(
        f"variant = {variant!r}: expected one of {RIVER_SWIM_VARIANTS}")
  _common.check_scalar_discount(discount)
  if variant == "strehl_littman":
    first, middle, last = (0.0, 0.7, 0.3), (0.1, 0.6, 0.3), (0.7, 0.3, 0.0)
    r_left0, r_right_end, end_on_loop = 5.0, 10000.0, True
  else:
    first, middle, last = (0.0, 0.4, 0.6), (0.05, 0.6, 0.35), (0.4, 0.6, 0.0)
    r_left0, r_right_end, end_on_loop = 0.005, 1.0, False
  s = np.arange(n)
  slots = np.stack([np.maximum(s - 1, 0), s, np.minimum(s + 1, n - 1)], -1)
  next_states = np.stack([slots, slots], axis=1)  # [S, 2, 3]
  probs = np.zeros((n, 2, 3))
  probs[:, 0, 0] = 1.0  # LEFT: to max(s - 1, 0) (state 0: itself).
  probs[:, 1] = middle
  probs[0, 1] = first
  probs[n - 1, 1] = last
  tr = np.zeros((n, 2, 3))
  tr[0, 0, 0] = r_left0
  if end_on_loop:
    tr[n - 1, 1, 1] = r_right_end
  else:
    tr[n - 1, 1, :] = r_right_end
  rewards = _common.expected_rewards(probs, tr)
  if initial is None:
    initial = _one_hot(n, 0)
  else:
    initial = np.asarray(initial, np.float64)
    if initial.shape != (n,):
      raise InvalidMDPError(
          f"initial: expected shape [num_states] = ({n},), got {initial.shape}")
    check_distribution("initial", initial, axis_name="state axis")
  return _common.assemble(
      next_states=next_states, probs=probs, rewards=rewards, discount=discount,
      initial=initial, transition_rewards=tr)


def forest(num_states: int = 3, r1: float = 4.0, r2: float = 2.0, p: ArrayLike = 0.1,
           discount: float = 0.96) -> TabularMDP:
  """Forest management, as ``mdptoolbox.example.forest`` (pymdptoolbox).

  Cordwell, Chadès et al., pymdptoolbox (``mdptoolbox.example.forest``);
  after Possingham & Tuck / the MDPtoolbox for MATLAB. State ``s`` is the age
  class of the forest (0 youngest, ``S - 1`` oldest); each year a fire
  happens with probability ``p`` and resets the forest to state 0.

  Actions: 0 = Wait, 1 = Cut.

    * Wait: to ``min(s + 1, S - 1)`` w.p. ``1 - p``, to 0 w.p. ``p``;
      reward ``r1`` in the oldest state, 0 elsewhere.
    * Cut: to state 0 w.p. 1; reward 0 in state 0, ``r2`` in the oldest
      state, 1 elsewhere.

  ``to_dense()`` of the result equals ``P.transpose(1, 0, 2)`` and
  ``rewards`` equals ``R`` of ``mdptoolbox.example.forest(S, r1, r2, p)``.
  The discount (pymdptoolbox's examples use 0.96 or 0.9) is ours to choose.

  Args:
    num_states: S >= 2 (static).
    r1, r2: rewards > 0 (pymdptoolbox's requirement).
    p: fire probability in [0, 1] (may be traced).
    discount: scalar in [0, 1].

  Returns:
    Sparse :class:`TabularMDP` with ``K = 2`` (slot 0: state 0; slot 1: the
    older age class, probability 0 for Cut); initial uniform over states.
  """
  n = _common.check_int("num_states", num_states, 2)
  for name, val in (("r1", r1), ("r2", r2)):
    _common.check_real(name, val)
    if not _common.is_traced(val) and not float(val) > 0:
      raise InvalidMDPError(f"{name} = {float(val)!r}: expected a reward > 0")
  _common.check_probability("p", p)
  _common.check_scalar_discount(discount)
  dtype = default_float_dtype()
  s = np.arange(n)
  older = np.minimum(s + 1, n - 1)
  zeros = np.zeros(n, int)
  next_states = np.stack([np.stack([zeros, older], -1),
                          np.stack([zeros, zeros], -1)], axis=1)
  p = jnp.asarray(p, dtype)
  p_wait = jnp.stack([p, 1.0 - p])
  p_cut = jnp.asarray([1.0, 0.0], dtype)
  probs = jnp.broadcast_to(jnp.stack([p_wait, p_cut])[None], (n, 2, 2))
  is_last = jnp.asarray(s == n - 1)
  r_wait = jnp.where(is_last, jnp.asarray(r1, dtype), 0.0)
  r_cut = jnp.where(is_last, jnp.asarray(r2, dtype),
                    jnp.where(jnp.asarray(s == 0), 0.0, 1.0))
  rewards = jnp.stack([r_wait, r_cut], -1)
  return _common.assemble(
      next_states=next_states, probs=probs, rewards=rewards, discount=discount,
      initial=np.full(n, 1.0 / n))
