"""Count multiply-accumulates (MACs) and parameters of a PyTorch network with forward hooks.

    count_flops(model, (1, 3, 120, 120)) -> {"macs", "flops", "params", "other_ops", "by_type"}

Convention (state it beside every number you quote):
- ``macs``: multiply-accumulates of the weight layers only, one per weight use:
  Conv1d/2d: out.numel() * (in_channels / groups) * prod(kernel); Linear: out.numel() * in_features.
  Biases, BatchNorm, activations, pooling and element-wise products are NOT in ``macs``.
- ``flops`` = 2 * macs (a multiply and an add each). Papers disagree on which one they call
  "FLOPs": MobileNet/ShuffleNet-style tables usually quote MACs under that name.
- ``other_ops``: element-wise work not in macs, one op per output element: BatchNorm (folded into the
  conv at inference), activations, pooling (per input element), the products of attention gates.
  Reported separately so it can be added if a paper counts it.
- ``params``: all trainable parameters (buffers such as BN running stats excluded).
"""
from __future__ import annotations

import math

import torch
from torch import nn

_ELEMENTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid,
                nn.Hardswish, nn.SiLU, nn.PReLU, nn.GroupNorm)
_POOL = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)


def count_flops(model: nn.Module, input_shape=(1, 3, 120, 120)) -> dict:
    """MACs/FLOPs of one forward pass on zeros of ``input_shape`` (batch included) and parameter count."""
    counts = {"macs": 0, "other_ops": 0}
    by_type: dict[str, int] = {}

    def add_macs(m, n):
        counts["macs"] += int(n)
        k = type(m).__name__
        by_type[k] = by_type.get(k, 0) + int(n)

    def conv_hook(m, inp, out):
        add_macs(m, out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size))

    def linear_hook(m, inp, out):
        add_macs(m, out.numel() * m.in_features)

    def elem_hook(m, inp, out):
        counts["other_ops"] += int(out.numel())

    def pool_hook(m, inp, out):
        counts["other_ops"] += int(inp[0].numel())

    hooks = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, _ELEMENTWISE):
            hooks.append(m.register_forward_hook(elem_hook))
        elif isinstance(m, _POOL):
            hooks.append(m.register_forward_hook(pool_hook))
        elif hasattr(m, "extra_ops"):  # modules with element-wise products (attention gates)
            hooks.append(m.register_forward_hook(lambda mod, i, o: counts.__setitem__(
                "other_ops", counts["other_ops"] + int(mod.extra_ops(i[0], o)))))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(tuple(input_shape), dtype=p.dtype if p is not None else torch.float32)
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"macs": counts["macs"], "flops": 2 * counts["macs"], "params": int(params),
            "other_ops": counts["other_ops"], "by_type": by_type}


def format_cost(name: str, r: dict) -> str:
    return (f"{name}: {r['params'] / 1e6:.3f} M params, {r['macs'] / 1e9:.4f} GMACs "
            f"({r['flops'] / 1e9:.4f} GFLOPs = 2 x MACs), other element-wise ops {r['other_ops'] / 1e6:.2f} M")
