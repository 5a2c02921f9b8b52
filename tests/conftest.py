import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# The two longest default tests (the README's examples, ~40-50 s, and the demo command, ~20 s)
# run first. Collected last (top-level files come after the packages' folders), one of them was
# often the last test still running on one worker while the other worker sat idle: a tail of up
# to their length on the two-worker default run.
RUN_FIRST = ("tests/test_cli.py::test_readme_python_examples_run",
             "tests/test_cli.py::test_demo_command_runs_and_reports_every_kind")


def pytest_collection_modifyitems(config, items):
  first = {name: i for i, name in enumerate(RUN_FIRST)}
  items.sort(key=lambda item: first.get(item.nodeid, len(first)))
