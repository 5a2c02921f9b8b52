import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

# One persistent XLA compilation cache for the whole run, shared by the xdist
# workers and the CLI tests' subprocesses (all inherit this process's
# environment), in a fresh folder removed at the end: a program that one test
# compiles and another compiles again (the same solver at the same shapes from
# a fresh ``jax.jit``, or in the other worker) is compiled once. Measured on
# the default run (2-core AMD EPYC, 1-min load ~3 from other work, 1125
# tests): 751 s without, 667 s with (6,877 programs cached, 68 MB). Set before
# JAX is imported (the controller imports this file before it starts the
# workers); a cache folder set by the user is kept and left in place.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxrl_dp_tests_xla_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The two longest default tests (the README's examples, ~40-50 s, and the demo command, ~20 s)
# run first. Collected last (top-level files come after the packages' folders), one of them was
# often the last test still running on one worker while the other worker sat idle: a tail of up
# to their length on the two-worker default run.
RUN_FIRST = ("tests/test_cli.py::test_readme_python_examples_run",
             "tests/test_cli.py::test_demo_command_runs_and_reports_every_kind")


def pytest_collection_modifyitems(config, items):
  first = {name: i for i, name in enumerate(RUN_FIRST)}
  items.sort(key=lambda item: first.get(item.nodeid, len(first)))


def pytest_sessionfinish(session, exitstatus):
  # The process that made the folder removes it (an xdist worker has
  # ``workerinput`` and did not make it: it inherited the variable).
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
