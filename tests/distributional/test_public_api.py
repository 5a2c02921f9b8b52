"""Public API of the random_policy and distributional families: every module
has an ``__all__`` that resolves, packages export no private names, the lazily
loaded families are visible to type checkers, and there is one name per
function (no aliases)."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import jaxrl_dp

FAMILIES = ("random_policy", "distributional")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_module_has_a_resolving_all(family):
  pkg = importlib.import_module(f"jaxrl_dp.{family}")
  names = [m.name for m in pkgutil.iter_modules(pkg.__path__)]
  assert names
  for name in [family] + [f"{family}.{n}" for n in names]:
    mod = importlib.import_module(f"jaxrl_dp.{name}")
    assert hasattr(mod, "__all__"), name
    for n in mod.__all__:
      assert hasattr(mod, n), f"{name}.{n}"
  for n in pkg.__all__:
    assert not n.startswith("_"), n
  # One name per object: no aliases in the package's public names.
  objs = [id(getattr(pkg, n)) for n in pkg.__all__]
  assert len(objs) == len(set(objs)), family


def test_lazy_families_visible_to_type_checkers():
  tree = ast.parse(Path(jaxrl_dp.__file__).read_text())
  seen = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
      for sub in ast.walk(node):
        if isinstance(sub, ast.ImportFrom) and sub.module == "jaxrl_dp":
          seen |= {a.name for a in sub.names}
  assert {"random_policy", "distributional", "robust", "figures"} <= seen
  assert {"random_policy", "distributional"} <= set(dir(jaxrl_dp))


def test_no_private_imports_across_modules_of_the_families():
  root = Path(jaxrl_dp.__file__).parent
  for family in FAMILIES:
    for path in (root / family).glob("*.py"):
      tree = ast.parse(path.read_text())
      for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxrl_dp"):
          private = [a.name for a in node.names if a.name.startswith("_")]
          assert not private, f"{path.name} imports {private} from {node.module}"
