"""Anti-collapse terms for the JEPA objective, without isotropy (seed 001, section 4.3 and appendix F.8).

Each term guards against one way an encoder can collapse, and none pulls the codes toward an isotropic
Gaussian: any anisotropic spread that keeps scale, rank and spectral balance costs nothing.
- energy budget: per-dimension mean square near a target, in fixed units (no shrinking, no blow-up);
- variance floor: every dimension's batch std above a floor (no dead dimensions);
- projected log-det floor: the log-volume per dimension of a randomly projected covariance above a floor
  (no rank collapse);
- participation-ratio floor: (sum l)^2 / sum l^2 over the projected eigenvalues, as a fraction of the
  dimension, above a floor (no "one spike" of variance);
- top-eigenvalue ceiling: the largest eigenvalue's share of the variance below a ceiling;
- mean penalty: codes centred.
The seed's values are not recoverable from its text (the equations are images); the defaults here are
chosen for codes of unit per-dimension scale and recorded in `AntiCollapse`.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AntiCollapse:
    energy_target: float = 1.0  # per-dimension mean square of the codes
    std_floor: float = 0.5  # half the target scale: a dimension may be quiet, not dead
    logdet_floor: float = -2.0  # mean log-eigenvalue of the projected covariance: e^-2 of the target scale
    logdet_proj_dim: int = 32
    logdet_eps: float = 1e-4
    pr_floor: float = 0.3  # effective rank at least 30 % of the projected dimension
    eigmax_ceiling: float = 0.5  # no direction holds half the variance

    def terms(self, z: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Every term for codes z (N, D), as a dict of scalars (log each; sum with weights)."""
        z = z.float()
        centred = z - z.mean(0)
        out = {
            "energy_budget": (z.pow(2).mean() - self.energy_target).pow(2),
            "variance_floor": F.relu(self.std_floor - z.std(0)).mean(),
            "mean": z.mean(0).pow(2).mean(),
        }
        eig = projected_eigenvalues(centred, self.logdet_proj_dim, self.logdet_eps, generator)
        r = eig.numel()
        out["logdet_floor"] = F.relu(self.logdet_floor - torch.log(eig).mean())
        out["pr_floor"] = F.relu(self.pr_floor - eig.sum().pow(2) / eig.pow(2).sum() / r)
        out["eigmax_ceiling"] = F.relu(eig.max() / eig.sum() - self.eigmax_ceiling)
        return out


def projected_eigenvalues(centred: torch.Tensor, dim: int, eps: float, generator=None) -> torch.Tensor:
    """Eigenvalues of P^T C P + eps I: C the batch covariance, P (D, r) random orthonormal, r <= dim."""
    d = centred.shape[1]
    r = min(dim, d)
    p, _ = torch.linalg.qr(torch.randn(d, r, generator=generator, device=centred.device))
    proj = centred @ p
    cov = proj.T @ proj / max(centred.shape[0] - 1, 1) + eps * torch.eye(r, device=centred.device)
    return torch.linalg.eigvalsh(cov)
