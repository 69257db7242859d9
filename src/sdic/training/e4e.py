"""e4e training (Tov et al. 2021, "Designing an Encoder for StyleGAN Image Manipulation").

The encoder maps an image to W+ as ``w0`` repeated plus per-entry deltas; the
generator is frozen. Per step:

1. ``codes = E(x) + latent_avg`` (``latent_avg`` = the generator's mean W); the
   progressive stage k (0 until ``progressive_start``, then +1 every
   ``progressive_every`` steps) limits the deltas to entries 1..k;
2. latent discriminator (an MLP on one W code): logistic loss with real codes
   ``mapping(z)`` and fake codes ``codes[:, 0]`` (through a history pool of
   ``w_pool`` codes each), lazy R1 every ``r1_every`` steps;
3. encoder loss: reconstruction (L2 + LPIPS + identity, at the input size)
   + ``delta_reg * sum_{i<=k} ||w_i - w_0||_2`` + ``latent_disc *`` mean over
   the active entries of the non-saturating loss ``softplus(-D(w_i))``.

One difference from the reference code: the discriminator's fake codes come
from the same encoder forward pass as the encoder step (same parameters and
batch, so the same values) instead of a second pass; BatchNorm running
statistics are therefore updated once per step rather than twice.

Exports: ``e4e.safetensors`` (ours, kind ``e4e``: ``encoder.*``,
``generator.*``, ``latent_avg``) and ``e4e.pt`` (the authors' layout).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import GENERATOR_KINDS, Kind, save_layout, save_tensors
from ..images import encoder_view
from ..networks import Encoder4Editing, Generator
from ..ops import Execution, set_execution
from . import losses
from .config import E4EConfig, model_spec, resolve_model
from .data import ImageFolder
from .discriminator import LatentDiscriminator
from .distributed import sync_batchnorm
from .loop import SharedRandom, StageEnv
from .monitor import rows_grid
from .optim import build_optimizer, build_scheduler
from .sources import load_arcface_body, load_part, read_source


def progressive_stage(step: int, start: int, every: int, n_latent: int) -> int:
    """Number of active W+ deltas at ``step`` (``n_latent - 1`` = all; ``start < 0``: all at once)."""
    if start < 0:
        return n_latent - 1
    if step < start:
        return 0
    return min(n_latent - 1, 1 + (step - start) // max(1, every))


class CodePool:
    """History of codes for the discriminator (CycleGAN's image pool, per code).

    Until full, codes are stored and returned; then each incoming code is, with
    probability 1/2, swapped with a random stored one (the stored one is returned).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.codes: torch.Tensor | None = None

    def query(self, codes: torch.Tensor, random: SharedRandom) -> torch.Tensor:
        if self.size <= 0:
            return codes
        out = []
        for code in codes.detach():
            stored = 0 if self.codes is None else self.codes.shape[0]
            if stored < self.size:
                self.codes = code[None].clone() if self.codes is None else torch.cat([self.codes, code[None]])
                out.append(code)
            elif random.uniform() > 0.5:
                i = random.integer(0, self.size)
                out.append(self.codes[i].clone())
                self.codes[i] = code
            else:
                out.append(code)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"codes": self.codes}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        codes = state.get("codes")
        self.codes = codes.to(device) if codes is not None else None


class InversionExport(nn.Module):
    """The tensors of an e4e export, ``encoder.*``, ``generator.*`` and ``latent_avg`` (SDICModel's names)."""

    def __init__(self, encoder: nn.Module, generator: nn.Module, latent_avg: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.register_buffer("latent_avg", latent_avg)


class E4EStage:
    name = "e4e"

    def __init__(self, config: E4EConfig, env: StageEnv) -> None:
        self.env = env
        device = env.ctx.device
        source = read_source(config.generator, GENERATOR_KINDS, "generator")
        self.model = resolve_model(config.model, base=source.config)
        self.config = replace(config, model=model_spec(self.model))
        self.frame = self.model
        self.resolution = self.model.input_size
        g = self.model.generator
        generator = Generator(g, tap_resolution=self.model.tap_resolution)
        load_part(generator, source, "generator.")
        self.generator = set_execution(env.prepare(generator).eval().requires_grad_(False), Execution.frozen_network())
        encoder = Encoder4Editing(self.model.encoder, g.n_latent, g.style_dim)
        if config.encoder_init:
            load_arcface_body(encoder, config.encoder_init)
        if config.init:  # after encoder_init: a whole trained encoder wins over a body
            load_part(encoder, read_source(config.init, (Kind.E4E, Kind.SDIC), "init"), "encoder.")
        if env.ctx.distributed and config.sync_batchnorm:
            sync_batchnorm(encoder)
        self.encoder = env.prepare(encoder).train()
        self.latent_avg = self.generator.mean_latent(config.latent_avg_samples).expand(g.n_latent, -1).clone()
        self.loss = losses.ReconstructionLoss(config.losses, self.model.domain).to(device)
        self.optim = build_optimizer(config.optim, self.encoder.parameters())
        self._schedulers = {"encoder": build_scheduler(config.optim, self.optim, config.run.steps)}
        self.latent_d = None
        if config.latent_disc > 0:
            self.latent_d = LatentDiscriminator(g.style_dim, config.latent_disc_layers).to(device).train()
            self.d_optim = torch.optim.Adam(self.latent_d.parameters(), lr=config.latent_disc_lr)
        self.real_pool, self.fake_pool = CodePool(config.w_pool), CodePool(config.w_pool)
        self.global_batch = config.run.batch_size * env.ctx.world_size
        last = progressive_stage(config.run.steps - 1, config.progressive_start, config.progressive_every, g.n_latent)
        if last < g.n_latent - 1 and env.ctx.is_main:
            warnings.warn(f"run.steps={config.run.steps} ends at progressive stage {last} of {g.n_latent - 1}: "
                          "the W+ deltas of the later entries stay untrained (lower progressive_start/"
                          "progressive_every or train longer)", stacklevel=2)

    # ------------------------------------------------------------ protocol
    def modules(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {"encoder": self.encoder}
        if self.latent_d is not None:
            out["latent_d"] = self.latent_d
        return out

    def optimizers(self) -> dict:
        out = {"encoder": self.optim}
        if self.latent_d is not None:
            out["latent_d"] = self.d_optim
        return out

    def schedulers(self) -> dict:
        return self._schedulers

    def state_dict(self) -> dict:
        return {"real_pool": self.real_pool.state_dict(), "fake_pool": self.fake_pool.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.real_pool.load_state_dict(state["real_pool"], self.env.ctx.device)
        self.fake_pool.load_state_dict(state["fake_pool"], self.env.ctx.device)

    # ---------------------------------------------------------------- step
    def noise(self) -> list[torch.Tensor] | None:
        if self.config.noise == "fixed":
            return None
        return self.env.generator_noise(self.model.generator, self.global_batch)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(encoder_view(x, self.model)) + self.latent_avg

    def reconstruct(self, codes: torch.Tensor, noise: list[torch.Tensor] | None) -> torch.Tensor:
        image, _ = self.generator(codes, noise)
        return losses.at_input_size(image, self.resolution)

    def train_step(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        cfg, env = self.config, self.env
        n_latent = self.model.n_latent
        k = progressive_stage(step, cfg.progressive_start, cfg.progressive_every, n_latent)
        self.encoder.progressive_stage = k
        terms: dict[str, torch.Tensor] = {"progressive_stage": torch.tensor(float(k))}
        noise = self.noise()
        with env.precision.autocast():
            codes = self.encode(x)
        if self.latent_d is not None:
            terms.update(self._discriminator_step(losses.full(codes.detach()), step))
        with env.precision.autocast():
            y_hat = self.reconstruct(codes, noise)
            total, rec_terms = self.loss(losses.content(y_hat, self.model), losses.content(x, self.model))
            terms.update(rec_terms)
            codes = losses.full(codes)
            if cfg.delta_reg and k > 0:
                deltas = codes[:, 1: k + 1] - codes[:, :1]
                terms["delta"] = deltas.norm(dim=2).mean(0).sum()
                total = total + cfg.delta_reg * terms["delta"]
            if self.latent_d is not None:
                terms["encoder_adv"] = self._adversarial(codes[:, : k + 1])
                total = total + cfg.latent_disc * terms["encoder_adv"]
        env.optimize(total, self.optim)
        terms["loss"] = total
        return {name: value.detach() for name, value in terms.items()}

    def _adversarial(self, codes: torch.Tensor) -> torch.Tensor:
        self.latent_d.requires_grad_(False)
        try:
            pred = self.latent_d(codes.reshape(-1, codes.shape[-1])).view(codes.shape[0], codes.shape[1])
        finally:
            self.latent_d.requires_grad_(True)
        return F.softplus(-pred).mean(0).mean()

    def _pooled(self, pool: CodePool, codes: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``pool.query`` on the global batch of codes.

        The pool sees the codes of all processes in global order and draws from the
        shared generator, so its contents and decisions are the same on every
        process and equal to those of one process with the whole batch.
        """
        if pool.size <= 0:
            return codes
        ctx = self.env.ctx
        return ctx.shard(pool.query(ctx.gather(codes), self.env.random))

    def _discriminator_step(self, codes: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        cfg, env = self.config, self.env
        z = env.ctx.shard(env.random.normal(self.global_batch, self.model.generator.z_size))
        with torch.no_grad():
            real_w = self.generator.z_to_w(z)
        real_w = self._pooled(self.real_pool, real_w)
        fake_w = self._pooled(self.fake_pool, codes[:, 0])
        real_pred, fake_pred = self.latent_d(real_w), self.latent_d(fake_w)
        loss = losses.d_logistic_loss(real_pred, fake_pred)
        env.optimize(loss, self.d_optim)
        terms = {"latent_d": loss.detach()}
        if cfg.r1 > 0 and cfg.r1_every and step % cfg.r1_every == 0:
            real_w = real_w.detach().requires_grad_(True)
            penalty = losses.r1_penalty(self.latent_d(real_w), real_w)
            env.optimize(cfg.r1 / 2 * penalty * cfg.r1_every, self.d_optim)
            terms["latent_r1"] = penalty.detach()
        return terms

    # ----------------------------------------------------------- reporting
    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        self.encoder.eval()
        try:
            return self.reconstruct(self.encode(x), None)
        finally:
            self.encoder.train()

    @torch.no_grad()
    def validate(self, batches: Iterable[torch.Tensor], val_set: ImageFolder | None) -> dict[str, float]:
        """MSE and LPIPS of the reconstructions (fixed noise, BN in eval mode)."""
        from ..metrics.lpips import get_lpips

        lpips = get_lpips("alex", self.env.ctx.device)
        sums = {"mse": 0.0, "lpips_alex": 0.0}
        count = 0
        for x in batches:
            y_hat = losses.content(self._evaluate(x), self.model)
            target = losses.content(x, self.model)
            sums["mse"] += float(F.mse_loss(y_hat.clamp(-1, 1), target, reduction="none").mean((1, 2, 3)).sum())
            sums["lpips_alex"] += float(lpips(y_hat.clamp(-1, 1), target).sum())
            count += x.shape[0]
        return {k: v / count for k, v in sums.items()} if count else {}

    def image_grids(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"reconstruction": rows_grid([batch, self._evaluate(batch)])}

    def export(self, folder: Path) -> list[Path]:
        folder = Path(folder)
        tensors = InversionExport(self.encoder, self.generator, self.latent_avg).state_dict()
        pt = save_layout(folder / "e4e.pt", Kind.E4E, tensors, self.model)
        native = save_tensors(tensors, folder / "e4e.safetensors", self.model, kind=Kind.E4E)
        return [pt, native]


def build(config: E4EConfig, env: StageEnv) -> E4EStage:
    return E4EStage(config, env)
