"""The GPU recipe (training/gpu_run.py) smoke-tested on the CPU: a run sized to a wall-clock budget
on a compact packed dataset, the checkpoint cut into parts that come back and rebuild exactly, the
exported ONNX equal to the checkpoint's network, and a second run resumed from the parts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("yaml")

import yaml  # noqa: E402

from training import gpu_run  # noqa: E402
from training.trainer import load_checkpoint  # noqa: E402

from .test_cli import _tiny_data  # noqa: E402


def _config(tmp_path: Path) -> Path:
    cfg = {"name": "tiny-gpu", "strategy": "supervised", "architecture": {"type": "unet", "levels": 2, "width": 8},
           "data": {"holdout_bsd": 2, "holdout_s1": 1}, "patch": 32, "batch": 4, "steps": 20000, "workers": 0,
           "bf16": False, "log_every": 5, "val_every": 10,
           "optimizer": {"lr": 1e-3, "warmup": 2, "min_lr_ratio": 0.01}}
    path = tmp_path / "tiny_gpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pack_run_split_join_and_resume(tmp_path):
    data = _tiny_data(tmp_path / "shared")
    packed = tmp_path / "devdata"
    sizes = gpu_run.pack_compact(data, packed)
    s1 = np.load(packed / "s1_temporal_mean.npy")
    assert s1.dtype == np.float16 and s1.shape == (6, 72, 72) and set(sizes) >= {"bsd400.npy", "s1_temporal_mean.npy"}
    out = tmp_path / "OUT"
    # a 6-second budget: the schedule of 20000 steps (far more than fit in it on any machine) is shortened to end inside it
    man = gpu_run.run(str(_config(tmp_path)), 0.1, packed, out)
    assert man["device"] in ("cpu", "cuda") and 0 < man["steps_done"] <= man["planned_steps"] < 20000
    assert man["reproduce_on_cpu"].startswith("python -m training train") and "--device cpu" in man["reproduce_on_cpu"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        man["checkpoint_parts"] + ["manifest.json", "log.jsonl", "history.json", man["files"]["onnx"]])
    assert all((out / p).stat().st_size <= gpu_run.PART_BYTES for p in man["checkpoint_parts"])
    assert json.loads((out / "manifest.json").read_text())["checkpoint_sha256"] == man["checkpoint_sha256"]
    # parts cut small rebuild the same bytes
    small = tmp_path / "small"
    small.mkdir()
    rebuilt = gpu_run.join_parts(out, tmp_path / "joined")
    names = gpu_run.split_file(rebuilt, small, part_bytes=10_000)
    assert len(names) > 3 and b"".join((small / n).read_bytes() for n in names) == rebuilt.read_bytes()
    # the exported ONNX is the checkpoint's network
    model, cfg, ckpt = load_checkpoint(rebuilt)
    assert ckpt["step"] == man["steps_done"]
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out / man["files"]["onnx"]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 40)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], expected, rtol=1e-4, atol=1e-5)
    # a run cut short (a lost machine, --stop-after) is resumed on the next one from its parts:
    # the same 20000-step schedule, continued from step 12
    cut = gpu_run.run(str(_config(tmp_path)), 1.0, packed, tmp_path / "CUT", stop_after=12)
    assert cut["steps_done"] == 12 and cut["planned_steps"] == 20000
    man2 = gpu_run.run(str(_config(tmp_path)), 0.05, packed, tmp_path / "OUT2", resume_parts=tmp_path / "CUT")
    assert man2["steps_done"] > 12
    log = [json.loads(x) for x in (tmp_path / "OUT2" / "log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 12} in log
