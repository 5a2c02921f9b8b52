"""Errors raised at the public boundary of jaxrl_dp."""


class InvalidMDPError(ValueError):
  """An MDP, a policy or a solver option failed validation.

  The message names the field, the first offending index and value, and what
  was expected, for example::

    InvalidMDPError: probs[3, 1, :] sums to 0.9 (expected 1 within atol=1e-05)
  """


class InsufficientMemoryError(InvalidMDPError, MemoryError):
  """An allocation that grows as ``S^2`` (or ``S^2 A``) would not fit in memory.

  Raised on the host, before the allocation, by the public functions that build
  a dense ``[S, S]`` (exact policy evaluation, policy iteration) or
  ``[S, A, S]`` (``TabularMDP.to_dense``) array. The message gives the size
  needed, the memory available, the largest ``S`` that would fit, and what to
  use instead. It is both an :class:`InvalidMDPError` (a ``ValueError``) and a
  ``MemoryError``.
  """
