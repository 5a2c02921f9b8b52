"""deep.networks, deep.replay and deep.common helpers: forward passes against a
NumPy MLP, action masks never chosen, the circular buffer against a Python
deque-like reference, W1 against scipy, epsilon-greedy frequencies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep import common
from jaxrl_dp.deep.networks import (ActorCritic, CategoricalQNetwork, QNetwork,
                                    QuantileQNetwork, categorical_q_values, greedy_action)
from jaxrl_dp.deep.replay import replay_add, replay_init, replay_sample


def _np_mlp(params, x, act):
  """Dense layers Dense_0..Dense_k of a flax param dict, activation between."""
  layers = sorted(params, key=lambda n: int(n.split("_")[-1]))
  for i, name in enumerate(layers):
    x = x @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(
        params[name]["bias"], np.float64)
    if i < len(layers) - 1:
      x = act(x)
  return x


def test_q_network_matches_numpy_forward_and_masks():
  net = QNetwork(3, (8, 5))
  x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
  params = net.init(jax.random.key(0), x)["params"]
  flat = {**params["MLP_0"], "Dense_9": params["Dense_0"]}
  ref = _np_mlp(flat, x.astype(np.float64), lambda z: np.maximum(z, 0))
  out = net.apply({"params": params}, x)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  mask = np.array([[True, False, True]] * 4)
  masked = np.asarray(net.apply({"params": params}, x, mask))
  assert np.all(np.isneginf(masked[:, 1]))
  np.testing.assert_allclose(masked[:, [0, 2]], ref[:, [0, 2]], rtol=1e-5, atol=1e-5)


def test_actor_critic_heads_match_numpy_forward():
  """Both torsos (tanh) against NumPy; ``heads="actor"``/``"critic"`` compute
  one torso from the same parameters and give the same numbers."""
  net = ActorCritic(3, (8, 5))
  x = np.random.default_rng(4).normal(size=(6, 4)).astype(np.float32)
  params = net.init(jax.random.key(1), x)["params"]
  ref_logits = _np_mlp({**params["MLP_0"], "Dense_9": params["Dense_0"]},
                       x.astype(np.float64), np.tanh)
  ref_value = _np_mlp({**params["MLP_1"], "Dense_9": params["Dense_1"]},
                      x.astype(np.float64), np.tanh)[:, 0]
  logits, value = net.apply({"params": params}, x)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(net.apply({"params": params}, x, heads="actor"), ref_logits,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(net.apply({"params": params}, x, heads="critic"), ref_value,
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="heads"):
    net.apply({"params": params}, x, heads="both heads")


def test_masked_actions_never_chosen_by_heads():
  rng = np.random.default_rng(1)
  q = rng.normal(size=(200, 4)).astype(np.float32)
  mask = rng.random((200, 4)) < 0.5
  mask[np.arange(200), rng.integers(0, 4, 200)] = True  # at least one valid
  q[:, 0] += 100.0  # action 0 the best whenever it is valid
  a = np.asarray(greedy_action(jnp.asarray(q), jnp.asarray(mask)))
  assert mask[np.arange(200), a].all()
  ref = np.argmax(np.where(mask, q, -np.inf), axis=1)
  np.testing.assert_array_equal(a, ref)
  net = ActorCritic(4, (8,))
  obs = rng.normal(size=(200, 3)).astype(np.float32)
  params = net.init(jax.random.key(0), obs)
  logits, value = net.apply(params, obs, jnp.asarray(mask))
  probs = np.asarray(jax.nn.softmax(logits))
  assert value.shape == (200,)
  assert np.all(probs[~mask] == 0.0)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  samples = jax.random.categorical(jax.random.key(2), logits, shape=(50, 200))
  assert mask[np.arange(200)[None], np.asarray(samples)].all()
  eps = common.epsilon_greedy(jax.random.key(3), jnp.asarray(q), jnp.asarray(mask), 1.0)
  assert mask[np.arange(200), np.asarray(eps)].all()


def test_epsilon_greedy_frequencies():
  # one state, actions 0..3 with action 2 masked; greedy is 3.
  q = jnp.tile(jnp.array([[0.0, 1.0, 5.0, 2.0]]), (20000, 1))
  mask = jnp.tile(jnp.array([[True, True, False, True]]), (20000, 1))
  a = np.asarray(common.epsilon_greedy(jax.random.key(0), q, mask, 0.3))
  freq = np.bincount(a, minlength=4) / a.size
  expected = np.array([0.1, 0.1, 0.0, 0.7 + 0.1])
  np.testing.assert_allclose(freq, expected, atol=0.015)


def test_distributional_heads_shapes_and_means():
  obs = jnp.ones((2, 5))
  net = CategoricalQNetwork(3, 7, (4,))
  logits = net.apply(net.init(jax.random.key(0), obs), obs)
  assert logits.shape == (2, 3, 7)
  support = jnp.linspace(-1.0, 2.0, 7)
  p = np.exp(np.asarray(logits, np.float64))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(categorical_q_values(logits, support),
                             p @ np.asarray(support, np.float64), rtol=1e-5, atol=1e-6)
  qn = QuantileQNetwork(3, 11, (4,))
  assert qn.apply(qn.init(jax.random.key(0), obs), obs).shape == (2, 3, 11)


def test_categorical_w1_matches_scipy():
  rng = np.random.default_rng(0)
  support = np.sort(rng.normal(size=9)) + np.arange(9)
  p, q = rng.random((2, 9))
  p, q = p / p.sum(), q / q.sum()
  ref = stats.wasserstein_distance(support, support, p, q)
  out = common.categorical_w1(jnp.asarray(p), jnp.asarray(q), jnp.asarray(support))
  np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_replay_buffer_circular_writes_and_sampling():
  example = {"x": jnp.zeros(2), "a": jnp.zeros((), jnp.int32)}
  buf = replay_init(example, 5)
  stored = [None] * 5
  pos, size, counter = 0, 0, 0
  for b in (3, 3, 2, 4):
    batch = {"x": jnp.arange(counter, counter + b, dtype=jnp.float32)[:, None] * jnp.ones(2),
             "a": jnp.arange(counter, counter + b, dtype=jnp.int32)}
    buf = jax.jit(replay_add)(buf, batch)
    for i in range(b):  # reference: a Python list written modulo 5
      stored[(pos + i) % 5] = counter + i
    pos, size, counter = (pos + b) % 5, min(size + b, 5), counter + b
    assert int(buf.position) == pos and int(buf.size) == size
    np.testing.assert_array_equal(np.asarray(buf.data["a"])[:size],
                                  np.array(stored[:size]))
  sample = replay_sample(buf, jax.random.key(0), 4000)
  np.testing.assert_array_equal(sample["x"][:, 0], sample["a"])
  counts = np.bincount(np.asarray(sample["a"]), minlength=counter)
  present = set(stored)
  assert all(counts[v] == 0 for v in range(counter) if v not in present)
  assert stats.chisquare([counts[v] for v in sorted(present)]).pvalue > 1e-3
  with pytest.raises(ValueError, match="capacity"):
    replay_init(example, 0)
  with pytest.raises(ValueError, match="exceeds"):
    replay_add(replay_init(example, 2), batch)


def test_schedule_and_option_checks():
  assert common.check_schedule(100, 25) == 4
  with pytest.raises(InvalidMDPError, match="eval_every = 30"):
    common.check_schedule(100, 30)
  with pytest.raises(InvalidMDPError, match="observation = 'pixels'"):
    common.check_observation("pixels")
  with pytest.raises(InvalidMDPError, match="learning_rate = -1"):
    common.check_positive("learning_rate", -1)
