"""Reference-semantics SDIC inversion: the authors' operations, in plain PyTorch.

This is the *baseline* of ``bench_inference.py`` and of the fast-vs-reference
tests, not part of the product. It mirrors the authors' code path op by op
(their CUDA extensions replaced by the rosinality "native" fallbacks):

* modulated convs modulate and demodulate the *weights* per sample and run one
  grouped convolution over a ``[1, B*C, H, W]`` view (``groups=B``); the
  upsampling conv is a grouped transposed conv followed by the blur;
* ``upfirdn2d`` inserts zeros with reshape + pad, pads, and convolves a
  ``[B*C, 1, H, W]`` view with a single-channel kernel (``upfirdn2d_native``);
* fused leaky ReLU is ``leaky_relu(x + bias, 0.2) * sqrt(2)``, noise injection
  ``x + weight * noise``;
* e4e, DIPN and DICN are the ordinary modules (conv, BN, activation) applied one
  after another, NCHW, no folding.

It reads every weight from an :class:`sdic.SDICModel` (sharing its tensors, so
no extra memory) and computes the inversion of docs/architecture.md independently of the model's
own forward code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


class ReferenceSDIC:
    """The authors' formulation of SDIC inversion and editing over a model's weights."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.config = model.config
        self.p = dict(model.state_dict(keep_vars=False))
        g = self.config.generator
        self.n_latent = g.n_latent
        self.log_size = g.log_size
        self.tap_block = self.config.tap_block

    # ------------------------------------------------------------ primitives
    @staticmethod
    def upfirdn2d_native(x, kernel, up=1, down=1, pad=(0, 0)):
        _, channel, in_h, in_w = x.shape
        x = x.reshape(-1, in_h, in_w, 1)
        _, in_h, in_w, minor = x.shape
        kh, kw = kernel.shape
        out = x.view(-1, in_h, 1, in_w, 1, minor)
        out = F.pad(out, [0, 0, 0, up - 1, 0, 0, 0, up - 1])
        out = out.view(-1, in_h * up, in_w * up, minor)
        p0, p1 = pad
        out = F.pad(out, [0, 0, max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
        out = out[:, max(-p0, 0): out.shape[1] - max(-p1, 0), max(-p0, 0): out.shape[2] - max(-p1, 0), :]
        out = out.permute(0, 3, 1, 2)
        out = out.reshape([-1, 1, in_h * up + p0 + p1, in_w * up + p0 + p1])
        w = torch.flip(kernel, [0, 1]).view(1, 1, kh, kw).to(out.dtype)
        out = F.conv2d(out, w)
        out = out.reshape(-1, minor, in_h * up + p0 + p1 - kh + 1, in_w * up + p0 + p1 - kw + 1)
        out = out.permute(0, 2, 3, 1)
        out = out[:, ::down, ::down, :]
        return out.reshape(-1, channel, out.shape[1], out.shape[2])

    def equal_linear(self, prefix, x, lr_mul=1.0, activation=False):
        w, b = self.p[prefix + ".weight"], self.p[prefix + ".bias"]
        scale = lr_mul / math.sqrt(w.shape[1])
        if activation:
            out = F.linear(x, w * scale)
            return F.leaky_relu(out + b * lr_mul, 0.2) * SQRT2
        return F.linear(x, w * scale, bias=b * lr_mul)

    def modulated_conv(self, prefix, x, style, demodulate=True, upsample=False):
        weight = self.p[prefix + ".weight"]
        _, out_ch, in_ch, k, _ = weight.shape
        batch, _, height, width = x.shape
        style = self.equal_linear(prefix + ".modulation", style).view(batch, 1, in_ch, 1, 1)
        weight = (1 / math.sqrt(in_ch * k * k)) * weight * style
        if demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, out_ch, 1, 1, 1)
        weight = weight.view(batch * out_ch, in_ch, k, k).to(x.dtype)
        if upsample:
            x = x.reshape(1, batch * in_ch, height, width)
            weight = weight.view(batch, out_ch, in_ch, k, k).transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.view(batch, out_ch, *out.shape[2:])
            return self.upfirdn2d_native(out, self.p[prefix + ".blur.kernel"], pad=(1, 1))
        x = x.reshape(1, batch * in_ch, height, width)
        out = F.conv2d(x, weight, padding=k // 2, groups=batch)
        return out.view(batch, out_ch, *out.shape[2:])

    def styled_conv(self, prefix, x, style, noise, upsample=False):
        out = self.modulated_conv(prefix + ".conv", x, style, upsample=upsample)
        out = out + self.p[prefix + ".noise.weight"] * noise
        bias = self.p[prefix + ".activate.bias"].view(1, -1, 1, 1)
        return F.leaky_relu(out + bias, 0.2) * SQRT2

    def to_rgb(self, prefix, x, style, skip=None):
        out = self.modulated_conv(prefix + ".conv", x, style, demodulate=False)
        out = out + self.p[prefix + ".bias"]
        if skip is not None:
            out = out + self.upfirdn2d_native(skip, self.p[prefix + ".upsample.kernel"], up=2, pad=(2, 1))
        return out

    # -------------------------------------------------------------- generator
    def generator(self, w, tap_feature=None):
        """Authors' synthesis of W+ ``w`` with the SDIC tap; returns (image, G7)."""
        g = "generator."
        noise = [self.p[f"{g}noises.noise_{i}"] for i in range(2 * (self.log_size - 2) + 1)]
        x = self.p[g + "input.input"].repeat(w.shape[0], 1, 1, 1)
        x = self.styled_conv(g + "conv1", x, w[:, 0], noise[0])
        skip = self.to_rgb(g + "to_rgb1", x, w[:, 1])
        tap = None
        for j in range(self.log_size - 2):
            i = 1 + 2 * j
            if j == self.tap_block:
                tap = self.styled_conv(f"{g}convs.{2 * j}", x, w[:, i], noise[2 * j + 1], upsample=True)
                x = tap if tap_feature is None else tap_feature
            else:
                x = self.styled_conv(f"{g}convs.{2 * j}", x, w[:, i], noise[2 * j + 1], upsample=True)
            x = self.styled_conv(f"{g}convs.{2 * j + 1}", x, w[:, i + 1], noise[2 * j + 2])
            skip = self.to_rgb(f"{g}to_rgbs.{j}", x, w[:, i + 2], skip)
        return skip, tap

    # ------------------------------------------------------------ plain nets
    def conv(self, prefix, x, stride=1, padding=0, transposed=False, bias=None):
        w = self.p[prefix + ".weight"]
        b = self.p.get(prefix + ".bias") if bias is None else bias
        if transposed:
            fn = F.conv_transpose3d if w.ndim == 5 else F.conv_transpose2d
        else:
            fn = F.conv3d if w.ndim == 5 else F.conv2d
        return fn(x, w, b, stride=stride, padding=padding)

    def bn(self, prefix, x):
        p = self.p
        return F.batch_norm(x, p[prefix + ".running_mean"], p[prefix + ".running_var"],
                            p[prefix + ".weight"], p[prefix + ".bias"], False, 0.0, 1e-5)

    def prelu(self, prefix, x):
        return F.prelu(x, self.p[prefix + ".weight"])

    def basic_conv(self, prefix, x, stride=1, padding=1, transposed=False, bn=True, relu=True):
        x = self.conv(prefix + ".conv", x, stride, padding, transposed)
        if bn:
            x = self.bn(prefix + ".bn", x)
        if relu:
            x = F.leaky_relu(x, 0.01)
        return x

    def ir_unit(self, prefix, x, stride, se=True):
        r = prefix + ".res_layer."
        shortcut_key = prefix + ".shortcut_layer.0.weight"
        if shortcut_key in self.p:
            sc = self.bn(prefix + ".shortcut_layer.1", self.conv(prefix + ".shortcut_layer.0", x, stride))
        else:
            sc = F.max_pool2d(x, 1, stride)
        y = self.bn(r + "0", x)
        y = self.conv(r + "1", y, 1, 1)
        y = self.prelu(r + "2", y)
        y = self.conv(r + "3", y, stride, 1)
        y = self.bn(r + "4", y)
        if se:
            gate = F.adaptive_avg_pool2d(y, 1)
            gate = F.relu(self.conv(r + "5.fc1", gate))
            gate = torch.sigmoid(self.conv(r + "5.fc2", gate))
            y = y * gate
        return y + sc

    # ------------------------------------------------------------------- e4e
    def encoder(self, x):
        e = "encoder."
        enc = self.config.encoder
        x = self.prelu(e + "input_layer.2", self.bn(e + "input_layer.1", self.conv(e + "input_layer.0", x, 1, 1)))
        taps = {}
        index = 0
        t1, t2, t3 = enc.tap_units
        for count in enc.stage_units:
            for u in range(count):
                x = self.ir_unit(f"{e}body.{index}", x, 2 if u == 0 else 1)
                if index in (t1, t2, t3):
                    taps[index] = x
                index += 1
        c1, c2, c3 = taps[t1], taps[t2], taps[t3]

        def style(i, feat):
            n = int(math.log2(enc.style_spatial(i)))
            for k in range(n):
                feat = F.leaky_relu(self.conv(f"{e}styles.{i}.convs.{2 * k}", feat, 2, 1), 0.01)
            return self.equal_linear(f"{e}styles.{i}.linear", feat.reshape(-1, feat.shape[1]))

        def up_add(a, b):
            return F.interpolate(a, size=b.shape[-2:], mode="bilinear", align_corners=True) + b

        w0 = style(0, c3)
        w = w0.unsqueeze(1).repeat(1, self.n_latent, 1)
        features = c3
        p2 = c3
        for i in range(1, self.n_latent):
            if i == enc.coarse_index:
                p2 = up_add(c3, self.conv(e + "latlayer1", c2))
                features = p2
            elif i == enc.middle_index:
                features = up_add(p2, self.conv(e + "latlayer2", c1))
            delta = style(i, features)
            w[:, i] = w[:, i] + delta
        return w

    # ------------------------------------------------------------------ DIPN
    def dipn(self, image, recon):
        d = "dipn."

        def pyramid(prefix, x):
            f1 = self.basic_conv(prefix + "fe1", x)
            f2 = self.basic_conv(prefix + "fe3", self.basic_conv(prefix + "fe2", f1, 2))
            f4 = self.basic_conv(prefix + "fe4", f2, 2)
            f8 = self.basic_conv(prefix + "fe5", f4, 2)
            return [f1, f2, f4, f8]

        def conv2x(prefix, x, rem):
            x = self.basic_conv(prefix + ".conv1", x, 2, 1, transposed=True)
            if x.shape[-2:] != rem.shape[-2:]:
                x = F.interpolate(x, size=rem.shape[-2:], mode="nearest")
            return self.basic_conv(prefix + ".conv2", torch.cat((x, rem), 1))

        def feature_up(levels):
            f1, f2, f4, f8 = levels
            u4 = conv2x(d + "feature_up.deconv8_4", f8, f4)
            u2 = conv2x(d + "feature_up.deconv4_2", u4, f2)
            u1 = conv2x(d + "feature_up.deconv2_1", u2, f1)
            return [self.basic_conv(d + "feature_up.conv4", u1), u2, u4, f8]

        def cgf(prefix, cv, feat):
            f = self.basic_conv(prefix + ".semantic.0", feat, padding=0)
            f = self.conv(prefix + ".semantic.1", f).unsqueeze(2)
            a = self.basic_conv(prefix + ".att.0", f + cv, padding=(0, 2, 2))
            a = self.conv(prefix + ".att.1", a)
            cv = torch.sigmoid(a) * f + cv
            return self.basic_conv(prefix + ".agg", cv, padding=(0, 2, 2))

        imgs = feature_up(pyramid(d + "feature1.", image))
        recs = feature_up(pyramid(d + "feature2.", recon))
        desc = [self.conv(d + "desc", self.basic_conv(d + "conv", lv[0])) for lv in (imgs, recs)]
        volume = torch.cat(desc, 1).unsqueeze(1)
        volume = self.basic_conv(d + "corr_stem", volume)
        h = d + "hourglass_fusion."
        c1 = self.basic_conv(h + "conv1.1", self.basic_conv(h + "conv1.0", volume, 2))
        c2 = self.basic_conv(h + "conv2.1", self.basic_conv(h + "conv2.0", c1, 2))
        c3 = self.basic_conv(h + "conv3.1", self.basic_conv(h + "conv3.0", c2, 2))
        c3 = cgf(h + "CGF_32", c3, imgs[3])
        up3 = self.basic_conv(h + "conv3_up", c3, 2, 1, transposed=True)
        c2 = torch.cat((up3, c2), 1)
        c2 = self.basic_conv(h + "agg_0.0", c2, padding=0)
        c2 = self.basic_conv(h + "agg_0.2", self.basic_conv(h + "agg_0.1", c2))
        c2 = cgf(h + "CGF_16", c2, imgs[2])
        up2 = self.basic_conv(h + "conv2_up", c2, 2, 1, transposed=True)
        c1 = torch.cat((up2, c1), 1)
        c1 = self.basic_conv(h + "agg_1.0", c1, padding=0)
        c1 = self.basic_conv(h + "agg_1.2", self.basic_conv(h + "agg_1.1", c1))
        c1 = cgf(h + "CGF_8", c1, imgs[1])
        out = self.basic_conv(h + "conv1_up", c1, 2, 1, transposed=True, bn=False, relu=False)
        x = out.squeeze(1)
        x = self.basic_conv(d + "rgb1.0", x)
        x = self.conv(d + "rgb1.1", x, 1, 1)
        x = F.relu(self.bn(d + "rgb1.2", x))
        for k in range(3):
            x = self.ir_unit(f"{d}rgb.{k}", x, 1, se=False)
        return x

    # ------------------------------------------------------------------ DICN
    def dicn(self, disc, tap, w):
        s = "dicn."
        f = self.prelu(s + "conv_layer1.2", self.bn(s + "conv_layer1.1", self.conv(s + "conv_layer1.0", disc, 1, 1)))
        n_stages = self.config.dicn_downsamplings
        for k in range(n_stages):
            f = self.basic_conv(f"{s}semantic.{2 * k}", f, 2, 1)
            f = self.conv(f"{s}semantic.{2 * k + 1}", f, 1, 1)
        a = self.basic_conv(s + "att.0", f + tap)
        a = self.conv(s + "att.1", a, 1, 1)
        feature = torch.sigmoid(a) * f + tap

        def eq_conv(prefix, x):
            wt = self.p[prefix + ".weight"]
            return F.conv2d(x, wt / math.sqrt(wt[0].numel()), self.p[prefix + ".bias"], padding=1)

        shift = eq_conv(s + "condition_shift3.0", disc)
        shift = F.leaky_relu(shift, 0.2) * SQRT2
        shift = eq_conv(s + "condition_shift3.2", shift)
        res = self.config.tap_resolution
        shift = F.interpolate(shift, size=(res, res), mode="bilinear", align_corners=False)
        shift = shift.reshape(shift.shape[0], -1, self.config.generator.style_dim)

        def conv1d(prefix, x, padding=0):
            return F.conv1d(x, self.p[prefix + ".weight"], self.p.get(prefix + ".bias"), padding=padding)

        def block(prefix, x, padding):
            x = self.bn(prefix + ".1", conv1d(prefix + ".0", x, padding))
            return F.leaky_relu(x, 0.01)

        a1 = s + "aff1d."
        sen = conv1d(a1 + "sen.3", block(a1 + "sen", shift, 0))
        att = conv1d(a1 + "att.3", block(a1 + "att", sen, 1))
        att2 = conv1d(a1 + "att2.3", block(a1 + "att2", sen, 1))
        return feature, att * w + w + att2

    # --------------------------------------------------------------- pipeline
    @torch.no_grad()
    def invert(self, x):
        """The inversion (docs/architecture.md) of a [B, 3, S, S] face canvas; returns a dict."""
        codes = self.encoder(x) + self.p["latent_avg"]
        initial, tap = self.generator(codes)
        size = self.config.input_size
        recon = F.interpolate(initial.clamp(-1, 1), size=(size, size), mode="bilinear", align_corners=False)
        disc = self.dipn(x, recon)
        feature, latents = self.dicn(disc, tap, codes)
        image, _ = self.generator(latents, tap_feature=feature)
        return {"codes": codes, "latents": latents, "discrepancy": disc, "initial_image": initial,
                "image": image, "tap": tap, "feature": feature}

    @torch.no_grad()
    def edit(self, x, direction):
        """The authors' edit: the whole inversion again, then G(W_e) tap and G(W_e, F - G7 + G7_e)."""
        inv = self.invert(x)
        edited = inv["latents"] + direction
        _, tap_e = self.generator(edited)
        feature = inv["feature"] - inv["tap"] + tap_e
        image, _ = self.generator(edited, tap_feature=feature)
        return image
