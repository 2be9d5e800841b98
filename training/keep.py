"""Checkpoints of unfinished long runs, kept in the repository so that the next machine resumes them
(issue 15 item 3): ``python -m training keep runs/NAME`` copies ``runs/NAME/checkpoint.pt`` to
``checkpoints/NAME.pt``; ``python -m training train --config NAME --resume`` on a machine without
``runs/NAME/checkpoint.pt`` starts from that copy and continues exactly (same batches, optimiser
and schedule: :mod:`training.trainer`).

A finished run is not kept (its exported ONNX is where a fine-tune starts) and its kept copy is
removed when the run is kept or pruned again (``python -m training keep --prune``). All kept files
together stay under ``BUDGET_MB``: the repository carries them, and every later clone too.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional

BUDGET_MB = 60.0
CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


class KeepError(RuntimeError):
    """A checkpoint that cannot or should not be kept."""


def _summary(path: Path) -> Dict:
    import torch
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    cfg = ckpt["config"]
    return {"name": cfg["name"], "step": int(ckpt["step"]), "steps": int(cfg["steps"]),
            "finished": int(ckpt["step"]) >= int(cfg["steps"]), "mb": path.stat().st_size / 1e6}


def kept(folder: Path = CHECKPOINTS) -> List[Dict]:
    """The kept checkpoints, with name, step, schedule length, finished and size."""
    return [dict(_summary(p), file=str(p)) for p in sorted(Path(folder).glob("*.pt"))]


def prune(runs: Path = Path("runs"), folder: Path = CHECKPOINTS) -> List[str]:
    """Remove the kept copies of runs that have finished here since (``runs/NAME/checkpoint.pt``
    at the end of its schedule) and of finished runs; returns the removed files."""
    removed = []
    for k in kept(folder):
        here = Path(runs) / k["name"] / "checkpoint.pt"
        if k["finished"] or (here.exists() and _summary(here)["finished"]):
            os.remove(k["file"])
            removed.append(k["file"])
    return removed


def keep(run: Path, folder: Path = CHECKPOINTS, budget_mb: float = BUDGET_MB) -> Path:
    """Copy ``run/checkpoint.pt`` to ``folder/NAME.pt`` (replacing an older copy of the run)."""
    src = Path(run) / "checkpoint.pt"
    if not src.exists():
        raise KeepError(f"no checkpoint at {src}")
    info = _summary(src)
    if info["finished"]:
        raise KeepError(f"{info['name']} has finished ({info['step']} of {info['steps']} steps): its ONNX "
                        "export is the start of any further training, the checkpoint is not kept")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{info['name']}.pt"
    others = sum(k["mb"] for k in kept(folder) if Path(k["file"]) != dst)
    if others + info["mb"] > budget_mb:
        raise KeepError(f"keeping {info['name']} ({info['mb']:.1f} MB) beside {others:.1f} MB of kept checkpoints "
                        f"would exceed the {budget_mb:.0f} MB budget: prune or finish a run first")
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def kept_checkpoint(name: str, folder: Path = CHECKPOINTS) -> Optional[Path]:
    """The kept copy of run ``name``, if any."""
    path = Path(folder) / f"{name}.pt"
    return path if path.exists() else None
