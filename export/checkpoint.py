"""Safe checkpoint loading (torch.load weights_only=True) and strict, explained state-dict matching."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

from export import ExportInputError


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require_file(path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise ExportInputError(f"{what} not found: {p} (check the path)")
    if not p.is_file():
        raise ExportInputError(f"{what} is not a file: {p} (give the file itself)")
    return p


def load_state_dict(path) -> dict:
    """Tensors of a checkpoint: a plain state_dict or {'state_dict': ...}; 'module.' prefixes removed.

    Loaded with torch.load(weights_only=True): files that need arbitrary unpickling are refused.
    """
    import torch

    p = _require_file(path, "checkpoint")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ExportInputError(
                f"checkpoint {p} needs arbitrary unpickling, refused for safety ({first[:160]}); "
                "re-save it with torch.save({'state_dict': model.state_dict()}) from trusted code") from None
        raise ExportInputError(f"checkpoint {p} is not a PyTorch checkpoint ({first[:160]}); "
                               "give the .pth/.pth.tar file written by torch.save") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportInputError(f"checkpoint {p} cannot be read as a PyTorch checkpoint (truncated or another "
                               f"format: {first[:160]}); give the .pth/.pth.tar file written by torch.save") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ExportInputError(f"checkpoint {p} holds a {type(obj).__name__}, not a state dict "
                               "(expected {name: tensor} or {'state_dict': {name: tensor}})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ExportInputError(f"checkpoint {p} is not a state dict: entry {bad[0]!r} is not a tensor "
                               "(expected {name: tensor} or {'state_dict': {name: tensor}})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def strict_load(model, sd: dict, path, arch: str) -> None:
    """load_state_dict(strict=True) with one readable line naming missing/unexpected/mismatched keys."""
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(want[k].shape)}" for k in want
                  if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (first: {'; '.join(mismatched[:2])})")
        raise ExportInputError(f"checkpoint {path} does not fit the {arch} network: {'; '.join(parts)}; "
                               f"is it a checkpoint of another architecture?")
    model.load_state_dict(sd, strict=True)
