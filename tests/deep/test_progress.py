"""The ``progress=True`` option of the deep training loops: a tqdm bar
advanced once per evaluation point by an ordered ``jax.debug.callback``.

References: the schedule itself (``num_updates``, ``eval_every``: the bar
must end at ``num_updates`` after exactly ``num_updates // eval_every``
reports, in order, once per point also when vmapped over seeds), the
``progress=False`` run (identical results, bit for bit) and the lowered
program (no host callback at all when ``progress=False``)."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from jaxrl_dp import suites
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep import common, dqn, ppo

DQN_SMALL = dict(num_envs=2, num_updates=12, eval_every=3, buffer_size=32, batch_size=4,
                 learning_starts=4, hidden=(8,), target_update_interval=4)
PPO_SMALL = dict(num_envs=2, num_steps=4, num_updates=6, eval_every=2, update_epochs=1,
                 num_minibatches=2, hidden=(8,))


def _mdp():
  return suites.frozen_lake("4x4", is_slippery=True, discount=0.9)


def _lowered(train, config, seeds=2):
  keys = jax.random.split(jax.random.key(0), seeds)
  return jax.jit(jax.vmap(lambda k: train(k, _mdp(), **config))).lower(keys).as_text()


def _recording(monkeypatch):
  """Wraps :func:`common.report_progress` (before tracing) to record its calls."""
  calls, real = [], common.report_progress

  def record(label, num_evals, every, e):
    calls.append((label, num_evals, every, int(e)))
    real(label, num_evals, every, e)

  monkeypatch.setattr(common, "report_progress", record)
  return calls


@pytest.mark.slow  # two compiles of a training run each (default-run budget)
@pytest.mark.parametrize("label", ["DQN", "PPO"])
def test_progress_bar_counts_updates_and_changes_nothing(capsys, monkeypatch, label):
  """One ordered report per evaluation point (not per seed), then the bar's
  final render (all updates, labelled with the agent); the training is bit
  for bit the same as without the bar."""
  train, config, seed, seeds, evals, every = {
      "DQN": (dqn.train_dqn, DQN_SMALL, 3, 3, 4, 3),
      "PPO": (ppo.train_ppo, PPO_SMALL, 2, 2, 3, 2)}[label]
  calls = _recording(monkeypatch)
  keys = jax.random.split(jax.random.key(seed), seeds)
  run = lambda progress: jax.vmap(lambda k: train(k, _mdp(), **config,
                                                  progress=progress))(keys)
  plain = run(False)
  capsys.readouterr()
  shown = run(True)
  jax.effects_barrier()
  err = capsys.readouterr().err
  assert calls == [(label, evals, every, e) for e in range(evals)]
  counts = re.findall(r"(\d+)/(\d+)", err)
  total = str(evals * every)
  assert label in err and counts and counts[-1] == (total, total), err
  for x, y in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(shown)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert "callback" not in _lowered(train, config)


def test_report_progress_drives_one_bar_per_run(capsys):
  """The host side alone: points 0..3 of eval_every 5 end the bar at 20/20
  and close it; a late report of a closed run (a vmapped duplicate) opens
  nothing; the next run's point 0 opens a fresh bar."""
  for e in range(4):
    common.report_progress("X", 4, 5, np.int32(e))
  assert "X" not in common._BARS
  common.report_progress("X", 4, 5, np.int32(3))
  assert "X" not in common._BARS
  err = capsys.readouterr().err
  assert re.findall(r"(\d+)/(\d+)", err)[-1] == ("20", "20"), err
  common.report_progress("X", 2, 1, np.int32(0))
  assert common._BARS["X"].n == 1 and common._BARS["X"].total == 2
  common.report_progress("X", 2, 1, np.int32(1))
  assert "X" not in common._BARS


def test_no_callback_in_the_program_without_progress():
  assert "callback" not in _lowered(dqn.train_dqn, DQN_SMALL)
  assert "callback" in _lowered(dqn.train_dqn, dict(DQN_SMALL, progress=True))


def test_progress_must_be_a_bool():
  with pytest.raises(InvalidMDPError, match="progress"):
    dqn.train_dqn(jax.random.key(0), _mdp(), **DQN_SMALL, progress=1)
  with pytest.raises(InvalidMDPError, match="progress"):
    ppo.train_ppo(jax.random.key(0), _mdp(), **PPO_SMALL, progress="yes")
