"""jaxrl_dp.io: save/load round trips of TabularMDP (dense, sparse, masks,
transition rewards) and of every registered result type (the reference is the
saved object itself: every array bit for bit, same dtype and shape; every
static value of the same type), and the refusals: another format version, a
truncated or corrupt file, a missing field or array, unknown types."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import io
from jaxrl_dp.core.errors import InvalidMDPError

DTYPES = (np.float32, np.int32, np.bool_, np.float64, np.int64, np.uint8)


def _instance(cls, rng, counter):
  """An instance of a registered dataclass with random fields of varied dtypes."""
  kwargs = {}
  for f in dataclasses.fields(cls):
    t = str(f.type)
    counter[0] += 1
    sub = _registered_name(t)
    if sub is not None:
      kwargs[f.name] = _instance(io.registered_class(sub), rng, counter)
    elif "Array" in t:
      if t.startswith("Optional") and counter[0] % 3 == 0:
        kwargs[f.name] = None
      else:
        dt = DTYPES[counter[0] % len(DTYPES)]
        shape = tuple(rng.integers(1, 4, size=counter[0] % 3))
        kwargs[f.name] = np.asarray(rng.normal(size=shape) * 10).astype(dt)
    elif t in ("int", "Optional[int]"):
      kwargs[f.name] = 3 if t == "int" else None
    elif t in ("float", "Optional[float]"):
      kwargs[f.name] = [0.1, math.inf, -2.5e-300][counter[0] % 3]
    elif t == "int | None":
      kwargs[f.name] = 7
    elif t == "str":
      kwargs[f.name] = "l1"
    elif t == "dict":
      kwargs[f.name] = {1: 2.5, 3: math.inf, 4: math.nan}
    else:
      raise AssertionError(f"{cls.__name__}.{f.name}: no generator for type {t}")
  return cls(**kwargs)


def _registered_name(type_str):
  for name in io.saveable_types():
    if name.split(".")[-1] == type_str:
      return name
  return None


def _assert_same(a, b, where="obj"):
  assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
  if dataclasses.is_dataclass(a):
    for f in dataclasses.fields(a):
      _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
  elif isinstance(a, np.ndarray):
    assert a.dtype == b.dtype and a.shape == b.shape, where
    np.testing.assert_array_equal(a, b, err_msg=where)
  elif isinstance(a, dict):
    assert list(a) == list(b), where
    for k in a:
      _assert_same(a[k], b[k], f"{where}[{k}]")
  elif isinstance(a, float) and math.isnan(a):
    assert math.isnan(b), where
  else:
    assert a == b, where


@pytest.mark.parametrize("name", [n for n in io.saveable_types() if n != "TabularMDP"])
def test_every_result_type_round_trips(name, tmp_path):
  cls = io.registered_class(name)
  obj = _instance(cls, np.random.default_rng(len(name)), [len(name)])
  path = io.save(tmp_path / "r.npz", obj)
  _assert_same(obj, io.load(path))
  with np.load(path, allow_pickle=False) as data:
    assert str(data["__type__"]) == name and int(data["__format_version__"]) == 1


def test_result_types_cover_the_families():
  """Every public result dataclass of the families is registered."""
  import jaxrl_dp.distributional as dist
  import jaxrl_dp.random_policy as rp
  import jaxrl_dp.robust as rob
  for mod, family in ((rob, "robust"), (dist, "distributional"), (rp, "random_policy")):
    for n in mod.__all__:
      obj = getattr(mod, n)
      if isinstance(obj, type) and dataclasses.is_dataclass(obj) and (
          n.endswith(("Solution", "Result", "Evaluation", "Analysis", "Distribution", "History",
                      "Metrics", "Complexity")) or n == "Trajectories"):
        assert f"{family}.{n}" in io.saveable_types(), n


def _mdps():
  rng = np.random.default_rng(0)
  s, a, k = 5, 3, 2
  p = rng.random((s, a, s))
  p /= p.sum(-1, keepdims=True)
  r_trans = rng.normal(size=(s, a, s))
  mask = np.ones((s, a), bool)
  mask[1, 2] = False
  ns = np.stack([[rng.choice(s, k, replace=False) for _ in range(a)] for _ in range(s)])
  ps = rng.random((s, a, k)) + 0.1
  ps /= ps.sum(-1, keepdims=True)
  init = rng.random(s)
  dense = jd.TabularMDP.from_dense(p, r_trans, 0.9, action_mask=mask, initial=init / init.sum())
  sparse = jd.TabularMDP.from_sparse(ns, ps, rng.normal(size=(s, a)), 0.95)
  return {"dense": (dense, p, mask), "sparse": (sparse, ps, None)}


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_mdp_round_trip(kind, tmp_path):
  mdp, probs, mask = _mdps()[kind]
  io.save(tmp_path / "m.npz", mdp, compress=kind == "sparse")
  back = io.load(tmp_path / "m.npz")
  assert isinstance(back, jd.TabularMDP) and back.is_sparse == (kind == "sparse")
  for f in dataclasses.fields(mdp):
    x, y = getattr(mdp, f.name), getattr(back, f.name)
    assert (x is None) == (y is None), f.name
    if x is not None:
      assert isinstance(y, jax.Array) and x.dtype == y.dtype, f.name
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f.name)
  np.testing.assert_allclose(np.asarray(back.probs), probs, rtol=1e-6)  # the source arrays
  if mask is not None:
    np.testing.assert_array_equal(np.asarray(back.action_mask), mask)
    assert back.transition_rewards is not None


def _rewrite(path, edit):
  with np.load(path, allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
  edit(arrays)
  with open(path, "wb") as f:
    np.savez(f, **arrays)


def test_refusals(tmp_path):
  mdp = _mdps()["dense"][0]
  good = tmp_path / "good.npz"
  io.save(good, mdp)
  raw = good.read_bytes()

  def fresh(name):
    p = tmp_path / name
    p.write_bytes(raw)
    return p

  p = fresh("v2.npz")
  _rewrite(p, lambda d: d.update(__format_version__=np.asarray(2)))
  with pytest.raises(io.FileFormatError, match="format version 2; this jaxrl_dp reads "
                                               "version 1 .*newer"):
    io.load(p)
  p = fresh("trunc.npz")
  p.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(io.FileFormatError, match="not a readable .npz archive"):
    io.load(p)
  p = fresh("crc.npz")  # one flipped byte inside the probs array: the zip CRC catches it
  data = bytearray(raw)
  at = raw.index(np.asarray(mdp.probs).tobytes()[:32]) + 40
  data[at] ^= 0xFF
  p.write_bytes(bytes(data))
  with pytest.raises(io.FileFormatError, match="probs: array 'probs' cannot be read: Bad CRC"):
    io.load(p)
  # A damaged compression-method field (central directory, offset 10 of a
  # "PK\x01\x02" record): zipfile raises NotImplementedError, which escaped.
  data = bytearray(raw)
  at = raw.rindex(b"PK\x01\x02") + 10
  data[at:at + 2] = (99).to_bytes(2, "little")
  p = fresh("method.npz")
  p.write_bytes(bytes(data))
  with pytest.raises(io.FileFormatError, match="not a readable .npz archive"):
    io.load(p)

  def drop_field(d):
    m = json.loads(str(d["__manifest__"]))
    del m["fields"]["action_mask"]
    d["__manifest__"] = np.asarray(json.dumps(m))

  p = fresh("field.npz")
  _rewrite(p, drop_field)
  with pytest.raises(io.FileFormatError, match=r"missing field\(s\) \['action_mask'\]"):
    io.load(p)
  p = fresh("array.npz")
  _rewrite(p, lambda d: d.pop("rewards"))
  with pytest.raises(io.FileFormatError, match="missing array 'rewards'"):
    io.load(p)
  p = fresh("type.npz")
  _rewrite(p, lambda d: d.update(__type__=np.asarray("Nope")))
  with pytest.raises(io.FileFormatError, match="does not describe __type__ = 'Nope'"):
    io.load(p)
  p = fresh("edited.npz")  # an edited probability: the validator names it
  _rewrite(p, lambda d: d["probs"].__setitem__((0, 0, 0), -1.0))
  with pytest.raises(InvalidMDPError, match=r"probs\[0, 0, 0\] = -1.0"):
    io.load(p)
  bridge = tmp_path / "bridge.npz"
  np.savez(bridge, transitions=np.zeros((2, 2), int), rewards=np.zeros((2, 2)))
  with pytest.raises(io.FileFormatError, match="not a jaxrl_dp file"):
    io.load(bridge)
  with pytest.raises(io.FileFormatError, match="no such file"):
    io.load(tmp_path / "missing.npz")
  with pytest.raises(TypeError, match="type builtins.dict is not a saved jaxrl_dp type"):
    io.save(tmp_path / "x.npz", {"values": np.zeros(3)})
  bad = jd.Solution(*([np.zeros(2)] * 6), error_bound=object())
  with pytest.raises(TypeError, match="error_bound: a value of type object cannot be saved"):
    io.save(tmp_path / "x.npz", bad)
  assert not (tmp_path / "x.npz").exists()


def test_float64_mdp_needs_x64(tmp_path):
  mdp = _mdps()["sparse"][0]
  p = tmp_path / "m.npz"
  io.save(p, mdp)
  _rewrite(p, lambda d: d.update(probs=d["probs"].astype(np.float64)))
  with pytest.raises(InvalidMDPError, match="dtype = float64: needs jax_enable_x64"):
    io.load(p)


def test_a_single_npy_array_is_refused_by_name(tmp_path):
  """``np.load`` of a ``.npy`` file gives an ndarray, not a context manager:
  ``load`` raised a bare ``TypeError`` before its own check could run."""
  f = tmp_path / "arr.npy"
  np.save(f, np.zeros(3))
  assert not io.is_jaxrl_file(f)
  with pytest.raises(io.FileFormatError, match=r"arr\.npy: a single \.npy array"):
    io.load(f)
