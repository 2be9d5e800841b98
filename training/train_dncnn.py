"""Train a DnCNN despeckler on simulated speckle (supervised), then export it to ONNX.

``python -m training.train_dncnn --device {cpu,cuda} --steps N --batch B --out DIR
[--data PATH] [--seed S] [--bf16] [--max-minutes M] [--no-export]``

Patches follow the plugin's inference contract (see :mod:`training.data`). The learning rate
warms up linearly for ``--warmup`` steps and then follows a cosine decay to ``lr * 0.01`` at
step N. With ``--max-minutes``, N is lowered after the warm-up from the measured speed so that
training ends within the budget; the number of steps actually done is recorded in the
checkpoint (and in the card's ``reproduce`` command), so ``--steps N`` reproduces the run.
Periodic validation: PSNR (amplitude, peak = 99th percentile) on held-out training
references (the last images of each set, never trained on) with fixed simulated speckle.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from torch import nn

from .data import DEFAULT_DATA, PatchSampler, load_references, split_holdout
from .dncnn import DnCNN
from .evaluate import contract_card, despeckle_intensity, psnr_amplitude
from .precision import resolve_bf16
from sar_despeckle_plugin.core.speckle import simulate_intensity

DEFAULTS = dict(depth=17, width=64, batch=128, patch=64, lr=1e-3, looks=1.0, norm_scale=2.0, jitter=0.5,
                loss="l2", s1_weight=0.4, holdout_bsd=8, holdout_s1=4, warmup=200)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.train_dncnn", description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--steps", type=int, default=20000, help="planned number of steps (the lr schedule's length)")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (schedule unchanged)")
    ap.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget for the training loop")
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    ap.add_argument("--patch", type=int, default=DEFAULTS["patch"])
    ap.add_argument("--depth", type=int, default=DEFAULTS["depth"])
    ap.add_argument("--width", type=int, default=DEFAULTS["width"])
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    ap.add_argument("--loss", choices=["l2", "l1"], default=DEFAULTS["loss"])
    ap.add_argument("--looks", type=float, default=DEFAULTS["looks"])
    ap.add_argument("--looks-max", type=float, default=None,
                    help="noise-level-blind training: speckle looks drawn in [looks, looks-max] (debias with --looks)")
    ap.add_argument("--single-look-fraction", type=float, default=0.5,
                    help="with --looks-max: fraction of patches with exactly --looks looks")
    ap.add_argument("--norm-scale", type=float, default=DEFAULTS["norm_scale"])
    ap.add_argument("--jitter", type=float, default=DEFAULTS["jitter"])
    ap.add_argument("--s1-weight", type=float, default=DEFAULTS["s1_weight"],
                    help="probability of drawing a patch from the Sentinel-1 references (rest: BSD400)")
    ap.add_argument("--holdout-bsd", type=int, default=DEFAULTS["holdout_bsd"])
    ap.add_argument("--holdout-s1", type=int, default=DEFAULTS["holdout_s1"])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="shared data root, or a folder packed by `python -m training.data pack`")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU with AMX, or CUDA)")
    ap.add_argument("--workers", type=int, default=None, help="data-loader processes (default: cpu count - 1, <= 12)")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--val-every", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default=None, help="model name (default dncnn-l<looks>-general)")
    ap.add_argument("--no-export", action="store_true")
    return ap.parse_args(argv)


class _Batches(torch.utils.data.IterableDataset):
    def __init__(self, refs, kwargs, seed):
        self.refs, self.kwargs, self.seed = refs, kwargs, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        torch.set_num_threads(1)
        sampler = PatchSampler(self.refs, seed=[self.seed, wid], **self.kwargs)
        for x, y in sampler:
            yield torch.from_numpy(x), torch.from_numpy(y)


def lr_at(step: int, total: int, lr: float, warmup: int, min_ratio: float = 0.01) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from lr to lr * min_ratio at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_validation(held, looks: float, seed: int = 1234, size: int = 128, simulate=None) -> List[tuple]:
    """Fixed noisy versions of centred crops of the held-out references: (name, ref amplitude, noisy intensity).

    ``simulate(ref, rng)`` makes the noisy intensity (default: white ``looks``-look speckle)."""
    simulate = simulate or (lambda ref, rng: simulate_intensity(ref, looks, rng))
    rng = np.random.default_rng(seed)
    out = []
    for refs in held:
        for name, im in zip(refs.names, refs.images):
            h, w = im.shape
            s = min(size, h, w)
            r0, c0 = (h - s) // 2, (w - s) // 2
            ref = im[r0:r0 + s, c0:c0 + s].astype(np.float64)
            out.append((name, np.sqrt(ref), simulate(ref, rng)))
    return out


def validate(model: nn.Module, val, args, device) -> float:
    model.eval()

    def run(x):
        with torch.no_grad():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    card = contract_card(args.looks, args.norm_scale, model.receptive_field)
    scores = [psnr_amplitude(np.sqrt(despeckle_intensity(noisy, card, run)), ref) for _, ref, noisy in val]
    model.train()
    return float(np.mean(scores))


def reproduce_command(args, steps: int, stop_after=None) -> str:
    parts = ["python -m training.train_dncnn --device cpu", f"--steps {steps}"]
    if stop_after is not None and stop_after < steps:
        parts.append(f"--stop-after {stop_after}")
    parts += [f"--batch {args.batch}", f"--patch {args.patch}", f"--depth {args.depth}", f"--width {args.width}",
              f"--lr {args.lr:g}", f"--warmup {args.warmup}", f"--loss {args.loss}", f"--looks {args.looks:g}",
              *([f"--looks-max {args.looks_max:g}", f"--single-look-fraction {args.single_look_fraction:g}"]
                if args.looks_max else []),
              f"--norm-scale {args.norm_scale:g}", f"--jitter {args.jitter:g}", f"--s1-weight {args.s1_weight:g}",
              f"--seed {args.seed}"]
    if args.bf16:
        parts.append("--bf16")
    parts.append("--out runs/dncnn")
    if args.name:
        parts.append(f"--name {args.name}")
    return " ".join(parts)


def save_checkpoint(path: Path, model: nn.Module, config: Dict, history: List[Dict]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
                "config": config, "history": history}, tmp)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> Dict:
    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.bf16, note = resolve_bf16(args.bf16, device)
    if note:
        print(json.dumps({"event": "precision", "bf16": False, "note": note}), flush=True)

    refs = load_references(args.data)
    train_refs, held = split_holdout(refs, [args.holdout_bsd, args.holdout_s1])
    weights = [1.0 - args.s1_weight, args.s1_weight]
    kwargs = dict(patch=args.patch, batch=args.batch, looks=args.looks, norm_scale=args.norm_scale,
                  jitter=args.jitter, set_weights=weights, looks_max=args.looks_max,
                  single_look_fraction=args.single_look_fraction)
    workers = args.workers if args.workers is not None else max(0, min(12, (os.cpu_count() or 1) - 1))
    loader = torch.utils.data.DataLoader(_Batches(train_refs, kwargs, args.seed), batch_size=None,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0,
                                         prefetch_factor=4 if workers > 0 else None)
    val = make_validation(held, args.looks)

    model = DnCNN(args.depth, args.width).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    crit = nn.MSELoss() if args.loss == "l2" else nn.L1Loss()
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16)
    total = int(args.steps)
    stop = min(total, args.stop_after) if args.stop_after else total
    dev_name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine()
    print(json.dumps({"event": "start", "device": dev_name, "torch": torch.__version__, "workers": workers,
                      "train_images": sum(len(r.images) for r in train_refs), "val_images": len(val),
                      "planned_steps": total, "receptive_field": model.receptive_field}), flush=True)

    history, run_loss, n_loss = [], 0.0, 0
    t_loop = time.time()
    t_timing = None
    step = 0
    ckpt_path = args.out / "checkpoint.pt"

    def config(done: int) -> Dict:
        cfg = {k.replace("-", "_"): (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        cfg.update(steps=total, steps_done=done, receptive_field=model.receptive_field,
                   device_name=dev_name, torch_version=torch.__version__,
                   train_minutes=round((time.time() - t_loop) / 60, 2),
                   reproduce=reproduce_command(args, total, done))
        return cfg

    it = iter(loader)
    model.train()
    while step < stop:
        x, y = next(it)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            y = y.contiguous(memory_format=torch.channels_last)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, args.lr, args.warmup)
        with amp:
            out = model(x)
        loss = crit(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run_loss += float(loss.detach()) if step % 10 == 0 or step % args.log_every == 0 else 0.0
        n_loss += 1 if step % 10 == 0 or step % args.log_every == 0 else 0

        if args.max_minutes is not None:
            if step == 20:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t_timing = time.time()
            elif step == max(args.warmup, 120) and t_timing is not None:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                rate = (step - 20) / (time.time() - t_timing)
                remaining = args.max_minutes * 60 - (time.time() - t_loop)
                # keep ~3% + validation/checkpoint time in reserve
                n_val = max(1, total // args.val_every)
                fit = step + int(rate * remaining * 0.95) - n_val * 2
                if fit < total:
                    total = max(step + 1, fit)
                    stop = min(stop, total)
                print(json.dumps({"event": "budget", "steps_per_s": round(rate, 2), "planned_steps": total}),
                      flush=True)
            elif time.time() - t_loop > args.max_minutes * 60:
                print(json.dumps({"event": "time_limit", "step": step}), flush=True)
                break

        if step % args.log_every == 0 or step == stop:
            rec = {"step": step, "loss": round(run_loss / max(1, n_loss), 5), "lr": opt.param_groups[0]["lr"],
                   "elapsed_s": round(time.time() - t_loop, 1),
                   "steps_per_s": round(step / (time.time() - t_loop), 2)}
            run_loss, n_loss = 0.0, 0
            if step % args.val_every == 0 or step == stop:
                rec["val_psnr_heldout"] = round(validate(model, val, args, device), 3)
                save_checkpoint(ckpt_path, model, config(step), history + [rec])
            history.append(rec)
            print(json.dumps(rec), flush=True)

    model.eval()
    cfg = config(step)
    final_val = validate(model, val, args, device)
    history.append({"step": step, "final_val_psnr_heldout": round(final_val, 3)})
    save_checkpoint(ckpt_path, model, cfg, history)
    summary = {"event": "done", "steps_done": step, "planned_steps": total, "train_minutes": cfg["train_minutes"],
               "final_loss": history[-2]["loss"] if len(history) > 1 else None,
               "val_psnr_heldout": round(final_val, 3), "checkpoint": str(ckpt_path),
               "reproduce": cfg["reproduce"], "total_minutes": round((time.time() - t_start) / 60, 2)}
    print(json.dumps(summary), flush=True)
    (args.out / "history.json").write_text(json.dumps(history, indent=1))
    if not args.no_export:
        from .export import export_and_evaluate
        name = args.name
        onnx_path = args.out / f"{(name or 'dncnn_l1_general').replace('-', '_')}.onnx"
        res = export_and_evaluate(model.float().cpu(), cfg, onnx_path, args.data, name=name,
                                  extra_metrics={"psnr_heldout_train_refs": round(final_val, 3)})
        print(json.dumps({"event": "exported", "onnx": res["onnx"], "sha256": res["sha256"],
                          "parity_max_abs": res["parity_max_abs"], "metrics": res["metrics"]}), flush=True)
        summary["onnx"] = res["onnx"]
    return summary


def main(argv=None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
