"""``python -m training {train,export,evaluate,smoke}``: the training package's command line.

* ``train --config FILE.yaml [--device cpu|cuda] [--steps N] [--out DIR] [--resume]
  [--max-minutes M] [--stop-after N] [--set key.sub=value ...] [--no-export]``
* ``export CHECKPOINT.pt --out MODEL.onnx [--data PATH] [--no-eval]``: ONNX + card + metrics
  (checkpoints of ``train`` and of the older ``training.train_dncnn``);
* ``evaluate MODEL.onnx [--data PATH] [--json OUT]``: PSNR on the TerraSAR-X validation pairs,
  simulated multi-look inputs and the held-out real Sentinel-1 stack positions;
* ``quantize MODEL.onnx --out MODEL_int8.onnx``: int8 post-training quantisation
  (:mod:`training.quantize`);
* ``half MODEL.onnx --out MODEL_fp16.onnx``: the float16 twin of a float32 file, for GPUs
  with tensor cores (:mod:`training.half`);
* ``card MODEL.onnx [--set key=value ...]``: print a file's model card, or change keys of it
  (e.g. the Auto-choice keys ``auto_looks``, ``auto_correlation``, ``auto_priority``,
  ``sensor_family`` of files trained before those keys existed); the card is checked before
  the file is rewritten;
* ``keep RUN_DIR`` / ``keep --prune`` / ``keep --list``: keep an unfinished run's checkpoint in
  ``checkpoints/`` (committed, within a size budget) so that ``train --resume`` continues it on
  another machine; remove the copies of runs that finished (:mod:`training.keep`);
* ``smoke [--config ...] [--out DIR]``: every configuration (or the given ones) for 3 steps on
  small batches, exported without evaluation (``make models-smoke``; the tests run it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .config import CONFIG_DIR, load_config

SMOKE = ["steps=3", "batch=4", "patch=32", "workers=0", "log_every=1", "val_every=1000", "bf16=false",
         "optimizer.warmup=1"]


def _train(args) -> int:
    from .trainer import train
    overrides: List[str] = list(args.set or [])
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    cfg = load_config(args.config, overrides)
    out = args.out or Path("runs") / cfg["name"]
    # the reproduce command writes --steps itself; it repeats the --set overrides
    summary = train(cfg, out, device=args.device, resume=args.resume, max_minutes=args.max_minutes,
                    stop_after=args.stop_after, export=not args.no_export, overrides=list(args.set or []),
                    val_limit=args.val_limit, evaluate=not args.no_eval)
    return 0 if summary.get("steps_done", 0) > 0 else 1


def _export(args) -> int:
    import torch
    ckpt = torch.load(str(args.checkpoint), map_location="cpu", weights_only=False)
    history = ckpt.get("history", [])
    if "strategy" in ckpt["config"]:
        from .export import export_config_model
        from .trainer import data_root, load_checkpoint
        model, cfg, _ = load_checkpoint(args.checkpoint)
        extra = {}
        if history and "final_val_psnr" in history[-1]:
            extra["val_psnr_heldout"] = history[-1]["final_val_psnr"]
        res = export_config_model(model, cfg, args.out, args.data or data_root(cfg), evaluate=not args.no_eval,
                                  extra_metrics=extra)
        named = (ckpt.get("qat_state") or {}).get("named")
        if named:  # a QAT run with learned ranges: they go beside the export, for training quantize --ranges
            from .trainer import QAT_RANGES
            res["ranges"] = str(Path(args.out).parent / QAT_RANGES)
            Path(res["ranges"]).write_text(json.dumps(named, indent=1))
    else:  # a training.train_dncnn checkpoint
        from .export import main as old_main
        argv = [str(args.checkpoint), "--out", str(args.out)] + (["--data", str(args.data)] if args.data else [])
        return old_main(argv + (["--no-eval"] if args.no_eval else []))
    print(json.dumps({k: res[k] for k in ("onnx", "sha256", "parity_max_abs", "metrics", "ranges") if k in res},
                     indent=1))
    return 0


def _evaluate(args) -> int:
    from .evaluate import main as eval_main
    argv = [str(args.model)] + (["--data", str(args.data)] if args.data else []) + \
        (["--json", str(args.json)] if args.json else [])
    return eval_main(argv)


def _card(args) -> int:
    from sar_despeckle_plugin.core.model_card import ModelCard
    from sar_despeckle_plugin.core.model_choice import AutoFit
    from .export import write_card
    from .quantize import read_card
    card = read_card(args.model)
    if args.set:
        meta = card.to_metadata()
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
            meta[key.strip()] = value
        card = ModelCard.from_metadata(meta)   # raises on a bad value
        AutoFit.of(card)                       # the Auto keys parse
        write_card(args.model, card)
    print(json.dumps(card.to_metadata(), indent=1, ensure_ascii=False))
    return 0


def _smoke(args) -> int:
    from .trainer import train
    configs = args.config or sorted(str(p) for p in CONFIG_DIR.glob("*.yaml"))
    out_root = args.out or Path("runs/smoke")
    # fine-tuning configurations start from another configuration's checkpoint: run those first
    # and point them at the smoke run of the configuration they start from
    loaded = [(c, load_config(c, SMOKE)) for c in configs]
    loaded.sort(key=lambda item: bool(item[1].get("init")))
    results = {}
    for c, cfg in loaded:
        overrides = list(SMOKE)
        if cfg.get("init") and not str(cfg["init"]).endswith(".onnx"):  # a bundled .onnx file is there already
            overrides.append(f"init={out_root / Path(cfg['init']).parent.name / 'checkpoint.pt'}")
            cfg = load_config(c, overrides)
        summary = train(cfg, out_root / cfg["name"], device="cpu", overrides=overrides, val_limit=2, evaluate=False)
        results[cfg["name"]] = {"steps_done": summary["steps_done"], "onnx": summary.get("onnx")}
    print(json.dumps({"event": "smoke_done", "results": results}))
    return 0 if all(r["steps_done"] == 3 and r["onnx"] for r in results.values()) else 1


def _keep(args) -> int:
    from .keep import KeepError, keep, kept, prune
    if args.prune or args.list or args.run is None:
        for f in (prune() if args.prune else []):
            print(json.dumps({"event": "pruned", "file": f}))
        for k in kept():
            print(json.dumps(k))
        return 0
    try:
        dst = keep(args.run)
    except KeepError as err:
        print(f"keep: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "kept", "file": str(dst)}))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["quantize"]:
        from .quantize import main as quantize_main
        return quantize_main(argv[1:])
    if argv[:1] == ["dequantize"]:
        from .dequantize import main as dequantize_main
        return dequantize_main(argv[1:])
    if argv[:1] == ["half"]:
        from .half import main as half_main
        return half_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a configuration (and export it)")
    t.add_argument("--config", required=True, help="YAML file, or a name in training/configs")
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    t.add_argument("--steps", type=int, default=None, help="schedule length (overrides the file's steps)")
    t.add_argument("--out", type=Path, default=None, help="run folder (default runs/<name>)")
    t.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    t.add_argument("--max-minutes", type=float, default=None,
                   help="fit the schedule into this wall-clock budget (measured after 40 steps)")
    t.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (schedule unchanged)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a configuration value")
    t.add_argument("--val-limit", type=int, default=None, help="validate on the first N held-out images only")
    t.add_argument("--no-export", action="store_true")
    t.add_argument("--no-eval", action="store_true", help="export without measuring the card's metrics")
    k = sub.add_parser("keep", help="keep an unfinished run's checkpoint in checkpoints/ for another machine")
    k.add_argument("run", type=Path, nargs="?", help="run folder (runs/NAME)")
    k.add_argument("--prune", action="store_true", help="remove the kept copies of finished runs")
    k.add_argument("--list", action="store_true", help="list the kept checkpoints")
    e = sub.add_parser("export", help="export a checkpoint to ONNX with its model card")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--data", type=Path, default=None)
    e.add_argument("--no-eval", action="store_true")
    v = sub.add_parser("evaluate", help="validation metrics of an ONNX despeckler")
    v.add_argument("model", type=Path)
    v.add_argument("--data", type=Path, default=None)
    v.add_argument("--json", type=Path, default=None)
    sub.add_parser("quantize", help="int8 post-training quantisation (see python -m training quantize -h)")
    sub.add_parser("dequantize", help="float32 copy of an int8 file, for GPUs (see python -m training dequantize -h)")
    sub.add_parser("half", help="float16 twin of a float32 file, for GPUs (see python -m training half -h)")
    c = sub.add_parser("card", help="print a model card, or change keys of it (--set key=value)")
    c.add_argument("model", type=Path)
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    s = sub.add_parser("smoke", help="every configuration for 3 steps (make models-smoke)")
    s.add_argument("--config", action="append", default=None)
    s.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    return {"train": _train, "export": _export, "evaluate": _evaluate, "smoke": _smoke,
            "card": _card, "keep": _keep}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
