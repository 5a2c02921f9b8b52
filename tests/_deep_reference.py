"""Independent float64 NumPy references for the deep agents' losses (no jaxrl_dp
code): loops written from the papers' definitions."""

import numpy as np


def np_categorical_project(atoms, probs, support):
  """Cramer projection of one distribution (atoms [M], probs [M]) onto a
  strictly increasing support [N]: each atom, clipped to [z_0, z_{N-1}], is
  split between its two neighbours in proportion to proximity."""
  z = np.asarray(support, np.float64)
  out = np.zeros(len(z))
  for x, p in zip(np.asarray(atoms, np.float64), np.asarray(probs, np.float64)):
    x = min(max(x, z[0]), z[-1])
    if len(z) == 1:
      out[0] += p
      continue
    i = 0
    while i < len(z) - 2 and x >= z[i + 1]:
      i += 1
    w_hi = (x - z[i]) / (z[i + 1] - z[i])
    out[i] += p * (1 - w_hi)
    out[i + 1] += p * w_hi
  return out


def np_quantile_huber_loss(locs, targets, kappa):
  """sum_i mean_j |tau_i - 1{u<0}| H_kappa(u) / kappa, u = targets_j - locs_i
  (kappa = 0: |tau_i - 1{u<0}| |u|); tau_i = (2i + 1) / 2N for i = 0..N-1."""
  n = len(locs)
  total = 0.0
  for i in range(n):
    tau = (2 * i + 1) / (2 * n)
    acc = 0.0
    for t in targets:
      u = float(t) - float(locs[i])
      w = abs(tau - (1.0 if u < 0 else 0.0))
      if kappa == 0:
        acc += w * abs(u)
      elif abs(u) <= kappa:
        acc += w * 0.5 * u * u / kappa
      else:
        acc += w * kappa * (abs(u) - 0.5 * kappa) / kappa
    total += acc / len(targets)
  return total


def np_gae(rewards, values, next_values, discounts, dones, lam):
  """GAE by a backward loop over t for each column: [T, E] arrays."""
  t_len = rewards.shape[0]
  adv = np.zeros_like(np.asarray(rewards, np.float64))
  for e in range(rewards.shape[1]):
    a_next = 0.0
    for t in reversed(range(t_len)):
      delta = rewards[t, e] + discounts[t, e] * next_values[t, e] - values[t, e]
      a_next = delta + lam * discounts[t, e] * (1.0 - float(dones[t, e])) * a_next
      adv[t, e] = a_next
  return adv, adv + values


def np_log_softmax(x, mask):
  x = np.where(mask, np.asarray(x, np.float64), -np.inf)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_ppo_loss(logits, value, action, logp_old, value_old, advantage, target, mask,
                clip_eps, vf_coef, ent_coef):
  """PPO total loss (clipped surrogate, clipped value loss, entropy), advantages
  normalized over the batch."""
  b = len(action)
  logp_all = np_log_softmax(logits, mask)
  adv = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
  pol = 0.0
  for i in range(b):
    ratio = np.exp(logp_all[i, action[i]] - logp_old[i])
    pol += min(ratio * adv[i], np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv[i])
  pol = -pol / b
  v_clip = value_old + np.clip(value - value_old, -clip_eps, clip_eps)
  vl = 0.5 * np.mean(np.maximum((value - target) ** 2, (v_clip - target) ** 2))
  ent = 0.0
  for i in range(b):
    for a in range(logits.shape[1]):
      if mask[i, a]:
        ent -= np.exp(logp_all[i, a]) * logp_all[i, a]
  ent /= b
  return pol + vf_coef * vl - ent_coef * ent
