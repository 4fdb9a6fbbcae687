"""Diagonal oscillator banks: the Hamiltonian SSM's phase-space state and its symplectic step.

Each of D channels is a damped harmonic oscillator with position q, momentum p, stiffness k = omega^2 and
damping gamma; the tick's input enters as a force F on the momentum (seed 003: inputs as external forces). One
tick of length dt is kick-drift-kick leapfrog, with the damping as an exact decay of p around each kick
(a conformal-symplectic splitting; gamma = 0 gives plain leapfrog, symplectic and time-reversible):

    p <- exp(-gamma dt/2) p;  p <- p + dt/2 (F - k q);  q <- q + dt p;  p <- p + dt/2 (F - k q);
    p <- exp(-gamma dt/2) p

Per channel that is an affine map of (q, p): x' = A x + b, A a 2x2 matrix of dt, k and gamma, b linear in F.
Affine maps compose associatively, so a whole sequence runs as a parallel prefix scan (log-depth doubling,
for training) and agrees with the one-tick `step` (for streaming) to float rounding. Stability: leapfrog is
stable for omega dt < 2; `stable_dt` clamps dt into that band.
"""

import torch

STABLE_OMEGA_DT = 1.9  # leapfrog is stable below omega * dt = 2; a margin for rounding


def step_matrices(dt: torch.Tensor, k: torch.Tensor, gamma: torch.Tensor, force: torch.Tensor):
    """A (..., D, 2, 2) and b (..., D, 2) of one kick-drift-kick tick; dt broadcasts against (..., D)."""
    h = dt / 2
    decay = torch.exp(-gamma * h)
    # p1 = decay p + h (F - k q);  q1 = q + dt p1;  p2 = p1 + h (F - k q1);  p3 = decay p2
    a_qq = 1 - dt * h * k
    a_qp = dt * decay
    a_pq = decay * (-h * k - h * k * a_qq)
    a_pp = decay * (decay - h * k * a_qp)
    b_q = dt * h * force
    b_p = decay * (h * force + h * force - h * k * b_q)
    a = torch.stack((torch.stack((a_qq, a_qp), -1), torch.stack((a_pq, a_pp), -1)), -2)
    b = torch.stack((b_q, b_p), -1)
    return a, b


def step(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One tick: x (..., D, 2) as (q, p) -> A x + b."""
    return (a @ x.unsqueeze(-1)).squeeze(-1) + b


def kick_drift_kick(
    x: torch.Tensor, dt: torch.Tensor, k: torch.Tensor, gamma: torch.Tensor, force: torch.Tensor
):
    """The same tick as `step(x, *step_matrices(dt, k, gamma, force))`, applied directly to (q, p): a third
    of the tensor operations, for the streaming path where one tick is all there is."""
    h = dt / 2
    decay = torch.exp(-gamma * h)
    q, p = x[..., 0], x[..., 1]
    p = decay * p + h * (force - k * q)
    q = q + dt * p
    p = decay * (p + h * (force - k * q))
    return torch.stack((q, p), -1)


def scan(x0: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All states of a sequence at once: x0 (B, D, 2), a (B, T, D, 2, 2), b (B, T, D, 2) -> (B, T, D, 2),
    x_t = A_t x_{t-1} + b_t. Hillis-Steele doubling over the prefix of affine maps: log2(T) rounds."""
    a, b = a.clone(), b.clone()
    t = a.shape[1]
    shift = 1
    while shift < t:
        # compose each map with the one `shift` earlier: (A, b) o (A', b') = (A A', A b' + b)
        a_prev, b_prev = a[:, :-shift], b[:, :-shift]
        a_new = a[:, shift:] @ a_prev
        b_new = (a[:, shift:] @ b_prev.unsqueeze(-1)).squeeze(-1) + b[:, shift:]
        a = torch.cat((a[:, :shift], a_new), 1)
        b = torch.cat((b[:, :shift], b_new), 1)
        shift *= 2
    return (a @ x0.unsqueeze(1).unsqueeze(-1)).squeeze(-1) + b


def stable_dt(dt: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """dt clamped so omega dt stays inside leapfrog's stable band."""
    return torch.minimum(dt, STABLE_OMEGA_DT / torch.sqrt(k.clamp_min(1e-12)))


def energy(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """H = p^2 / 2 + k q^2 / 2 per channel, (..., D)."""
    return 0.5 * x[..., 1] ** 2 + 0.5 * k * x[..., 0] ** 2
