"""The ``>>>`` examples in the package's docstrings run and print what they say.

Every module of ``jaxrl_dp`` whose source holds a ``>>>`` example is
doctested (``NORMALIZE_WHITESPACE | ELLIPSIS``). The examples print rounded
Python floats (``round(x, 3)`` of ``.tolist()``), so their output does not
depend on NumPy's array printing; their numbers are closed forms worked out
by hand in the docstring itself (a two-state MDP whose optimal values are
``2 / (1 - gamma)`` and ``gamma * 2 / (1 - gamma)``, ...). They run in JAX's
default configuration (float32: ``jax_enable_x64`` off), which the examples
document.
"""

from __future__ import annotations

import doctest
import importlib
import pathlib

import jax
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxrl_dp"
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _modules_with_examples() -> list[str]:
  """Dotted names of the package modules whose source has a ``>>>`` line."""
  out = []
  for path in sorted(PACKAGE.rglob("*.py")):
    text = path.read_text(encoding="utf-8")
    if any(line.lstrip().startswith(">>>") for line in text.splitlines()):
      rel = path.relative_to(PACKAGE.parent).with_suffix("")
      parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
      out.append(".".join(parts))
  return out


MODULES = _modules_with_examples()


@pytest.fixture
def default_jax_config():
  """JAX's default precision for the examples (another test may have set x64)."""
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", False)
  yield
  jax.config.update("jax_enable_x64", old)


def test_the_entry_points_have_examples():
  # The main public entry points carry a doctested example.
  for name in ("jaxrl_dp.core.mdp", "jaxrl_dp.planning.value_iteration",
               "jaxrl_dp.planning.evaluation", "jaxrl_dp.planning.front_door",
               "jaxrl_dp.batch.driver", "jaxrl_dp.robust.inner",
               "jaxrl_dp.distributional.categorical"):
    assert name in MODULES, f"{name} has no >>> example"


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, default_jax_config):
  module = importlib.import_module(module_name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(optionflags=FLAGS)
  tests = [t for t in finder.find(module, module_name) if t.examples]
  assert tests, f"{module_name}: no doctest found although its source has '>>>'"
  for test in tests:
    runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, f"{module_name}: {result.failed} of {result.attempted} failed"
