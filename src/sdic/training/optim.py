"""Optimisers: Adam and Ranger (RAdam + Lookahead + gradient centralisation), LR schedules.

Ranger as used by pSp/e4e/SDIC is RAdam (betas 0.95/0.999, eps 1e-5, the
variance rectification switched on once the SMA length exceeds 5; this is
``torch.optim.RAdam``) whose gradients are first centralised (every gradient
with more than one dimension has its mean over all but the first axis removed;
Yong et al. 2020), wrapped in Lookahead (Zhang et al. 2019: every k steps the
slow weights move a fraction alpha towards the fast ones and the fast weights
restart from them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import Optimizer

from .config import ConfigError, OptimConfig


def centralize_gradients(params: Iterable[torch.Tensor]) -> None:
    """Subtract from each multi-dimensional gradient its mean over all axes but the first."""
    for p in params:
        if p.grad is not None and p.grad.dim() > 1:
            p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.dim())), keepdim=True))


class Lookahead(Optimizer):
    """Lookahead around any optimiser (``inner``), optionally centralising gradients first.

    ``param_groups`` are the inner optimiser's own (so LR schedulers and gradient
    scalers act on it directly); the slow weights and the step counter are part
    of :meth:`state_dict`.
    """

    def __init__(self, inner: Optimizer, k: int = 6, alpha: float = 0.5, centralize: bool = False) -> None:
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ConfigError("Lookahead needs k >= 1 and 0 < alpha <= 1")
        self.inner = inner
        super().__init__([p for g in inner.param_groups for p in g["params"]], dict(inner.defaults))
        self.param_groups = inner.param_groups  # share, do not copy
        self.k = k
        self.alpha = alpha
        self.centralize = centralize
        self.counter = 0
        self.slow = [p.detach().clone() for p in self._params()]

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        if closure is not None:
            raise ValueError("Lookahead does not support closures")
        if self.centralize:
            centralize_gradients(self._params())
        self.inner.step()
        self.counter += 1
        if self.counter % self.k == 0:
            for fast, slow in zip(self._params(), self.slow):
                slow.add_(fast - slow, alpha=self.alpha)
                fast.copy_(slow)
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "slow": [s.clone() for s in self.slow],
                "counter": self.counter}

    def load_state_dict(self, state_dict: dict) -> None:
        self.inner.load_state_dict(state_dict["inner"])
        self.param_groups = self.inner.param_groups  # loading made new groups: share those
        self.counter = int(state_dict["counter"])
        for slow, saved in zip(self.slow, state_dict["slow"], strict=True):
            slow.copy_(saved)


def build_optimizer(config: OptimConfig, params, reg_ratio: float = 1.0) -> Optimizer:
    """An optimiser from its configuration.

    ``reg_ratio`` = r/(r+1) for lazily regularised GAN networks (every r steps):
    lr and betas are adjusted as in StyleGAN2 so the regularised run matches
    the unregularised one in expectation.
    """
    params = [p for p in params if p.requires_grad]
    lr = config.lr * reg_ratio
    betas = tuple(b**reg_ratio for b in config.betas)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=config.eps, weight_decay=config.weight_decay)
    if config.name == "ranger":
        inner = torch.optim.RAdam(params, lr=lr, betas=betas, eps=config.eps, weight_decay=config.weight_decay)
        return Lookahead(inner, config.lookahead_k, config.lookahead_alpha, config.gradient_centralization)
    raise ConfigError(f"unknown optimiser {config.name!r}")


def build_scheduler(config: OptimConfig, optimizer: Optimizer, total_steps: int):
    """LambdaLR: linear warm-up, then constant or cosine decay to 0 at ``total_steps``."""
    warmup = max(0, config.warmup_steps)
    cosine = config.schedule == "cosine"

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
