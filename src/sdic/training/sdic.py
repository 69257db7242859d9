"""SDIC training (Zhang et al., AAAI 2024): DIPN and DICN on a frozen e4e encoder and generator.

Per step, with ``inv = SDICModel(x)`` (ARCHITECTURE.md §6; random generator
noise by default, the same draw for both generator passes):

    y_hat = avgpool(inv.image, input size)
    loss  = l2 * mse(y_hat, x) + lpips * LPIPS(y_hat, x) + identity * (1 - cos)
          + compensation * (0.8 * mse(F, G7) + 0.2 * mse(W', W))
          + discrepancy * mse(D, x - resize(clamp(e4e reconstruction)))

The encoder and generator are in eval mode with ``requires_grad=False``;
DIPN and DICN train in train mode (BatchNorm with batch statistics, as the
authors train). Under several processes their BatchNorm layers normalise over
the global batch (``sync_batchnorm``), so N processes x batch B train exactly
like one process with batch N*B.

Validation scores the e4e reconstruction and the SDIC result with the metrics
of ``sdic evaluate`` (``val_metrics``). Export: ``sdic.safetensors``, loadable
with ``sdic.load``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import GENERATOR_KINDS, Kind, save_model
from ..model import Inversion, SDICModel
from ..ops import Execution, set_execution
from . import losses
from .config import SDICTrainConfig, model_spec, resolve_model
from .data import ImageFolder
from .distributed import sync_batchnorm
from .loop import StageEnv
from .monitor import rows_grid
from .optim import build_optimizer, build_scheduler
from .sources import load_part, read_source


def set_train_mode(model: SDICModel) -> None:
    """DIPN/DICN train, encoder/generator eval (their BatchNorm statistics stay frozen)."""
    model.eval()
    model.dipn.train()
    model.dicn.train()
    set_execution(model.encoder, Execution.frozen_network())
    set_execution(model.generator, Execution.frozen_network())


def build_model(config: SDICTrainConfig, distributed: bool) -> SDICModel:
    """The SDIC model with the frozen e4e parts loaded (and DIPN/DICN from ``init`` if given)."""
    source = read_source(config.e4e, (Kind.E4E, Kind.SDIC), "e4e")
    model_cfg = resolve_model(config.model, base=source.config)
    model = SDICModel(model_cfg)
    load_part(model.encoder, source, "encoder.")
    generator_source = read_source(config.generator, GENERATOR_KINDS, "generator") \
        if config.generator else source
    load_part(model.generator, generator_source, "generator.")
    if "latent_avg" in source.tensors:
        model.latent_avg.copy_(source.tensors["latent_avg"].reshape(model.latent_avg.shape))
    else:
        model.latent_avg.copy_(model.generator.mean_latent(10_000).expand_as(model.latent_avg))
    if config.init:
        init = read_source(config.init, (Kind.SDIC,), "init")
        load_part(model.dipn, init, "dipn.")
        load_part(model.dicn, init, "dicn.")
    model.encoder.requires_grad_(False)
    model.generator.requires_grad_(False)
    if distributed and config.sync_batchnorm:
        sync_batchnorm(model.dipn)
        sync_batchnorm(model.dicn)
    set_train_mode(model)
    return model


class SDICStage:
    name = "sdic"

    def __init__(self, config: SDICTrainConfig, env: StageEnv) -> None:
        self.env = env
        self.net = env.prepare(build_model(config, env.ctx.distributed))
        self.model = self.net.config
        self.config = replace(config, model=model_spec(self.model))
        self.frame = self.model
        self.resolution = self.model.input_size
        self.loss = losses.ReconstructionLoss(config.losses, self.model.domain).to(env.ctx.device)
        trainable = list(self.net.dipn.parameters()) + list(self.net.dicn.parameters())
        self.optim = build_optimizer(config.optim, trainable)
        self._schedulers = {"sdic": build_scheduler(config.optim, self.optim, config.run.steps)}
        self.global_batch = config.run.batch_size * env.ctx.world_size
        self._metrics = None

    # ------------------------------------------------------------ protocol
    def modules(self) -> dict[str, nn.Module]:
        return {"dipn": self.net.dipn, "dicn": self.net.dicn}

    def optimizers(self) -> dict:
        return {"sdic": self.optim}

    def schedulers(self) -> dict:
        return self._schedulers

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # ---------------------------------------------------------------- step
    def noise(self) -> list[torch.Tensor] | None:
        if self.config.noise == "fixed":
            return None
        rnd, ctx = self.env.random, self.env.ctx
        return [ctx.shard(rnd.normal(self.global_batch, 1, n.shape[-2], n.shape[-1]))
                for n in self.net.generator.fixed_noise()]

    def objective(self, x: torch.Tensor, inv: Inversion) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        y_hat = losses.at_input_size(inv.image, self.resolution)
        total, terms = self.loss(losses.content(y_hat, self.model), losses.content(x, self.model))
        if cfg.compensation:
            comp, comp_terms = losses.compensation_loss(inv.feature, inv.tap, inv.latents, inv.codes,
                                                        cfg.compensation_feature, cfg.compensation_latent)
            terms.update(comp_terms)
            total = total + cfg.compensation * comp
        if cfg.discrepancy:
            photo, recon = self.net.reconstruction_for_dipn(inv.initial_image.detach(), x)
            terms["discrepancy"] = F.mse_loss(losses.full(inv.discrepancy), losses.full(photo - recon))
            total = total + cfg.discrepancy * terms["discrepancy"]
        return total, terms

    def train_step(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        noise = self.noise()
        with self.env.precision.autocast():
            inv = self.net(x, noise)
            total, terms = self.objective(x, inv)
        self.env.optimize(total, self.optim)
        terms["loss"] = total
        return {name: value.detach() for name, value in terms.items()}

    # ----------------------------------------------------------- reporting
    @torch.no_grad()
    def _invert(self, x: torch.Tensor) -> Inversion:
        self.net.eval()
        try:
            return self.net(x)
        finally:
            set_train_mode(self.net)

    def metric_functions(self) -> dict:
        if self._metrics is None:
            from ..evaluation import build_metrics

            self._metrics = build_metrics(self.config.val_metrics, self.env.ctx.device)
        return self._metrics

    @torch.no_grad()
    def validate(self, batches: Iterable[torch.Tensor], val_set: ImageFolder | None) -> dict[str, float]:
        """``sdic evaluate``'s metrics for the e4e reconstruction and the SDIC result."""
        from ..evaluation import score, scored_views

        sums: dict[str, float] = {}
        count = 0
        for x in batches:
            views = scored_views(self._invert(x), self.model)
            for row in score(views, self.metric_functions()):
                for stage, values in row.items():
                    for name, value in values.items():
                        key = f"{stage}/{name}"
                        sums[key] = sums.get(key, 0.0) + value
                count += 1
        return {k: v / count for k, v in sums.items()} if count else {}

    def image_grids(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        inv = self._invert(batch)
        size = self.resolution
        d = inv.discrepancy.float()
        lo = d.flatten(1).min(1).values[:, None, None, None]
        hi = d.flatten(1).max(1).values[:, None, None, None]
        d = (d - lo) / (hi - lo).clamp_min(1e-8) * 2 - 1
        columns = [batch, losses.at_input_size(inv.initial_image, size), losses.at_input_size(inv.image, size), d]
        return {"input_e4e_sdic_discrepancy": rows_grid(columns)}

    def export(self, folder: Path) -> list[Path]:
        return [save_model(self.net, Path(folder) / "sdic.safetensors", self.model, kind=Kind.SDIC)]


def build(config: SDICTrainConfig, env: StageEnv) -> SDICStage:
    return SDICStage(config, env)
