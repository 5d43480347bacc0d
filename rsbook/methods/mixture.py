"""A Gaussian mixture whose noisy score and MMSE denoiser are known in closed form (chapter 1).

For ``p = sum_k w_k N(mu_k, tau^2 I)`` and ``y = x + sigma z``, the noisy density is
``p_sigma = sum_k w_k N(mu_k, (tau^2 + sigma^2) I)``, so

* its score is ``sum_k r_k(y) (mu_k - y) / (tau^2 + sigma^2)`` with the posterior weights
  ``r_k(y)`` of the components, and
* the MMSE denoiser is ``E[x | y] = sum_k r_k(y) (mu_k + tau^2 / (tau^2 + sigma^2) (y - mu_k))``,

written here from the posterior, not from the score, so that Tweedie's formula
(Proposition 3.1: ``E[x | y] = y + sigma^2 grad log p_sigma(y)``) is checked, not assumed.

For one component (``-log p`` is ``mu = 1 / tau^2``-strongly convex) the MAP estimate that
Algorithm 1 converges to at a fixed level ``sigma`` is
``x* + U (1 + mu sigma^2) / (1 + 2 mu sigma^2)``: its error grows with ``sigma`` and vanishes
at ``sigma = 0``, the behaviour Theorem 3.2 bounds (:func:`map_error_single`).

:class:`MLPScore` and :func:`fit_score` train a small score network on samples of the
mixture with the package's DSM loss (:func:`rsbook.methods.denoise.dsm_loss`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .denoise import dsm_loss, geometric_sigmas

__all__ = ["GaussianMixture", "MLPScore", "fit_score", "map_error_single", "expected_norm"]


class GaussianMixture:
    """``sum_k w_k N(mu_k, tau^2 I)`` in ``d`` dimensions (``means``: ``(K, d)``)."""

    def __init__(self, means: torch.Tensor, tau: float, weights: torch.Tensor | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.tau = float(tau)
        k = self.means.shape[0]
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or not bool((w > 0).all()) or abs(float(w.sum()) - 1) > 1e-6:
            raise ValueError("weights must be K positive numbers summing to 1")
        self.weights = w / w.sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws, ``(n, d)``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[k] + self.tau * torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)

    def _posterior(self, y: torch.Tensor, sigma: float) -> tuple[torch.Tensor, float]:
        v = self.tau**2 + sigma**2
        d2 = ((y.unsqueeze(1) - self.means.unsqueeze(0)) ** 2).sum(-1)  # (n, K)
        return torch.softmax(torch.log(self.weights) - d2 / (2 * v), dim=1), v

    def log_density(self, y: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """``log p_sigma(y)``."""
        v = self.tau**2 + sigma**2
        d = self.means.shape[1]
        d2 = ((y.unsqueeze(1) - self.means.unsqueeze(0)) ** 2).sum(-1)
        return torch.logsumexp(torch.log(self.weights) - d2 / (2 * v), dim=1) - 0.5 * d * math.log(2 * math.pi * v)

    def score(self, y: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``grad log p_sigma(y)`` (``sigma`` a float, or one shared value as a tensor)."""
        sigma = float(torch.as_tensor(sigma).reshape(-1)[0])
        r, v = self._posterior(y.double(), sigma)
        return ((r.unsqueeze(-1) * (self.means.unsqueeze(0) - y.double().unsqueeze(1))).sum(1) / v).to(y.dtype)

    def mmse(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """``E[x | y]`` from the posterior (component weights times each component's posterior mean)."""
        r, v = self._posterior(y.double(), sigma)
        shrink = self.tau**2 / v
        comp = self.means.unsqueeze(0) + shrink * (y.double().unsqueeze(1) - self.means.unsqueeze(0))
        return (r.unsqueeze(-1) * comp).sum(1).to(y.dtype)


def expected_norm(d: int) -> float:
    """``E ||z||`` for ``z ~ N(0, I_d)``: ``sqrt(2) Gamma((d + 1) / 2) / Gamma(d / 2)``."""
    return math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))


def map_error_single(sigma: float, tau: float, d: int) -> float:
    """``E ||x_hat - x*||`` of the fixed-level MAP estimate for one component ``N(x*, tau^2 I)``:
    ``sigma E||z|| (1 + mu sigma^2) / (1 + 2 mu sigma^2)`` with ``mu = 1 / tau^2``."""
    mu = 1.0 / tau**2
    return sigma * expected_norm(d) * (1 + mu * sigma**2) / (1 + 2 * mu * sigma**2)


class MLPScore(nn.Module):
    """A small score network ``s(x, sigma)`` for low-dimensional data: an MLP on ``(x, log sigma)``,
    its output divided by ``sigma`` (as the image score network)."""

    def __init__(self, d: int = 2, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0]).reshape(-1, 1)
        return -self.net(torch.cat([x, torch.log(s)], dim=1)) / s


def fit_score(mixture: GaussianMixture, steps: int = 3000, batch: int = 512, sigma_max: float = 2.0, sigma_min: float = 0.05,
              levels: int = 10, lr: float = 3e-3, generator: torch.Generator | None = None, hidden: int = 128) -> MLPScore:
    """Train :class:`MLPScore` by multi-scale DSM on fresh mixture samples (Adam, cosine decay)."""
    gen = generator or torch.Generator().manual_seed(0)
    torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))  # weight init has no generator argument
    model = MLPScore(mixture.means.shape[1], hidden)
    sigmas = geometric_sigmas(sigma_max, sigma_min, levels).float()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x = mixture.sample(batch, gen).float()
        sigma = sigmas[torch.randint(levels, (batch,), generator=gen)]
        loss = dsm_loss(model, x, sigma, gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()
