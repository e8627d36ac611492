"""SynergyNet (Wu et al., 3DV 2021; choyingw/SynergyNet) re-typed without torchvision.

Module names follow the official code so that its ``best.pth.tar`` loads strictly:
``I2P.backbone`` is a torchvision-layout MobileNetV2 (features.0 .. features.18) with three heads
``classifier_ori`` (12 pose), ``classifier_shape`` (40), ``classifier_exp`` (10), concatenated in
that order; ``forwardDirection`` / ``reverseDirection`` are the landmark-refinement and
landmark-to-parameter point MLPs; the BFM tensors the official model registers as buffers
(param_mean/std, u, w_shp, w_exp, u_base, w_shp_base, w_exp_base) are buffers here too.

Inference is the official ``forward_test``: backbone -> 62 whitened parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# t (expansion), c (channels), n (repeats), s (first stride): torchvision / SynergyNet MobileNetV2
_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
            [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
BUFFER_SHAPES = {
    "param_mean": (62,), "param_std": (62,),
    "u": (159645, 1), "w_shp": (159645, 40), "w_exp": (159645, 10),
    "u_base": (204, 1), "w_shp_base": (204, 40), "w_exp_base": (204, 10),
}


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, kernel=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand_ratio):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(cin, hidden, kernel=1))
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Heads(nn.Module):
    """forward(x) -> (62 whitened params, 1280-d pooled feature)."""

    def __init__(self):
        super().__init__()
        cin, last = 32, 1280
        feats: list[nn.Module] = [ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in _SETTING:
            for i in range(n):
                feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(ConvBNReLU(cin, last, kernel=1))
        self.features = nn.Sequential(*feats)
        self.classifier_ori = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, 12))
        self.classifier_shape = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, 40))
        self.classifier_exp = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, 10))

    def forward(self, x):
        x = self.features(x)
        pool = F.adaptive_avg_pool2d(x, 1).flatten(1)
        out = torch.cat([self.classifier_ori(pool), self.classifier_shape(pool), self.classifier_exp(pool)], 1)
        return out, pool


class I2P(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = MobileNetV2Heads()


def _c1(cin, cout):
    return nn.Conv1d(cin, cout, 1)


class MLPForward(nn.Module):
    """Official MLP_for: per-landmark residual from point, global, image and 3DMM-code features."""

    def __init__(self, num_pts: int = 68):
        super().__init__()
        self.num_pts = num_pts
        dims = [(3, 64), (64, 64), (64, 64), (64, 128), (128, 1024), (2418, 512), (512, 256), (256, 128), (128, 3)]
        for i, (a, b) in enumerate(dims, 1):
            setattr(self, f"conv{i}", _c1(a, b))
            setattr(self, f"bn{i}", nn.BatchNorm1d(b))

    def forward(self, pts, pool, shape_code, exp_code):
        n = pts.shape[2]
        out = F.relu(self.bn1(self.conv1(pts)))
        out = F.relu(self.bn2(self.conv2(out)))
        point_features = out
        out = F.relu(self.bn3(self.conv3(out)))
        out = F.relu(self.bn4(self.conv4(out)))
        out = F.relu(self.bn5(self.conv5(out)))
        glob = out.amax(dim=2, keepdim=True).expand(-1, -1, n)
        cat = torch.cat([point_features, glob, pool.unsqueeze(2).expand(-1, -1, n),
                         shape_code.unsqueeze(2).expand(-1, -1, n), exp_code.unsqueeze(2).expand(-1, -1, n)], 1)
        out = F.relu(self.bn6(self.conv6(cat)))
        out = F.relu(self.bn7(self.conv7(out)))
        out = F.relu(self.bn8(self.conv8(out)))
        return self.bn9(self.conv9(out))


class MLPReverse(nn.Module):
    """Official MLP_rev: landmarks -> whitened 62 parameters (12 pose, 40 shape, 10 expression)."""

    def __init__(self, num_pts: int = 68):
        super().__init__()
        dims = [(3, 64), (64, 64), (64, 64), (64, 128), (128, 1024)]
        for i, (a, b) in enumerate(dims, 1):
            setattr(self, f"conv{i}", _c1(a, b))
            setattr(self, f"bn{i}", nn.BatchNorm1d(b))
        for j, d in ((1, 12), (2, 40), (3, 10)):
            setattr(self, f"conv6_{j}", _c1(1024, d))
            setattr(self, f"bn6_{j}", nn.BatchNorm1d(d))

    def forward(self, pts):
        out = pts
        for i in range(1, 6):
            out = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out)))
        glob = out.amax(dim=2, keepdim=True)
        parts = [getattr(self, f"bn6_{j}")(getattr(self, f"conv6_{j}")(glob)) for j in (1, 2, 3)]
        return torch.cat(parts, 1).squeeze(2)


class SynergyNet(nn.Module):
    """Official SynergyNet layout. ``forward`` is the official ``forward_test`` (whitened params)."""

    STD_SIZE = 120

    def __init__(self):
        super().__init__()
        self.I2P = I2P()
        self.forwardDirection = MLPForward(68)
        self.reverseDirection = MLPReverse(68)
        for name, shape in BUFFER_SHAPES.items():
            self.register_buffer(name, torch.zeros(shape))

    def forward(self, x):
        return self.I2P.backbone(x)[0]

    # --- the training-time refinement branch (official SynergyNet.forward without the losses).
    # NOT verified and not exported: on the fixture it gives landmarks 0.22 px away from the
    # official landmarks68_refined_crop and reverse params far from params_reverse, so some detail
    # of the official branch differs. The weights load (strict) so that checkpoints are accepted.
    def landmarks_model(self, params_whitened):
        """68 landmarks (N,3,68) in the official convention (y = 121 - y), from whitened params."""
        p = params_whitened * self.param_std + self.param_mean
        P = p[:, :12].reshape(-1, 3, 4)
        base = self.u_base[:, 0] + p[:, 12:52] @ self.w_shp_base.T + p[:, 52:62] @ self.w_exp_base.T
        pts = P[:, :, :3] @ base.reshape(-1, 68, 3).transpose(1, 2) + P[:, :, 3:]
        return torch.stack([pts[:, 0], self.STD_SIZE + 1 - pts[:, 1], pts[:, 2]], 1)

    def refine(self, x):
        """(refined 68 landmarks (N,3,68), reverse-MLP whitened params (N,62))."""
        attr, pool = self.I2P.backbone(x)
        lmk = self.landmarks_model(attr)
        lmk = lmk + 0.05 * self.forwardDirection(lmk, pool, attr[:, 12:52], attr[:, 52:])
        return lmk, self.reverseDirection(lmk)
