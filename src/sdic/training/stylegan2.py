"""StyleGAN2 training (the recipe of Karras et al. 2020 as in rosinality's ``train.py``).

Per step (index ``i``):

1. discriminator: logistic loss on real images and on fakes ``G(z)``;
2. if ``i % r1_every == 0``: R1 on real images, ``r1/2 * penalty * r1_every``;
3. generator: non-saturating loss on fresh fakes (style mixing with probability
   ``mixing``: two mapped codes, switched at a random layer);
4. if ``path_reg > 0`` and ``i % path_every == 0``: path-length regulariser on a
   batch shrunk by ``path_batch_shrink``, ``path_reg * path_every * penalty``;
5. ``g_ema <- beta * g_ema + (1 - beta) * g``, ``beta = 0.5 ** (global_batch / (ema_kimg * 1000))``;
   with ``ema_rampup`` the half-life is at most ``ema_rampup`` x the images seen so far.

``init`` starts G (and g_ema) from a trained generator of the same architecture, e.g.
to continue a run whose checkpoint is gone or to adapt a generator to a new domain; the
discriminator starts from scratch.

Lazily regularised networks get StyleGAN2's adjusted Adam settings (lr and
betas to the power ``r/(r+1)``). Generator noise is random during training.

``discriminator: projected`` replaces the discriminator with Projected GAN's
(:mod:`.projected`: fixed pretrained features, trained per-scale heads) and the
logistic losses with its hinge losses; R1 is not applied then (the heads are
spectrally normalised, as in the paper). ``diffaugment`` (:mod:`.diffaugment`)
augments every image the discriminator sees, with either discriminator.

Exports (main process): ``stylegan2.pt`` in rosinality's layout (``g_ema``,
``g``, ``d``, ``latent_avg``, plus ``sdic_config``) and ``stylegan2.safetensors``
(our format, kind ``stylegan2``: ``generator.*`` = g_ema and ``latent_avg``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import GENERATOR_KINDS, Kind, save_layout, save_tensors
from ..config import SDICConfig
from ..networks import Generator
from . import losses
from .config import StyleGAN2Config, model_spec, resolve_model
from .data import ImageFolder
from .diffaugment import diff_augment, parse_policy
from .discriminator import Discriminator
from .distributed import mean_over_processes
from .loop import StageEnv
from .monitor import make_grid
from .optim import build_optimizer, build_scheduler
from .projected import ProjectedDiscriminator, d_hinge_loss, g_hinge_loss
from .sources import load_part, read_source

# Seeds of the fixed latents: the sample grid's z (run.seed + offset, apart from the training
# stream seeded with run.seed) and the z of the FID images (one set for every run and evaluation).
SAMPLE_GRID_SEED_OFFSET = 12345
FID_SEED = 4321


class GeneratorExport(nn.Module):
    """The tensors of a ``stylegan2`` export, ``generator.*`` (g_ema) and ``latent_avg`` (our names)."""

    def __init__(self, generator: Generator, latent_avg: torch.Tensor) -> None:
        super().__init__()
        self.generator = generator
        self.register_buffer("latent_avg", latent_avg)


def ema_beta(global_batch: int, half_life_kimg: float, step: int | None = None,
             rampup: float | None = None) -> float:
    """Decay per step for an EMA half-life in kimg.

    With ``rampup`` (StyleGAN2-ADA's ``ema_rampup``), the half-life is at most ``rampup`` times
    the images seen so far, so early, fast-changing weights are not averaged over a long past.
    """
    if rampup is not None and step is not None:
        half_life_kimg = min(half_life_kimg, (step + 1) * global_batch / 1000.0 * rampup)
    if half_life_kimg <= 0:
        return 0.0
    return 0.5 ** (global_batch / (half_life_kimg * 1000.0))


@torch.no_grad()
def accumulate(target: nn.Module, source: nn.Module, beta: float) -> None:
    """target = beta * target + (1 - beta) * source (parameters only; buffers are fixed)."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, 1.0 - beta)


def broadcast_latents(w: torch.Tensor, n_latent: int) -> torch.Tensor:
    return w[:, None, :].expand(-1, n_latent, -1)


class StyleGAN2Stage:
    name = "stylegan2"

    def __init__(self, config: StyleGAN2Config, env: StageEnv) -> None:
        self.env = env
        self.model: SDICConfig = resolve_model(config.model)
        self.config = _with_model(config, self.model)
        self.frame = self.model
        gcfg = self.model.generator
        self.resolution = gcfg.size
        self.generator = env.prepare(Generator(gcfg, tap_resolution=self.model.tap_resolution))
        if config.init:  # fine-tuning: G and g_ema start from a trained generator, D from scratch
            load_part(self.generator, read_source(config.init, GENERATOR_KINDS, "init"), "generator.")
        self.projected = config.discriminator == "projected"
        self.discriminator = env.prepare(build_discriminator(config, self.model))
        self.policy = parse_policy(config.diffaugment)
        self.g_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.generator.train()
        self.discriminator.train()
        g_ratio = config.path_every / (config.path_every + 1) if config.path_reg > 0 else 1.0
        d_ratio = config.r1_every / (config.r1_every + 1) if self._uses_r1() else 1.0
        self.g_optim = build_optimizer(config.g_optim, self.generator.parameters(), g_ratio)
        d_params = [p for p in self.discriminator.parameters() if p.requires_grad]  # not a frozen backbone
        self.d_optim = build_optimizer(config.d_optim, d_params, d_ratio)
        steps = config.run.steps
        self._schedulers = {"g": build_scheduler(config.g_optim, self.g_optim, steps),
                            "d": build_scheduler(config.d_optim, self.d_optim, steps)}
        self.mean_path_length = torch.zeros((), device=env.ctx.device)
        self.global_batch = config.run.batch_size * env.ctx.world_size
        self.beta = ema_beta(self.global_batch, config.ema_kimg)
        z_gen = torch.Generator().manual_seed(config.run.seed + SAMPLE_GRID_SEED_OFFSET)
        self.sample_z = torch.randn(config.samples, gcfg.z_size, generator=z_gen).to(env.ctx.device)

    # ------------------------------------------------------------ protocol
    def modules(self) -> dict[str, nn.Module]:
        return {"g": self.generator, "d": self.discriminator, "g_ema": self.g_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.g_optim, "d": self.d_optim}

    def schedulers(self) -> dict:
        return self._schedulers

    def state_dict(self) -> dict:
        return {"mean_path_length": self.mean_path_length}

    def load_state_dict(self, state: dict) -> None:
        self.mean_path_length = state["mean_path_length"].to(self.env.ctx.device)

    # ------------------------------------------------------------- sampling
    def latents(self, global_batch: int) -> torch.Tensor:
        """W+ codes for this process's share of ``global_batch`` samples (style mixing included)."""
        rnd, ctx = self.env.random, self.env.ctx
        n_latent, dim = self.model.n_latent, self.model.generator.z_size
        if self.config.mixing > 0 and rnd.uniform() < self.config.mixing:
            z = ctx.shard(rnd.normal(global_batch, 2, dim))
            cut = rnd.integer(1, n_latent)
            w1 = self.generator.z_to_w(z[:, 0])
            w2 = self.generator.z_to_w(z[:, 1])
            return torch.cat([broadcast_latents(w1, cut), broadcast_latents(w2, n_latent - cut)], dim=1)
        z = ctx.shard(rnd.normal(global_batch, dim))
        return broadcast_latents(self.generator.z_to_w(z), n_latent)

    def noise(self, global_batch: int) -> list[torch.Tensor]:
        return self.env.generator_noise(self.model.generator, global_batch)

    def fake(self, global_batch: int, return_latents: bool = False):
        w = self.latents(global_batch)
        image, _ = self.generator(w, self.noise(global_batch))
        if self.env.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return (image, w) if return_latents else image

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """DiffAugment (if configured) with per-image draws for the global batch, this process's rows."""
        if not self.policy or self.config.diffaugment_strength == 0:
            return images
        rnd, ctx = self.env.random, self.env.ctx
        n = images.shape[0] * ctx.world_size
        return diff_augment(images, self.policy, self.config.diffaugment_strength,
                            lambda *shape: ctx.shard(rnd.rand(n, *shape[1:])))

    def _uses_r1(self) -> bool:
        return not self.projected and self.config.r1 > 0 and self.config.r1_every > 0

    def d_loss(self, real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
        if self.projected:
            return d_hinge_loss(real_pred, fake_pred)
        return losses.d_logistic_loss(real_pred, fake_pred)

    def g_loss(self, fake_pred: torch.Tensor) -> torch.Tensor:
        return g_hinge_loss(fake_pred) if self.projected else losses.g_nonsaturating_loss(fake_pred)

    # ---------------------------------------------------------------- step
    def train_step(self, real: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        terms: dict[str, torch.Tensor] = {}
        terms.update(self._discriminator_step(real))
        if self._uses_r1() and step % cfg.r1_every == 0:
            terms.update(self._r1_step(real))
        terms.update(self._generator_step())
        if cfg.path_reg > 0 and cfg.path_every and step % cfg.path_every == 0:
            terms.update(self._path_step())
        beta = ema_beta(self.global_batch, cfg.ema_kimg, step, cfg.ema_rampup) if cfg.ema_rampup else self.beta
        accumulate(self.g_ema, self.generator, beta)
        return terms

    def _discriminator_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad(), self.env.precision.autocast():
            fake = self.fake(self.global_batch)
        with self.env.precision.autocast():
            fake_pred = self.discriminator(self.augment(fake))
            real_pred = self.discriminator(self.augment(real))
            loss = self.d_loss(losses.full(real_pred), losses.full(fake_pred))
        self.env.optimize(loss, self.d_optim)
        return {"d_loss": loss.detach(), "real_score": real_pred.detach().float().mean(),
                "fake_score": fake_pred.detach().float().mean()}

    def _r1_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        real = real.detach().requires_grad_(True)
        real_pred = self.discriminator(self.augment(real))  # fp32: a gradient penalty under autocast loses precision
        penalty = losses.r1_penalty(real_pred, real)
        loss = self.config.r1 / 2 * penalty * self.config.r1_every
        self.env.optimize(loss, self.d_optim)
        return {"r1": penalty.detach()}

    def _generator_step(self) -> dict[str, torch.Tensor]:
        self.discriminator.requires_grad_(False)
        try:
            with self.env.precision.autocast():
                fake_pred = self.discriminator(self.augment(self.fake(self.global_batch)))
                loss = self.g_loss(losses.full(fake_pred))
            self.env.optimize(loss, self.g_optim)
        finally:
            self.discriminator.requires_grad_(True)
        return {"g_loss": loss.detach()}

    def _path_step(self) -> dict[str, torch.Tensor]:
        cfg, env = self.config, self.env
        global_batch = max(1, self.global_batch // cfg.path_batch_shrink)
        image, w = self.fake(global_batch, return_latents=True)
        noise = env.ctx.shard(env.random.normal(global_batch, *image.shape[1:]))
        lengths = losses.path_lengths(image, w, noise)
        # The running target uses the (detached) mean over all processes, so it is the same
        # on every process; the official code also lets a 1% share of the gradient flow
        # through the batch mean, which is left out here.
        batch_mean = mean_over_processes(lengths.detach().mean(), env.ctx)
        target = self.mean_path_length + cfg.path_decay * (batch_mean - self.mean_path_length)
        penalty = (lengths - target).pow(2).mean()
        self.env.optimize(cfg.path_reg * cfg.path_every * penalty, self.g_optim)
        self.mean_path_length = target.detach()
        return {"path_penalty": penalty.detach(), "path_length": batch_mean}

    # ----------------------------------------------------------- reporting
    @torch.no_grad()
    def samples(self, z: torch.Tensor) -> torch.Tensor:
        w = broadcast_latents(self.g_ema.z_to_w(z), self.model.n_latent)
        image, _ = self.g_ema(w)
        return image

    def image_grids(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"samples": make_grid(self.samples(self.sample_z)), "reals": make_grid(batch)}

    @torch.no_grad()
    def validate(self, batches: Iterable[torch.Tensor], val_set: ImageFolder | None) -> dict[str, float]:
        """Discriminator scores of validation images and g_ema samples; FID when configured.

        The discriminator runs in eval mode here, so validation leaves its BatchNorm and
        spectral-norm state (projected) untouched.
        """
        self.discriminator.eval()
        try:
            real_scores = [self.discriminator(b).mean() for b in batches]
            values = {}
            if real_scores:
                values["d_real"] = float(torch.stack(real_scores).mean())
                values["d_fake_ema"] = float(self.discriminator(self.samples(self.sample_z)).mean())
        finally:
            self.discriminator.train()
        if self.config.fid_every and val_set is not None:
            values["fid"] = self.fid(val_set)
        return values

    def fid(self, val_set: ImageFolder) -> float:
        """FID (TF-Inception) between ``fid_samples`` g_ema images and the validation images."""
        from ..metrics.fid import fid_from_tensors

        g = torch.Generator().manual_seed(FID_SEED)
        fakes = []
        for start in range(0, self.config.fid_samples, 32):
            n = min(32, self.config.fid_samples - start)
            z = torch.randn(n, self.model.generator.z_size, generator=g).to(self.env.ctx.device)
            fakes.append(self.samples(z).clamp(-1, 1).cpu())
        reals = torch.stack([val_set[i] for i in range(len(val_set))])
        return fid_from_tensors(torch.cat(fakes), reals, input_range=(-1.0, 1.0), device=self.env.ctx.device)

    def export(self, folder: Path) -> list[Path]:
        folder = Path(folder)
        latent_avg = self.g_ema.mean_latent(self.config.latent_avg_samples)[0]
        tensors = GeneratorExport(self.g_ema, latent_avg.expand(self.model.n_latent, -1).clone()).state_dict()
        cpu = lambda m: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}  # noqa: E731
        pt = save_layout(folder / "stylegan2.pt", Kind.STYLEGAN2, tensors, self.model,
                         extra={"g": cpu(self.generator), "d": cpu(self.discriminator)})
        native = save_tensors(tensors, folder / "stylegan2.safetensors", self.model, kind=Kind.STYLEGAN2)
        return [pt, native]

def projected_input_size(config: StyleGAN2Config, resolution: int) -> int:
    """The backbone input size: ``projected_size``, or twice the resolution and at least 128."""
    return config.projected_size or max(128, 2 * resolution)


def build_discriminator(config: StyleGAN2Config, model: SDICConfig) -> nn.Module:
    """StyleGAN2's discriminator or the projected one, as configured."""
    gcfg = model.generator
    if config.discriminator == "projected":
        return ProjectedDiscriminator(projected_input_size(config, gcfg.size), config.projected_channels,
                                      config.projected_width, seed=config.run.seed)
    return Discriminator(gcfg, config.stddev_group, config.d_channel_multiplier)


def _with_model(config: StyleGAN2Config, model: SDICConfig) -> StyleGAN2Config:
    from dataclasses import replace

    return replace(config, model=model_spec(model))


def build(config: StyleGAN2Config, env: StageEnv) -> StyleGAN2Stage:
    return StyleGAN2Stage(config, env)
