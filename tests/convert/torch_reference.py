"""Independent PyTorch references for the parity tests (test-only; imports torch).

Written from the reference designs, not from kdet: a pycls-style RegNet (pycls
models/anynet.py + regnet.py: SimpleStem, ResBottleneckBlock with SE, AnyHead; widths by
pycls' ``generate_regnet`` + ``adjust_block_compatibility`` in float64), a torchvision-style
RegNet (torchvision/models/regnet.py: ``BlockParams.from_init_params`` on torch float32
tensors, ``_make_divisible``) and a torchvision-style ResNet-50. Module names reproduce each
library's state-dict keys.
"""
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

BN_EPS = 1e-5


# ---- width generation ----------------------------------------------------------------

def pycls_stages(w0, wa, wm, depth, group_w, bot_mul=1.0, se_ratio=0.0, q=8):
    """pycls regnet.generate_regnet + anynet.adjust_block_compatibility (float64 numpy)."""
    ws_cont = np.arange(depth) * wa + w0
    ks = np.round(np.log(ws_cont / w0) / np.log(wm))
    ws_all = np.round(w0 * np.power(wm, ks) / q).astype(int) * q
    ws, ds = np.unique(ws_all, return_counts=True)
    vs = [int(max(1, w * bot_mul)) for w in ws]
    gs = [int(min(group_w, v)) for v in vs]
    vs = [max(g, int(round(v / g) * g)) for v, g in zip(vs, gs)]
    ws = [int(v / bot_mul) for v in vs]
    return list(ws), [int(d) for d in ds], gs


def _make_divisible(v, divisor, min_value=None):
    """torchvision.ops.misc._make_divisible."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def torchvision_stages(w0, wa, wm, depth, group_w, bot_mul=1.0, se_ratio=0.0):
    """torchvision BlockParams.from_init_params (torch tensors, default float32)."""
    quant = 8
    widths_cont = torch.arange(depth) * wa + w0
    block_capacity = torch.round(torch.log(widths_cont / w0) / math.log(wm))
    block_widths = (torch.round(torch.divide(w0 * torch.pow(wm, block_capacity), quant))
                    * quant).int().tolist()
    splits = [w != wp or r != rp for w, wp, r, rp in
              zip(block_widths + [0], [0] + block_widths, block_widths + [0], [0] + block_widths)]
    stage_widths = [w for w, t in zip(block_widths, splits[:-1]) if t]
    stage_depths = torch.diff(torch.tensor([d for d, t in enumerate(splits) if t])).int().tolist()
    widths = [int(w * bot_mul) for w in stage_widths]
    gs = [min(group_w, w) for w in widths]
    ws_bot = [_make_divisible(w, g) for w, g in zip(widths, gs)]
    return [int(w / bot_mul) for w in ws_bot], stage_depths, gs


# ---- pycls-style RegNet ------------------------------------------------------------------

def _bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS)


class PyclsSE(nn.Module):
    def __init__(self, w_in, w_se):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.f_ex = nn.Sequential(nn.Conv2d(w_in, w_se, 1, bias=True), nn.ReLU(),
                                  nn.Conv2d(w_se, w_in, 1, bias=True), nn.Sigmoid())

    def forward(self, x):
        return x * self.f_ex(self.avg_pool(x))


class PyclsTransform(nn.Module):
    def __init__(self, w_in, w_out, stride, group_w, se_ratio):
        super().__init__()
        w_b = w_out
        self.a = nn.Conv2d(w_in, w_b, 1, bias=False)
        self.a_bn = _bn(w_b)
        self.a_af = nn.ReLU()
        self.b = nn.Conv2d(w_b, w_b, 3, stride=stride, padding=1, groups=w_b // group_w, bias=False)
        self.b_bn = _bn(w_b)
        self.b_af = nn.ReLU()
        if se_ratio:
            self.se = PyclsSE(w_b, int(round(w_in * se_ratio)))
        self.c = nn.Conv2d(w_b, w_out, 1, bias=False)
        self.c_bn = _bn(w_out)

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x


class PyclsBlock(nn.Module):
    def __init__(self, w_in, w_out, stride, group_w, se_ratio):
        super().__init__()
        if w_in != w_out or stride != 1:
            self.proj = nn.Conv2d(w_in, w_out, 1, stride=stride, bias=False)
            self.bn = _bn(w_out)
        self.f = PyclsTransform(w_in, w_out, stride, group_w, se_ratio)
        self.af = nn.ReLU()

    def forward(self, x):
        short = self.bn(self.proj(x)) if hasattr(self, "proj") else x
        return self.af(short + self.f(x))


class PyclsStem(nn.Module):
    def __init__(self, w_out):
        super().__init__()
        self.conv = nn.Conv2d(3, w_out, 3, stride=2, padding=1, bias=False)
        self.bn = _bn(w_out)
        self.af = nn.ReLU()

    def forward(self, x):
        return self.af(self.bn(self.conv(x)))


class PyclsRegNet(nn.Module):
    """Returns (logits, [stage outputs]); state-dict keys as pycls' RegNet."""

    def __init__(self, arch, num_classes=1000):
        super().__init__()
        ws, ds, gs = pycls_stages(**arch)
        se = arch.get("se_ratio", 0.0)
        self.stem = PyclsStem(32)
        w_in = 32
        for i, (w, d, g) in enumerate(zip(ws, ds, gs)):
            stage = nn.Sequential(OrderedDict(
                (f"b{j + 1}", PyclsBlock(w_in if j == 0 else w, w, 2 if j == 0 else 1, g, se))
                for j in range(d)))
            self.add_module(f"s{i + 1}", stage)
            w_in = w
        self.head = nn.Module()
        self.head.fc = nn.Linear(w_in, num_classes)
        self.num_stages = len(ws)

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for i in range(self.num_stages):
            x = getattr(self, f"s{i + 1}")(x)
            feats.append(x)
        return self.head.fc(x.mean((2, 3))), feats


# ---- torchvision-style RegNet ------------------------------------------------------------

def _conv_bn(w_in, w_out, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(w_in, w_out, k, stride=stride, padding=(k - 1) // 2, groups=groups,
                        bias=False), _bn(w_out)]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TvSE(nn.Module):
    def __init__(self, c, c_sq):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c_sq, 1)
        self.fc2 = nn.Conv2d(c_sq, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class TvBlock(nn.Module):
    def __init__(self, w_in, w_out, stride, group_w, se_ratio):
        super().__init__()
        if w_in != w_out or stride != 1:
            self.proj = _conv_bn(w_in, w_out, 1, stride, act=False)
        layers = OrderedDict(a=_conv_bn(w_in, w_out, 1),
                             b=_conv_bn(w_out, w_out, 3, stride, groups=w_out // group_w))
        if se_ratio:
            layers["se"] = TvSE(w_out, int(round(se_ratio * w_in)))
        layers["c"] = _conv_bn(w_out, w_out, 1, act=False)
        self.f = nn.Sequential(layers)

    def forward(self, x):
        short = self.proj(x) if hasattr(self, "proj") else x
        return torch.relu(short + self.f(x))


class TvRegNet(nn.Module):
    """Returns (logits, [stage outputs]); state-dict keys as torchvision's RegNet."""

    def __init__(self, arch, num_classes=1000):
        super().__init__()
        ws, ds, gs = torchvision_stages(**arch)
        se = arch.get("se_ratio", 0.0)
        self.stem = _conv_bn(3, 32, 3, 2)
        stages, w_in = OrderedDict(), 32
        for i, (w, d, g) in enumerate(zip(ws, ds, gs)):
            stages[f"block{i + 1}"] = nn.Sequential(OrderedDict(
                (f"block{i + 1}-{j}", TvBlock(w_in if j == 0 else w, w, 2 if j == 0 else 1, g, se))
                for j in range(d)))
            w_in = w
        self.trunk_output = nn.Sequential(stages)
        self.fc = nn.Linear(w_in, num_classes)

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for stage in self.trunk_output:
            x = stage(x)
            feats.append(x)
        return self.fc(x.mean((2, 3))), feats


# ---- torchvision-style ResNet-50 ---------------------------------------------------------

class TvBottleneck(nn.Module):
    def __init__(self, w_in, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(w_in, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        if stride != 1 or w_in != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(w_in, planes * 4, 1, stride=stride,
                                                      bias=False), _bn(planes * 4))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        short = self.downsample(x) if hasattr(self, "downsample") else x
        return torch.relu(out + short)


class TvResNet50(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        w_in = 64
        for i, (n, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
            blocks = [TvBottleneck(w_in if j == 0 else planes * 4, planes,
                                   (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            w_in = planes * 4
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        feats = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            feats.append(x)
        return self.fc(x.mean((2, 3))), feats


# ---- non-trivial init ----------------------------------------------------------------------

@torch.no_grad()
def randomise(model, seed=0, size=(2, 3, 128, 128)):
    """Seeded weights and BatchNorm state far from identity (so that a wrong mean / var /
    gamma / beta mapping changes the outputs) that still keeps activations O(1):
    random gamma/beta; running statistics measured, layer by layer in eval mode, on a random
    batch; then perturbed (mean shift of 0.1 std, variance scaled by U(0.8, 1.25))."""
    g = torch.Generator().manual_seed(seed)
    bns = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            # the last BN of a residual branch gets a smaller gamma, as in trained networks
            # (pycls even zero-initialises it), which keeps float32 round-off from growing
            low, high = (0.1, 0.4) if name.endswith(("c_bn", "c.1", "bn3")) else (0.5, 1.5)
            m.weight.copy_(torch.empty(c).uniform_(low, high, generator=g))
            m.bias.copy_(torch.randn(c, generator=g) * 0.2)
            bns.append(m)

    def calibrate(bn, inputs):  # forward pre-hook: stats of the eval-mode input
        x = inputs[0]
        bn.running_mean.copy_(x.mean((0, 2, 3)))
        bn.running_var.copy_(x.var((0, 2, 3)) + 1e-3)

    model.eval()
    hooks = [bn.register_forward_pre_hook(calibrate) for bn in bns]
    model(torch.randn(size, generator=g))
    for h in hooks:
        h.remove()
    for bn in bns:
        c = bn.num_features
        bn.running_mean.add_(torch.randn(c, generator=g) * 0.1 * bn.running_var.sqrt())
        bn.running_var.mul_(torch.empty(c).uniform_(0.8, 1.25, generator=g))
        bn.num_batches_tracked.fill_(1000)
    return model
