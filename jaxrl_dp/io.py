"""Saving and loading MDPs and results: :func:`save` / :func:`load`.

One object per file, a NumPy ``.npz`` archive read back without pickle
(``np.load(allow_pickle=False)``). The archive holds:

* ``__format__``: the string ``"jaxrl_dp"``;
* ``__format_version__``: an int (:data:`FORMAT_VERSION`); a file of another
  version is refused with both versions named;
* ``__type__``: the registered name of the saved type (e.g. ``"Solution"``,
  ``"robust.RobustSolution"``; :func:`saveable_types` lists them);
* ``__manifest__``: a JSON string describing the object's fields: an array
  (stored under its dotted field path, e.g. ``solution.values``), ``None``, a
  nested saved type, or a static Python value (int, float, bool, str, list,
  tuple, dict; floats stored by ``repr``, so they come back bit for bit);
* one array per array field, with its dtype and shape unchanged (a batch
  axis ``B`` included).

Saved types: :class:`~jaxrl_dp.TabularMDP` (dense or sparse, with
``action_mask`` and ``transition_rewards``) and every result type of the
library (``core``, ``planning``, ``robust``, ``distributional``,
``random_policy``), plus the robust uncertainty sets and the linear-MDP
data; other types are refused by name. The registry names the module of each
type; it is imported only when a file of that type is loaded, so
``import jaxrl_dp`` stays light.

Loading a :class:`~jaxrl_dp.TabularMDP` gives JAX arrays and runs the host
validator (an edited file is refused naming the entry); a float64 model needs
``jax_enable_x64`` (it is refused without it rather than silently rounded to
float32). Every other type comes back with NumPy leaves, dtypes unchanged
(as :func:`jaxrl_dp.batch.solve` returns results).

Errors (:class:`FileFormatError`, a ``ValueError``) name the path and what is
wrong: not a readable ``.npz`` (missing, truncated or corrupt: the zip's
CRC-32 of each array is checked), another format version, an unknown type, a
missing field or array.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = ["FORMAT_VERSION", "FileFormatError", "is_jaxrl_file", "load", "registered_class", "save",
           "saveable_types"]

logger = logging.getLogger(__name__)

#: Version of the ``.npz`` layout written by :func:`save`.
FORMAT_VERSION = 1
_FORMAT = "jaxrl_dp"
_META = ("__format__", "__format_version__", "__type__", "__manifest__")

#: Registered name -> ``"module:Class"``. Names are stable across releases
#: (a class may move between modules; its name in files does not change).
_REGISTRY: dict[str, str] = {
    "TabularMDP": "jaxrl_dp.core.mdp:TabularMDP",
    "Solution": "jaxrl_dp.core.types:Solution",
    "PolicyEvaluation": "jaxrl_dp.core.types:PolicyEvaluation",
    "FiniteHorizonSolution": "jaxrl_dp.core.types:FiniteHorizonSolution",
    "SoftSolution": "jaxrl_dp.core.soft:SoftSolution",
    "SoftFiniteHorizonSolution": "jaxrl_dp.core.soft:SoftFiniteHorizonSolution",
    "AverageRewardSolution": "jaxrl_dp.planning.average_reward:AverageRewardSolution",
    "Certificate": "jaxrl_dp.planning.certify:Certificate",
    "robust.RobustSolution": "jaxrl_dp.robust.types:RobustSolution",
    "robust.SRectangularSolution": "jaxrl_dp.robust.types:SRectangularSolution",
    "robust.RobustPolicyEvaluation": "jaxrl_dp.robust.types:RobustPolicyEvaluation",
    "robust.RobustFiniteHorizonSolution": "jaxrl_dp.robust.types:RobustFiniteHorizonSolution",
    "robust.IWOCSResult": "jaxrl_dp.robust.iwocs:IWOCSResult",
    "robust.IWOCSHistory": "jaxrl_dp.robust.iwocs:IWOCSHistory",
    "robust.LinearPVIResult": "jaxrl_dp.robust.r2pvi:LinearPVIResult",
    "robust.OfflineDataset": "jaxrl_dp.robust.r2pvi:OfflineDataset",
    "robust.LinearMDPModel": "jaxrl_dp.robust.linear_mdps:LinearMDPModel",
    "robust.UncertaintySet": "jaxrl_dp.robust.uncertainty_sets:UncertaintySet",
    "distributional.Distribution": "jaxrl_dp.distributional.base:Distribution",
    "distributional.CategoricalResult": "jaxrl_dp.distributional.base:CategoricalResult",
    "distributional.QuantileResult": "jaxrl_dp.distributional.base:QuantileResult",
    "distributional.ExactReturnDistribution":
        "jaxrl_dp.distributional.exact:ExactReturnDistribution",
    "distributional.StockSolution": "jaxrl_dp.distributional.stock:StockSolution",
    "distributional.CVaRSolution": "jaxrl_dp.distributional.stock_cvar:CVaRSolution",
    "distributional.DiscountedCVaRSolution":
        "jaxrl_dp.distributional.stock_cvar:DiscountedCVaRSolution",
    "distributional.DiscountedStockSolution":
        "jaxrl_dp.distributional.stock_interpolation:DiscountedStockSolution",
    "distributional.HomogeneousUtility": "jaxrl_dp.distributional.utility:HomogeneousUtility",
    "random_policy.EffectiveHorizonAnalysis":
        "jaxrl_dp.random_policy.horizon_kernel:EffectiveHorizonAnalysis",
    "random_policy.StickyAnalysis": "jaxrl_dp.random_policy.sticky:StickyAnalysis",
    "random_policy.Trajectories": "jaxrl_dp.random_policy.rollout:Trajectories",
    "random_policy.GORPResult": "jaxrl_dp.random_policy.gorp:GORPResult",
    "random_policy.SampleComplexity": "jaxrl_dp.random_policy.gorp:SampleComplexity",
    "random_policy.SQIRLResult": "jaxrl_dp.random_policy.sqirl:SQIRLResult",
    "random_policy.TreeMetrics": "jaxrl_dp.random_policy.rover:TreeMetrics",
    "random_policy.LearnerResult": "jaxrl_dp.random_policy.rover:LearnerResult",
}
_BY_CLASS = {v.replace(":", "."): k for k, v in _REGISTRY.items()}
_ARRAY_KINDS = "biuf"  # bool, signed / unsigned int, float: no objects, no pickle


class FileFormatError(ValueError):
  """A file that :func:`load` cannot read: names the path and the problem."""


def saveable_types() -> tuple[str, ...]:
  """The registered type names :func:`save` accepts (sorted)."""
  return tuple(sorted(_REGISTRY))


def registered_class(name: str) -> type:
  """The class registered under ``name`` (imports its module).

  Raises:
    FileFormatError: ``name`` is not registered.
  """
  if name not in _REGISTRY:
    raise FileFormatError(
        f"type {name!r} is not a saved jaxrl_dp type; known: {', '.join(saveable_types())}")
  module, cls = _REGISTRY[name].split(":")
  return getattr(importlib.import_module(module), cls)


def _type_name(obj) -> str | None:
  cls = type(obj)
  return _BY_CLASS.get(f"{cls.__module__}.{cls.__qualname__}")


# ------------------------------------------------------------------- encoding
def _encode(obj, path: str, arrays: dict[str, np.ndarray]) -> Any:
  """The manifest node of ``obj``; its arrays are added to ``arrays``."""
  name = _type_name(obj)
  if name is not None:
    return {"struct": name, "fields": {
        f.name: _encode(getattr(obj, f.name), _join(path, f.name), arrays)
        for f in dataclasses.fields(obj)}}
  if isinstance(obj, (np.ndarray, np.generic)) or hasattr(obj, "__array__"):
    arr = np.asarray(obj)  # NumPy scalars (np.float64 is a float) come back as 0-d arrays
    if arr.dtype.kind not in _ARRAY_KINDS:
      raise TypeError(f"{path or 'obj'}: arrays of dtype {arr.dtype} cannot be saved "
                      f"(expected bool, int or float)")
    arrays[path] = arr
    return {"array": path}
  if obj is None:
    return {"none": True}
  if isinstance(obj, bool):
    return {"bool": obj}
  if isinstance(obj, int):
    return {"int": obj}
  if isinstance(obj, float):
    return {"float": repr(obj)}
  if isinstance(obj, str):
    return {"str": obj}
  if isinstance(obj, (list, tuple)):
    kind = "list" if isinstance(obj, list) else "tuple"
    return {kind: [_encode(x, _join(path, str(i)), arrays) for i, x in enumerate(obj)]}
  if isinstance(obj, dict):
    return {"dict": [[_encode(k, _join(path, f"key{i}"), arrays),
                      _encode(v, _join(path, f"value{i}"), arrays)]
                     for i, (k, v) in enumerate(obj.items())]}
  if dataclasses.is_dataclass(obj):
    raise TypeError(f"{path or 'obj'}: type {type(obj).__name__} is not a saved jaxrl_dp "
                    f"type; known: {', '.join(saveable_types())}")
  raise TypeError(f"{path or 'obj'}: a value of type {type(obj).__name__} cannot be saved")


def _join(path: str, name: str) -> str:
  return f"{path}.{name}" if path else name


def save(path: Union[str, os.PathLike], obj: Any, *, compress: bool = False) -> Path:
  """Saves an MDP or a result to a versioned ``.npz`` file (no pickle).

  The file is written to ``path`` exactly as given (no suffix is added; use
  ``.npz``), through a temporary file renamed into place, so an interrupted
  save never leaves a half-written file under ``path``.

  Args:
    path: destination file.
    obj: a :class:`~jaxrl_dp.TabularMDP` or a result of the library (one or
      a batch: leading axes are kept); see :func:`saveable_types`.
    compress: zip-deflate the arrays (smaller, slower).

  Returns:
    The path written.

  Raises:
    TypeError: ``obj`` (or a field of it) is of a type that cannot be saved,
      named in the message.
  """
  if _type_name(obj) is None:
    raise TypeError(f"obj: type {type(obj).__module__}.{type(obj).__qualname__} is not a "
                    f"saved jaxrl_dp type; known: {', '.join(saveable_types())}")
  arrays: dict[str, np.ndarray] = {}
  manifest = _encode(obj, "", arrays)
  clash = [k for k in arrays if k in _META]
  if clash:  # pragma: no cover - no registered type has such a field
    raise TypeError(f"obj: field names {clash} clash with the file's metadata")
  meta = {"__format__": np.asarray(_FORMAT),
          "__format_version__": np.asarray(FORMAT_VERSION, np.int64),
          "__type__": np.asarray(manifest["struct"]),
          "__manifest__": np.asarray(json.dumps(manifest))}
  path = Path(os.fspath(path))
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  writer = np.savez_compressed if compress else np.savez
  try:
    with open(tmp, "wb") as f:
      # numpy's stub matches **kwds against savez's allow_pickle: bool.
      writer(f, **meta, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()
  logger.debug("saved %s (%d arrays) to %s", manifest["struct"], len(arrays), path)
  return path


# ------------------------------------------------------------------- decoding
def _decode(node, data, where: str, path: Path):
  def fail(msg):
    raise FileFormatError(f"{path}: {where or 'object'}: {msg}")

  if not isinstance(node, dict) or len(node) not in (1, 2):
    fail(f"malformed manifest entry {node!r}")
  if "struct" in node:
    name = node["struct"]
    try:
      cls = registered_class(name)
    except FileFormatError as e:
      fail(str(e))
    fields = node.get("fields")
    if not isinstance(fields, dict):
      fail("malformed manifest entry (no fields)")
    want = [f.name for f in dataclasses.fields(cls)]
    missing = [f for f in want if f not in fields]
    if missing:
      fail(f"missing field(s) {missing} of {name} (the file has {sorted(fields)})")
    extra = [f for f in fields if f not in want]
    if extra:
      fail(f"unknown field(s) {extra} for {name} (expected {want})")
    kwargs = {f: _decode(fields[f], data, _join(where, f), path) for f in want}
    return cls(**kwargs)
  ((kind, value),) = node.items()
  if kind == "array":
    if value not in data.files:
      fail(f"missing array {value!r} (the file was truncated or edited)")
    try:
      return data[value]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
      fail(f"array {value!r} cannot be read: {e}")
  if kind == "none":
    return None
  if kind in ("bool", "int", "str"):
    want_type = {"bool": bool, "int": int, "str": str}[kind]
    if type(value) is not want_type:
      fail(f"malformed {kind} value {value!r}")
    return value
  if kind == "float":
    try:
      return float(value)
    except (TypeError, ValueError):
      fail(f"malformed float value {value!r}")
  if kind in ("list", "tuple"):
    items = [_decode(x, data, _join(where, str(i)), path) for i, x in enumerate(value)]
    return items if kind == "list" else tuple(items)
  if kind == "dict":
    return {_decode(k, data, where, path): _decode(v, data, where, path) for k, v in value}
  fail(f"unknown manifest entry kind {kind!r}")


def _read_meta(data, path: Path) -> dict:
  missing = [k for k in _META if k not in data.files]
  if missing:
    raise FileFormatError(
        f"{path}: not a jaxrl_dp file (missing {missing}; it holds {sorted(data.files)[:8]}): "
        f"write it with jaxrl_dp.save")
  fmt = str(data["__format__"])
  if fmt != _FORMAT:
    raise FileFormatError(f"{path}: __format__ = {fmt!r}: expected {_FORMAT!r}")
  version = data["__format_version__"]
  if version.shape != () or version.dtype.kind not in "iu":
    raise FileFormatError(f"{path}: __format_version__ = {version!r}: expected an int")
  version = int(version)
  if version != FORMAT_VERSION:
    newer = "a newer jaxrl_dp" if version > FORMAT_VERSION else "an older jaxrl_dp"
    raise FileFormatError(
        f"{path}: format version {version}; this jaxrl_dp reads version {FORMAT_VERSION} "
        f"(the file was written by {newer})")
  try:
    manifest = json.loads(str(data["__manifest__"]))
  except json.JSONDecodeError as e:
    raise FileFormatError(f"{path}: __manifest__ is not valid JSON ({e})") from None
  if not isinstance(manifest, dict) or manifest.get("struct") != str(data["__type__"]):
    raise FileFormatError(f"{path}: __manifest__ does not describe __type__ = "
                          f"{str(data['__type__'])!r}")
  return manifest


def is_jaxrl_file(path: Union[str, os.PathLike]) -> bool:
  """Whether ``path`` is an ``.npz`` archive with this module's metadata."""
  try:
    data = np.load(os.fspath(path), allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
      return False  # a single .npy array (an ndarray: not a context manager)
    with data:
      return "__format_version__" in data.files
  except (OSError, ValueError, zipfile.BadZipFile, EOFError):
    return False


def load(path: Union[str, os.PathLike]) -> Any:
  """Loads an object written by :func:`save`.

  Args:
    path: a ``.npz`` file written by :func:`save`.

  Returns:
    The saved object: a :class:`~jaxrl_dp.TabularMDP` (JAX arrays, validated)
    or a result (NumPy leaves, dtypes and shapes as saved).

  Raises:
    FileFormatError: missing, truncated or corrupt file, another format
      version, an unknown type, a missing field or array (naming the path
      and the field).
    jaxrl_dp.InvalidMDPError: a saved MDP whose entries do not validate, or a
      float64 MDP without ``jax_enable_x64``.
  """
  path = Path(os.fspath(path))
  if not path.is_file():
    raise FileFormatError(f"{path}: no such file")
  try:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
      # A plain ndarray is not a context manager: the check comes before
      # ``with`` (inside it, a .npy file raised a bare TypeError).
      raise FileFormatError(f"{path}: a single .npy array, not a jaxrl_dp .npz archive")
    with data:
      manifest = _read_meta(data, path)
      obj = _decode(manifest, data, "", path)
  except FileFormatError:
    raise
  except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError,
          NotImplementedError) as e:  # zipfile: a flipped compression-method byte
    raise FileFormatError(
        f"{path}: not a readable .npz archive (truncated or corrupt?): {e}") from None
  if manifest["struct"] == "TabularMDP":
    obj = _as_model(obj)
  logger.debug("loaded %s from %s", manifest["struct"], path)
  return obj


def _as_model(mdp):
  """A loaded MDP with JAX leaves, dtype-checked and validated."""
  import jax
  import jax.numpy as jnp

  from jaxrl_dp.core.mdp import float_dtype, validate_mdp
  float_dtype(mdp.probs.dtype)  # float64 without jax_enable_x64: refused, naming it
  mdp = validate_mdp(mdp)
  return jax.tree_util.tree_map(jnp.asarray, mdp)
