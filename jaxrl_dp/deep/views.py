"""gymnax and gymnasium views of a :class:`~jaxrl_dp.deep.TabularEnv` (placeholder)."""

from __future__ import annotations

__all__ = ["to_gymnax", "to_gymnasium"]


def to_gymnax(mdp, **env_kwargs):
  raise NotImplementedError("to_gymnax: in progress")


def to_gymnasium(mdp, **env_kwargs):
  raise NotImplementedError("to_gymnasium: in progress")
