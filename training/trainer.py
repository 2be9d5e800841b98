"""One training loop for every configuration: strategy x architecture x loss.

``python -m training train --config training/configs/<name>.yaml [--device cuda] [--steps N]
[--out DIR] [--resume] [--max-minutes M] [--set key.sub=value ...]``

* strategies (:mod:`training.strategies`, :mod:`training.data`): ``supervised`` (clean reference +
  simulated speckle, white or spatially correlated), ``pairs`` (two dates of the Sentinel-1 stack,
  input one, target the other, changed areas weighted out) and ``masking`` (single noisy image,
  loss on masked pixels only);
* architectures: DnCNN (:mod:`training.dncnn`) and U-Net (:mod:`training.unet`);
* losses (:mod:`training.losses`): L2, L1, Fisher-Tippett NLL, plus a TV term.

Every batch is (x, t, w): input, target and per-pixel weight in the plugin's normalised
log domain (see :mod:`training.data`). The learning rate warms up linearly then follows a cosine
to ``lr * min_lr_ratio``. Each validation, and every ``checkpoint_minutes`` between them, writes
``checkpoint.pt`` (model, optimiser, step, history); ``--resume`` continues from it exactly: same
schedule, and the batch of step k is drawn from a generator seeded by (seed, k) whatever the
number of workers, so the resumed run sees the batches the uninterrupted run would have. Logs
go to stdout and ``log.jsonl`` as JSON lines. At the
end the model is exported to ONNX with its card (:mod:`training.export`), unless ``--no-export``.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import qat
from .config import config_path_for_command
from .keep import CHECKPOINTS as KEPT, kept_checkpoint
from .data import DEFAULT_DATA, PatchSampler, load_references, split_holdout, stack_position
from .dncnn import DnCNN
from .evaluate import contract_card, despeckle_intensity, psnr_amplitude
from .train_dncnn import lr_at, make_validation  # noqa: F401  (lr_at: the schedule of both loops)
from .losses import Objective
from .precision import resolve_bf16
from .strategies import as_triple

QAT_RANGES = "qat_ranges.json"  # a QAT run with learn_ranges: its ranges, for training quantize --ranges


# ----------------------------------------------------------------------------- building blocks
def data_root(cfg: Dict[str, Any]) -> Path:
    return Path(cfg["data"]["root"]) if cfg["data"].get("root") else DEFAULT_DATA


def build_model(cfg: Dict[str, Any]) -> nn.Module:
    a = cfg["architecture"]
    if a["type"] == "dncnn":
        return DnCNN(int(a["depth"]), int(a["width"]), batch_norm=bool(a["batch_norm"]),
                     residual=bool(a["residual"]), dilation=a.get("dilation") or 1)
    from .unet import UNet
    return UNet(levels=int(a["levels"]), width=int(a["width"]), batch_norm=bool(a["batch_norm"]),
                residual=bool(a["residual"]), convs_per_block=int(a["convs_per_block"]),
                max_width=int(a["max_width"]), bottleneck_blocks=int(a.get("bottleneck_blocks") or 0),
                bottleneck_dilation=int(a.get("bottleneck_dilation") or 1))


def onnx_state_dict(path: str, model: nn.Module) -> Dict[str, "torch.Tensor"]:
    """The weights of an ONNX file exported from ``model``'s architecture, as a state dict.

    torch.onnx.export keeps the parameter names as initializer names; every parameter of the
    model must be there with its shape. An int8 file (``python -m training quantize``: QDQ, weights
    ``NAME_quantized`` with per-channel scales, biases int32) gives its weights dequantised,
    ``(q - zero_point) * scale``, within half a quantisation step of the float32 weights it was made
    from: a bundled int8 model is a starting point for more training even where its float32 file
    is not bundled."""
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(path).graph
    inits = {i.name: i for i in graph.initializer}
    dequant = {n.input[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for key, ref in model.state_dict().items():
        if key in inits:
            arr = numpy_helper.to_array(inits[key])
        elif key + "_quantized" in dequant and key + "_quantized" in inits:
            node = dequant[key + "_quantized"]
            q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            zero = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2
                    else np.zeros_like(scale))
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and q.ndim > 1:  # per channel along `axis`
                shape = [1] * q.ndim
                shape[axis] = scale.size
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            arr = ((q - zero) * scale).astype(np.float32)
        else:
            raise ValueError(f"{path}: no weight '{key}' (not exported from this architecture)")
        if tuple(arr.shape) != tuple(ref.shape) or arr.dtype != np.float32:
            raise ValueError(f"{path}: weight '{key}' is {arr.dtype} {arr.shape}, expected float32 "
                             f"{tuple(ref.shape)}")
        out[key] = torch.from_numpy(arr.copy())
    return out


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Load the weights of ``path`` into ``model`` (same architecture): an ONNX file, by name (int8:
    dequantised, :func:`onnx_state_dict`; a relative path not found here is taken from the
    repository), or a ``checkpoint.pt``. Returns what was loaded, in words (the card's init_from)."""
    if str(path).endswith(".onnx"):
        found = Path(str(path))
        if not found.is_absolute() and not found.exists():  # relative to the repository
            found = Path(__file__).resolve().parents[1] / found
        model.load_state_dict(onnx_state_dict(str(found), model))
        kind = "int8 ONNX weights, dequantised" if "_int8" in found.name else "float32 ONNX weights"
        return f"{Path(str(path)).name} ({kind})"
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    model.load_state_dict(qat.plain_state(ckpt["state_dict"]))  # raises when the architectures differ
    done = int(ckpt.get("step", ckpt["config"].get("steps_done", 0)))
    return f"{ckpt['config'].get('name')} ({done} steps, {ckpt['config'].get('strategy')})"


def build_teacher(cfg: Dict[str, Any], device) -> Optional[Tuple[nn.Module, float, str]]:
    """The frozen teacher of ``cfg['distill']`` (the run's architecture with the distill block's
    architecture keys), its loss weight and a description; None without distillation."""
    distill = cfg.get("distill")
    if not distill:
        return None
    teacher = build_model(dict(cfg, architecture=dict(cfg["architecture"], **(distill.get("architecture") or {}))))
    what = load_weights(teacher, distill["teacher"])
    teacher.eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, float(distill["weight"]), what


def build_objective(cfg: Dict[str, Any]) -> Objective:
    return Objective(cfg["loss"]["kind"], looks=float(cfg["data"]["looks"]),
                     norm_scale=float(cfg["data"]["norm_scale"]), tv_weight=float(cfg["loss"]["tv_weight"]))


def _speckle_kwargs(d: Dict[str, Any]) -> Dict[str, Any]:
    """PatchSampler/MaskSampler keyword arguments for correlated speckle."""
    return {"psf_sigma_max": float(d["psf_sigma_max"]), "correlated_fraction": float(d["correlated_fraction"]),
            "psf_sigma_min": float(d["psf_sigma_min"]), "psf_anisotropic": bool(d["psf_anisotropic"])}


def _content_kwargs(d: Dict[str, Any]) -> Dict[str, Any]:
    """PatchSampler keyword arguments for the SAR-like content augmentations."""
    return {k: float(d[k]) for k in ("contrast_fraction", "contrast_max", "scatterer_fraction", "line_fraction",
                                     "rescale_fraction", "rescale_max", "ratio_fraction")}


def build_sampler(cfg: Dict[str, Any], seed) -> Any:
    """The training sampler of the configuration's strategy (held-out data excluded)."""
    d, root = cfg["data"], data_root(cfg)
    common = dict(patch=int(cfg["patch"]), batch=int(cfg["batch"]), looks=float(d["looks"]),
                  norm_scale=float(d["norm_scale"]), jitter=float(d["jitter"]))
    if cfg["strategy"] == "pairs":
        from .data import load_s1_stacks
        from .strategies import PairSampler
        stacks = [s for s in load_s1_stacks(root, exclude_positions=tuple(d["exclude_positions"]))
                  if stack_position(s[0]) not in set(d["holdout_positions"])]
        return PairSampler(stacks, window=int(d["change_window"]), k=float(d["change_k"]), seed=seed, **common)
    refs = load_references(root)
    train_refs, _ = split_holdout(refs, [int(d["holdout_bsd"]), int(d["holdout_s1"])])
    weights = [1.0 - float(d["s1_weight"]), float(d["s1_weight"])]
    if cfg["strategy"] == "masking":
        from .strategies import MaskSampler
        return MaskSampler(train_refs, mask_fraction=float(d["mask_fraction"]), set_weights=weights, seed=seed,
                           **common, **_speckle_kwargs(d))
    blind = {"looks_max": float(d["looks_max"]), "single_look_fraction": float(d["single_look_fraction"])} \
        if d.get("looks_max") else {}
    share = float(d.get("real_share") or 0.0)
    if share <= 0:
        return PatchSampler(train_refs, set_weights=weights, seed=seed, **common, **blind, **_speckle_kwargs(d),
                            **_content_kwargs(d))
    from .strategies import MixedSampler, RealMaskSampler, load_real_single_look
    real_batch = min(int(cfg["batch"]) - 1, max(1, int(round(int(cfg["batch"]) * share))))
    sim = PatchSampler(train_refs, set_weights=weights, seed=seed, **dict(common, batch=int(cfg["batch"]) - real_batch),
                       **blind, **_speckle_kwargs(d), **_content_kwargs(d))
    real = RealMaskSampler(load_real_single_look(root, "train", float(d["real_holdout"])),
                           mask_fraction=float(d["real_mask_fraction"]), radius=int(d["real_mask_radius"]),
                           seed=list(np.atleast_1d(seed)) + [7], **dict(common, batch=real_batch))
    return MixedSampler(sim, real, share)


def build_validation(cfg: Dict[str, Any], limit: Optional[int] = None, size: int = 128) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """Fixed (name, reference amplitude, noisy intensity) images never trained on.

    pairs: held-out stack positions (one date against the mean of the other dates);
    otherwise: the held-out references with fixed simulated speckle of the model's looks
    (correlated as in training when the configuration uses correlated speckle, PSF std at the
    middle of its range).
    """
    d, root = cfg["data"], data_root(cfg)
    if cfg["strategy"] == "pairs":
        from .data import load_s1_stacks
        from .strategies import make_pair_validation
        stacks = [s for s in load_s1_stacks(root, exclude_positions=tuple(d["exclude_positions"]))
                  if stack_position(s[0]) in set(d["holdout_positions"])]
        val = make_pair_validation(stacks, looks=float(d["looks"]), size=size)
        return val[:limit] if limit else val
    refs = load_references(root)
    _, held = split_holdout(refs, [int(d["holdout_bsd"]), int(d["holdout_s1"])])
    def correlated(ref, rng):
        from .data import correlated_speckle
        return ref * correlated_speckle(ref.shape, max(1, round(float(d["looks"]))),
                                        (float(d["psf_sigma_min"]) + float(d["psf_sigma_max"])) / 2, rng)

    simulate = correlated if float(d.get("correlated_fraction") or 0) > 0 else None
    out = make_validation(held, float(d["looks"]), seed=1234, size=size, simulate=simulate)
    return out[:limit] if limit else out


def validate(model: nn.Module, val, cfg: Dict[str, Any], device) -> float:
    """Mean PSNR (amplitude, peak = 99th percentile) over the validation images, through the
    plugin's own inference pipeline."""
    was_training = model.training
    model.eval()

    def run(x):
        with torch.no_grad():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    rf = int(getattr(model, "receptive_field"))
    card = contract_card(float(cfg["data"]["looks"]), float(cfg["data"]["norm_scale"]), rf)
    scores = [psnr_amplitude(np.sqrt(despeckle_intensity(noisy, card, run)), ref) for _, ref, noisy in val]
    model.train(was_training)
    return float(np.mean(scores))


def reseed(sampler: Any, key: List[int]) -> None:
    """Give every random generator ``sampler`` draws from (its own and its parts', e.g. a
    MixedSampler's two samplers) a fresh one seeded from ``key`` plus its rank; a generator that
    two parts share stays shared."""
    fresh: Dict[int, np.random.Generator] = {}

    def visit(obj: Any, depth: int) -> None:
        for name in sorted(vars(obj)):
            value = getattr(obj, name)
            if isinstance(value, np.random.Generator):
                if id(value) not in fresh:
                    fresh[id(value)] = np.random.default_rng(list(key) + [len(fresh)])
                setattr(obj, name, fresh[id(value)])
            elif depth < 2 and callable(getattr(value, "sample", None)) and hasattr(value, "__dict__"):
                visit(value, depth + 1)

    visit(sampler, 0)


class _Stream(torch.utils.data.IterableDataset):
    """Endless (x, t, w) batches from step ``start`` on. The sampler is built once per worker with
    the run's seed alone, and the batch of step k is drawn after :func:`reseed` from (seed, k):
    the stream is the same whatever the number of workers (each takes every n-th step, which is
    the order the DataLoader reads them in), and a resumed run draws exactly the batches the
    uninterrupted run would have."""

    def __init__(self, cfg: Dict[str, Any], seed: int, start: int):
        self.cfg, self.seed, self.start = cfg, int(seed), int(start)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        sampler = build_sampler(self.cfg, [self.seed])
        for step in itertools.count(self.start + wid, n):
            reseed(sampler, [self.seed, step])
            x, t, w = as_triple(sampler.sample())
            yield torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(np.asarray(w, np.float32))


def reproduce_command(cfg: Dict[str, Any], steps: int, overrides: List[str]) -> str:
    """The CPU command that reproduces a run of ``steps`` steps (the schedule's length)."""
    parts = ["python -m training train", f"--config {config_path_for_command(cfg)}", "--device cpu",
             f"--steps {steps}"]
    parts += [f"--set {o}" for o in overrides]
    return " ".join(parts)


def save_checkpoint(path: Path, model: nn.Module, opt, cfg: Dict[str, Any], history: List[Dict], step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(), "step": step, "config": cfg, "history": history,
                "qat_state": qat.state(model)}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | str) -> Tuple[nn.Module, Dict[str, Any], Dict[str, Any]]:
    """(model in eval mode, its configuration, the raw checkpoint)."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    model = build_model(ckpt["config"])
    model.load_state_dict(qat.plain_state(ckpt["state_dict"]))  # the float network, QAT or not
    return model.eval(), ckpt["config"], ckpt


# ----------------------------------------------------------------------------- the loop
def train(cfg: Dict[str, Any], out: Path, device: str = "cpu", resume: bool = False,
          max_minutes: Optional[float] = None, stop_after: Optional[int] = None, export: bool = True,
          overrides: Optional[List[str]] = None, val_limit: Optional[int] = None,
          evaluate: bool = True, log: Callable[[Dict], None] = None,
          kept_folder: Optional[Path] = KEPT) -> Dict[str, Any]:
    """Train ``cfg`` into ``out``; returns a summary (and exports ``out/<name>.onnx``).
    ``resume`` without ``out/checkpoint.pt`` starts from the run's copy in ``kept_folder``."""
    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides or [])
    log_file = open(out / "log.jsonl", "a")

    def emit(rec: Dict) -> None:
        line = json.dumps(rec)
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()
        if log:
            log(rec)

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked but torch sees no CUDA device")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16, note = resolve_bf16(bool(cfg["bf16"]), dev)
    if note:  # emulated bf16 is ~20 x slower: float32, recorded as such (config, reproduce, card)
        emit({"event": "precision", "bf16": False, "note": note})
        cfg = dict(cfg, bf16=False)
        overrides = [o for o in overrides if not o.replace(" ", "").startswith("bf16=")] + ["bf16=false"]
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    model = build_model(cfg).to(dev)
    objective = build_objective(cfg)
    if cfg.get("init") and not resume:
        prune, widen, deepen = cfg.get("init_prune"), cfg.get("init_widen"), cfg.get("init_deepen")
        # the init file's architecture: the run's, or a wider U-Net pruned into it (init_prune), or
        # a narrower one widened into it (init_widen), or one with fewer bottleneck residual blocks
        # (init_deepen)
        other = prune or widen or deepen
        source = build_model(dict(cfg, architecture=dict(cfg["architecture"], **other))) if other else model
        cfg = dict(cfg, init_from=load_weights(source, cfg["init"]))
        if prune:
            from .prune import prune_unet
            prune_unet(source, model)
            cfg = dict(cfg, init_from=f"{cfg['init_from']}, channels pruned from {source.describe()}")
        elif widen:
            from .prune import widen_unet
            widen_unet(source, model)
            cfg = dict(cfg, init_from=f"{cfg['init_from']}, widened (same function) from {source.describe()}")
        elif deepen:
            from .prune import deepen_unet
            deepen_unet(source, model)
            cfg = dict(cfg, init_from=f"{cfg['init_from']}, deepened (same function) from {source.describe()}")
    if cfg.get("qat"):  # after the init weights: the modules keep their names
        qat.attach(model, reduce_range=bool(cfg["qat"].get("reduce_range", False)),
                   momentum=float(cfg["qat"].get("momentum", 0.01)),
                   learn_ranges=bool(cfg["qat"].get("learn_ranges", False)))
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["optimizer"]["lr"]))  # after QAT: its learned ranges
    teacher, distill_weight = None, 0.0
    built = build_teacher(cfg, dev)
    if built is not None:
        teacher, distill_weight, what = built
        cfg = dict(cfg, distilled_from=what)
    ckpt_path = out / "checkpoint.pt"
    history: List[Dict] = []
    step, minutes_before = 0, 0.0
    if resume:
        if not ckpt_path.exists():  # a new machine: the copy kept in the repository (training/keep.py)
            copy = kept_checkpoint(str(cfg["name"]), kept_folder) if kept_folder is not None else None
            if copy is None:
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}, and none kept for "
                                        f"{cfg['name']} in {kept_folder}")
            shutil.copyfile(copy, ckpt_path)
            emit({"event": "resume_from_kept", "file": str(copy)})
        ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["state_dict"])
        if cfg.get("qat"):
            qat.load_state(model, ckpt.get("qat_state"))
        opt.load_state_dict(ckpt["optimizer"])
        step, history = int(ckpt["step"]), list(ckpt["history"])
        minutes_before = float(ckpt["config"].get("train_minutes", 0.0))
        if ckpt["config"].get("init_from"):
            cfg = dict(cfg, init_from=ckpt["config"]["init_from"])
        emit({"event": "resume", "step": step})

    # a resumed run keeps the schedule it was on (possibly shortened by a --max-minutes budget)
    total = int(ckpt["config"]["steps"]) if resume else int(cfg["steps"])
    stop = min(total, stop_after) if stop_after else total
    workers = int(cfg["workers"])
    loader = torch.utils.data.DataLoader(_Stream(cfg, seed, step), batch_size=None, num_workers=workers,
                                         pin_memory=dev.type == "cuda", persistent_workers=workers > 0,
                                         prefetch_factor=4 if workers > 0 else None)
    val = build_validation(cfg, limit=val_limit)
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_bf16)
    dev_name = torch.cuda.get_device_name(0) if dev.type == "cuda" else (platform.processor() or platform.machine())
    rf = int(model.receptive_field)
    emit({"event": "start", "name": cfg["name"], "strategy": cfg["strategy"], "device": dev_name,
          "torch": torch.__version__, "workers": workers, "val_images": len(val), "planned_steps": total,
          "receptive_field": rf, "loss": objective.describe(),
          "parameters": int(sum(p.numel() for p in model.parameters()))})
    o = cfg["optimizer"]
    t_loop, done_at_start, t_timing, step_timing = time.time(), step, time.time(), step
    t_saved = time.time()
    run_loss, n_loss = 0.0, 0

    def resolved(done: int) -> Dict[str, Any]:
        c = dict(cfg)
        c.update(steps=total, steps_done=done, receptive_field=rf, device_name=dev_name,
                 torch_version=torch.__version__,
                 train_minutes=round((time.time() - t_loop) / 60 + minutes_before, 2),
                 reproduce=reproduce_command(cfg, total, overrides))
        return c

    it = iter(loader)
    model.train()
    while step < stop:
        x, t, w = (v.to(dev, non_blocking=True) for v in next(it))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, float(o["lr"]), int(o["warmup"]), float(o["min_lr_ratio"]))
        with amp:
            pred = model(x)
            if teacher is not None:
                with torch.no_grad():
                    taught = teacher(x).float()
        loss = objective(pred.float(), t, w)
        if teacher is not None:
            loss = (1.0 - distill_weight) * loss + distill_weight * objective(pred.float(), taught, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run_loss += float(loss.detach())
        n_loss += 1
        if max_minutes is not None:
            # after a short timing window, shorten the schedule so that it completes in the budget
            # (re-measured every 200 steps: the schedule only shrinks, when the machine gets slower)
            if step == done_at_start + 10:
                t_timing, step_timing = time.time(), step
            elif step == done_at_start + 40 or (step > done_at_start + 40 and (step - done_at_start) % 200 == 0):
                rate = (step - step_timing) / max(time.time() - t_timing, 1e-9)
                remaining = max_minutes * 60 - (time.time() - t_loop)
                fit = step + int(rate * remaining * 0.93)
                if fit < total:
                    total = max(step + 1, fit)
                    stop = min(stop, total)
                    emit({"event": "budget", "steps_per_s": round(rate, 3), "planned_steps": total})
                t_timing, step_timing = time.time(), step
            elif time.time() - t_loop > max_minutes * 60:
                emit({"event": "time_limit", "step": step})
                stop = step
        if step % int(cfg["log_every"]) == 0 or step == stop:
            el = time.time() - t_loop
            rec = {"step": step, "loss": round(run_loss / max(1, n_loss), 5), "lr": opt.param_groups[0]["lr"],
                   "elapsed_s": round(el, 1), "steps_per_s": round((step - done_at_start) / max(el, 1e-9), 3)}
            run_loss, n_loss = 0.0, 0
            if step % int(cfg["val_every"]) == 0 or step == stop:
                rec["val_psnr"] = round(validate(model, val, cfg, dev), 3)
                save_checkpoint(ckpt_path, model, opt, resolved(step), history + [rec], step)
                t_saved = time.time()
            history.append(rec)
            emit(rec)
        if time.time() - t_saved > 60 * float(cfg["checkpoint_minutes"]) and step < stop:
            # between validations too: a lost machine costs at most this many minutes of training
            save_checkpoint(ckpt_path, model, opt, resolved(step), history, step)
            t_saved = time.time()

    model.eval()
    cfg_done = resolved(step)
    final_val = validate(model, val, cfg, dev)
    history.append({"step": step, "final_val_psnr": round(final_val, 3)})
    save_checkpoint(ckpt_path, model, opt, cfg_done, history, step)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {"event": "done", "steps_done": step, "planned_steps": total, "train_minutes": cfg_done["train_minutes"],
               "val_psnr": round(final_val, 3), "checkpoint": str(ckpt_path), "reproduce": cfg_done["reproduce"],
               "total_minutes": round((time.time() - t_start) / 60, 2)}
    emit(summary)
    if export:
        from .export import export_config_model
        if (cfg.get("qat") or {}).get("learn_ranges"):  # for python -m training quantize --ranges
            (out / QAT_RANGES).write_text(json.dumps(qat.learned_ranges(model), indent=1))
        qat.detach(model)  # the float32 network; python -m training quantize makes the int8 file
        onnx_path = out / f"{cfg['name'].replace('-', '_')}.onnx"
        res = export_config_model(model.float().cpu(), cfg_done, onnx_path, data_root(cfg), evaluate=evaluate,
                                  extra_metrics={"val_psnr_heldout": round(final_val, 3)})
        emit({"event": "exported", "onnx": res["onnx"], "sha256": res["sha256"],
              "parity_max_abs": res["parity_max_abs"]})
        summary["onnx"] = res["onnx"]
        summary["metrics"] = res["metrics"]
    log_file.close()
    return summary
