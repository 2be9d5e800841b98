"""A training run sized to a wall-clock budget, ready for a borrowed GPU machine (issue 15, item 4).

A GPU machine is lent now and then, for minutes, with nothing to install from outside: it has
PyTorch, onnx and numpy, sees only the copy of the repository that travels with the command
(64 MiB in all, files back from ``$OUT`` at most 16 MB each), and not ``../shared/data``. So:

1. here, ``make gpu-bundle`` packs the clean training references compactly into ``.devdata``
   (git-ignored; Sentinel-1 means in float16, BSD400 as uint8; about 20 MB) and prints what
   travels;
2. there, one command (``carry: [".devdata"]``)::

       python3 -m training.gpu_run run --config unet_l1_correlated_long --minutes 7 \\
           --data .devdata --out $OUT

   trains on CUDA when torch sees it (else on the CPU: the smoke test), starting from the
   configuration's ``init`` (a bundled float32 ONNX file travels with the repository), with the
   learning-rate schedule shortened to end inside the budget (``training.trainer``'s
   ``max_minutes``), or continues a run that was cut short (``--stop-after``, a lost machine)
   from the parts it left (``--resume-parts``; a finished schedule is not extended: fine-tune it
   further with a configuration whose ``init`` is its ONNX), and leaves in
   ``--out`` the exported ONNX (card metrics left for step 3), the checkpoint cut into parts of
   at most 15 MB (``checkpoint.pt.partNN``), the log and a ``manifest.json`` with checksums;
3. here, ``python -m training.gpu_run join FOLDER --out runs/NAME`` rebuilds the checkpoint
   (checked against the manifest), after which ``python -m training export`` /
   ``evaluate`` / ``quantize`` work as for a CPU run, and the same command resumes it
   (``--resume-parts FOLDER``) on the next GPU machine.

Every model made this way stays reproducible on the CPU: its card's ``reproduce`` command is the
CPU command for the same configuration and number of steps.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

PART_BYTES = 15_000_000


def split_file(path: Path, out_dir: Path, part_bytes: int = PART_BYTES) -> List[str]:
    """Cut ``path`` into ``<name>.partNN`` files of at most ``part_bytes`` in ``out_dir``."""
    names = []
    with open(path, "rb") as f:
        for i in range(10_000):
            chunk = f.read(part_bytes)
            if not chunk:
                break
            name = f"{path.name}.part{i:02d}"
            (out_dir / name).write_bytes(chunk)
            names.append(name)
    return names


def join_parts(folder: Path, out_dir: Path) -> Path:
    """Rebuild the checkpoint from its parts in ``folder`` (checked against manifest.json) into
    ``out_dir/checkpoint.pt``; the log and history come along."""
    manifest = json.loads((folder / "manifest.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "checkpoint.pt"
    tmp = target.with_suffix(".joining")
    with open(tmp, "wb") as f:
        for name in manifest["checkpoint_parts"]:
            f.write((folder / name).read_bytes())
    from .export import sha256
    if sha256(tmp) != manifest["checkpoint_sha256"]:
        tmp.unlink()
        raise ValueError(f"the parts in {folder} do not rebuild the checkpoint (sha256 differs)")
    os.replace(tmp, target)
    for extra in ("log.jsonl", "history.json"):
        if (folder / extra).exists():
            shutil.copy(folder / extra, out_dir / extra)
    return target


def pack_compact(data: Path, out: Path) -> Dict[str, int]:
    """The clean references for supervised training, compactly: BSD400 uint8, the Sentinel-1
    temporal means float16 (their relative rounding, 5e-4, is far below any speckle)."""
    import numpy as np
    from .data import BSD_DIR, PACKED_BSD, PACKED_S1, S1_DIR, _read_png, _read_tif
    out.mkdir(parents=True, exist_ok=True)
    bsd = np.stack([_read_png(f) for f in sorted((data / BSD_DIR).glob("*.png"))]).astype(np.uint8)
    s1 = np.stack([_read_tif(f) for f in sorted((data / S1_DIR).glob("*.tif"))]).astype(np.float32)
    np.save(out / PACKED_BSD, bsd)
    np.save(out / PACKED_S1, np.clip(s1, 0, np.finfo(np.float16).max).astype(np.float16))
    (out / "index.json").write_text(json.dumps({"source": str(data), "bsd400": list(bsd.shape),
                                                "s1_temporal_mean": list(s1.shape), "s1_dtype": "float16"}))
    return {p.name: p.stat().st_size for p in out.iterdir()}


def run(config: str, minutes: float, data: Optional[Path], out: Path, resume_parts: Optional[Path] = None,
        batch: Optional[int] = None, workers: Optional[int] = None, stop_after: Optional[int] = None,
        overrides: Optional[List[str]] = None) -> Dict:
    """Train ``config`` for ``minutes`` on CUDA (else CPU) and leave what comes back in ``out``."""
    import torch
    from .config import CONFIG_DIR, load_config
    from .export import sha256
    from .trainer import train
    t0 = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(config)
    if not path.exists():
        path = CONFIG_DIR / f"{config.replace('-', '_')}.yaml"
    values = list(overrides or [])
    if data is not None:
        values.append(f"data.root={data}")  # as given (relative: the CPU reproduction finds it too)
    if device == "cuda":
        values.append(f"batch={batch or 128}")
        values.append(f"workers={workers if workers is not None else max(1, min(8, (os.cpu_count() or 2) - 2))}")
    else:
        if batch:
            values.append(f"batch={batch}")
        if workers is not None:
            values.append(f"workers={workers}")
    cfg = load_config(path, overrides=values)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    resume = False
    if resume_parts is not None:
        join_parts(Path(resume_parts), run_dir)
        resume = True
    summary = train(cfg, run_dir, device=device, resume=resume, max_minutes=minutes, stop_after=stop_after,
                    export=True, overrides=values, evaluate=False)
    ckpt = run_dir / "checkpoint.pt"
    parts = split_file(ckpt, out)
    onnx_src = Path(summary["onnx"]) if summary.get("onnx") else None
    files = {}
    if onnx_src is not None and onnx_src.exists():
        shutil.copy(onnx_src, out / onnx_src.name)
        files["onnx"] = onnx_src.name
    for extra in ("log.jsonl", "history.json"):
        if (run_dir / extra).exists():
            shutil.copy(run_dir / extra, out / extra)
    manifest = {"config": cfg["name"], "device": device, "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                "steps_done": summary["steps_done"], "planned_steps": summary["planned_steps"],
                "val_psnr": summary["val_psnr"], "train_minutes": summary["train_minutes"],
                "checkpoint_parts": parts, "checkpoint_sha256": sha256(ckpt), "files": files,
                "reproduce_on_cpu": summary["reproduce"], "wall_minutes": round((time.time() - t0) / 60, 2)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(run_dir)  # everything that comes back is in ``out`` itself (files under 16 MB)
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.gpu_run", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train for a wall-clock budget (CUDA when available)")
    r.add_argument("--config", required=True)
    r.add_argument("--minutes", type=float, required=True, help="training budget, start-up not included")
    r.add_argument("--data", type=Path, default=None, help="packed references (make gpu-bundle: .devdata)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--resume-parts", type=Path, default=None, help="a folder an earlier run left")
    r.add_argument("--batch", type=int, default=None)
    r.add_argument("--workers", type=int, default=None)
    r.add_argument("--stop-after", type=int, default=None)
    r.add_argument("--set", action="append", metavar="KEY=VALUE")
    j = sub.add_parser("join", help="rebuild a checkpoint from the parts a run left")
    j.add_argument("folder", type=Path)
    j.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("pack", help="pack the clean references compactly for the trip")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path(".devdata"))
    args = ap.parse_args(argv)
    if args.cmd == "run":
        print(json.dumps(run(args.config, args.minutes, args.data, args.out, args.resume_parts, args.batch,
                             args.workers, args.stop_after, args.set), indent=1))
    elif args.cmd == "join":
        print(join_parts(args.folder, args.out))
    else:
        from .data import DEFAULT_DATA
        sizes = pack_compact(args.data or DEFAULT_DATA, args.out)
        print(json.dumps(sizes), f"total {sum(sizes.values()) / 2 ** 20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
