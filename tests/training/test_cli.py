"""The configuration files, the ``python -m training`` command line and the generic trainer
(train, resume, export with card) on a tiny synthetic data folder, plus the smoke run of every
configuration on the shared data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("yaml")

from sar_despeckle_plugin.core.model_card import ModelCard  # noqa: E402
from training import cli  # noqa: E402
from training.config import CONFIG_DIR, ConfigError, load_config  # noqa: E402
from training.evaluate import contract_card, despeckle_intensity, onnx_runner  # noqa: E402
from training.trainer import build_model, load_checkpoint, lr_at, train  # noqa: E402

REPO = Path(__file__).parents[2]
DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"{DATA} not found")
MODELS = REPO / "sar_despeckle_plugin" / "models"


def _model_configs():
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")  # join continued lines
    m = re.search(r"^MODEL_CONFIGS :=(.*)$", text, re.M)
    return m.group(1).split()


def test_every_configuration_loads_and_is_named_after_its_file():
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        cfg = load_config(f)
        assert f.stem == cfg["name"].replace("-", "_"), (f, cfg["name"])
        assert cfg["strategy"] in ("supervised", "pairs", "masking")
        model = build_model(cfg)
        assert model.receptive_field >= 3


def test_make_models_trains_every_bundled_model_in_order():
    manifest = json.loads((MODELS / "models.json").read_text())
    # the despecklers (MODEL enum) and the time series' ratio and super-image networks
    listed = {m["name"]: m["file"] for kind in ("models", "ratio_models", "super_models") for m in manifest[kind]
              if "file" in m}
    stems = _model_configs()
    names = [load_config(CONFIG_DIR / f"{s}.yaml")["name"] for s in stems]
    for i, stem in enumerate(stems):
        cfg = load_config(CONFIG_DIR / f"{stem}.yaml")
        if str(cfg.get("init") or "").endswith(".onnx"):
            init = Path(cfg["init"])
            if init.parent == Path("checkpoints"):  # the committed export of a configuration's run, not bundled
                assert (REPO / init).is_file() and (CONFIG_DIR / f"{init.stem}.yaml").is_file(), stem
            else:  # fine-tuned from a bundled file
                assert (MODELS / init.name).is_file() and init.parent == Path("sar_despeckle_plugin/models"), stem
        elif cfg.get("init"):  # a fine-tuning starts from a configuration trained before it
            assert Path(cfg["init"]).parent.name in names[:i], stem
        stem_file = cfg["name"].replace("-", "_")
        # bundled as trained, or as its int8 quantisation (python -m training quantize)
        assert (listed.get(cfg["name"]) == stem_file + ".onnx"
                or listed.get(cfg["name"] + "-int8") == stem_file + "_int8.onnx"), f"{stem} not bundled"
    # every bundled model comes from a configuration of make models (int8: from its float model;
    # -fp32: the int8 file's weights dequantised, python -m training dequantize)
    for name, file in listed.items():
        if name.endswith("-fp32"):
            assert listed.get(name.removesuffix("-fp32") + "-int8"), f"{file}: its int8 file is not bundled"
        assert name.removesuffix("-fp32").removesuffix("-int8") in names, f"{file} has no configuration in make models"
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    for name, file in listed.items():
        if name.endswith("-fp32"):
            assert f"--out runs/{name.removesuffix('-fp32')}/{file}" in makefile, f"make models does not make {file}"
    # and every strategy has a configuration
    strategies = {load_config(f)["strategy"] for f in CONFIG_DIR.glob("*.yaml")}
    assert strategies == {"supervised", "pairs", "masking"}


def test_overrides_types_and_errors():
    cfg = load_config("unet_l1_fast", ["data.looks=4.4", "architecture.width=16", "bf16=false", "steps=7"])
    assert cfg["data"]["looks"] == 4.4 and cfg["architecture"]["width"] == 16
    assert cfg["bf16"] is False and cfg["steps"] == 7
    assert cfg["architecture"]["levels"] == 3  # untouched sibling keys keep the file's value
    with pytest.raises(ConfigError, match="unknown configuration key 'data.lookz'"):
        load_config("unet_l1_fast", ["data.lookz=2"])
    with pytest.raises(ConfigError, match="noisy target"):
        load_config("unet_l1_fast", ["loss.kind=nll"])
    with pytest.raises(ConfigError, match="strategy"):
        load_config("unet_l1_fast", ["strategy=magic"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config")


def test_lr_schedule_warmup_and_cosine_end():
    assert lr_at(0, 100, 1e-3, 10) == pytest.approx(1e-4)
    assert lr_at(9, 100, 1e-3, 10) == pytest.approx(1e-3)
    assert lr_at(10, 100, 1e-3, 10) == pytest.approx(1e-3)
    assert lr_at(55, 100, 1e-3, 10, 0.01) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert lr_at(100, 100, 1e-3, 10, 0.01) == pytest.approx(1e-5)


# ----------------------------------------------------------------------------- a tiny data folder
def _tiny_data(root: Path) -> Path:
    """BSD-like PNGs and S1-like temporal-mean GeoTIFFs with piecewise-constant content."""
    from osgeo import gdal
    from PIL import Image
    rng = np.random.default_rng(3)
    bsd = root / "train/natural_gray_bsd400"
    s1 = root / "train/s1_grd_temporal_mean/tif"
    bsd.mkdir(parents=True)
    s1.mkdir(parents=True)
    for i in range(10):
        im = np.full((72, 72), 60, np.uint8)
        for _ in range(5):
            r, c = rng.integers(0, 50, 2)
            im[r:r + 20, c:c + 20] = rng.integers(20, 250)
        Image.fromarray(im).save(bsd / f"{i:03d}.png")
    drv = gdal.GetDriverByName("GTiff")
    for i in range(6):
        im = np.full((72, 72), 0.05, np.float32)
        im[10:40, 20:60] = 0.5
        im *= np.float32(10 ** rng.uniform(-0.5, 0.5))
        ds = drv.Create(str(s1 / f"s1_{i}.tif"), 72, 72, 1, gdal.GDT_Float32)
        ds.GetRasterBand(1).WriteArray(im)
        ds = None
    return root


def _tiny_config(root: Path, **values):
    base = {"name": "tiny-unet", "strategy": "supervised",
            "architecture": {"type": "unet", "levels": 2, "width": 8},
            "data": {"root": str(root), "holdout_bsd": 2, "holdout_s1": 1},
            "patch": 32, "batch": 4, "steps": 6, "workers": 0, "bf16": False, "log_every": 1, "val_every": 3,
            "optimizer": {"lr": 1e-3, "warmup": 2, "min_lr_ratio": 0.01}}
    base.update(values)
    return load_config(None, values=base)


def test_a_resumed_run_equals_the_uninterrupted_run_whatever_the_workers(tmp_path):
    """Issue 15 item 3: a run stopped at step 3 (a lost machine) and resumed ends with the very
    weights and optimiser state of the run that never stopped: same batches (step k's batch is
    drawn from (seed, k)), same lr schedule, same Adam moments; the batches do not depend on the
    number of DataLoader workers either."""
    from training.trainer import _Stream
    root = _tiny_data(tmp_path / "data")
    cfg = _tiny_config(root, val_every=100)
    straight = train(cfg, tmp_path / "straight", export=False)
    cut = train(cfg, tmp_path / "cut", stop_after=3, export=False)
    assert (straight["steps_done"], cut["steps_done"]) == (6, 3)
    resumed = train(cfg, tmp_path / "cut", resume=True, export=False)
    assert resumed["steps_done"] == 6
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for i, st in a["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], b["optimizer"]["state"][i]["exp_avg"]), i
    assert [h["loss"] for h in a["history"] if "loss" in h] == [h["loss"] for h in b["history"] if "loss" in h]
    # the batch stream: from step 2 on, alone or split over 2 workers, equals the whole stream's tail
    whole = list(zip(range(5), iter(_Stream(cfg, 0, 0))))
    tail = list(zip(range(3), iter(_Stream(cfg, 0, 2))))
    loader = torch.utils.data.DataLoader(_Stream(cfg, 0, 2), batch_size=None, num_workers=2)
    split = list(zip(range(3), iter(loader)))
    for (_, w), (_, t), (_, s2) in zip(whole[2:], tail, split):
        for u, v, z in zip(w, t, s2):
            assert torch.equal(u, v) and torch.equal(u, z)
    assert not torch.equal(whole[0][1][0], whole[1][1][0])


def test_a_kept_checkpoint_lets_another_machine_resume_the_run(tmp_path):
    """keep copies an unfinished run's checkpoint into the kept folder; train --resume on a
    machine without the run folder starts from it and ends where the uninterrupted run ends;
    finished runs and runs beyond the size budget are refused, and prune removes finished runs'
    copies."""
    from training.keep import KeepError, keep, kept, prune
    root = _tiny_data(tmp_path / "data")
    cfg = _tiny_config(root, val_every=100)
    folder = tmp_path / "checkpoints"
    train(cfg, tmp_path / "here", stop_after=4, export=False, kept_folder=folder)
    dst = keep(tmp_path / "here", folder)
    assert dst == folder / "tiny-unet.pt" and [(k["step"], k["finished"]) for k in kept(folder)] == [(4, False)]
    with pytest.raises(KeepError, match="budget"):
        keep(tmp_path / "here", tmp_path / "small", budget_mb=0.001)
    assert not list((tmp_path / "small").glob("*.pt"))
    with pytest.raises(FileNotFoundError, match="none kept"):
        train(cfg, tmp_path / "elsewhere", resume=True, export=False, kept_folder=tmp_path / "none")
    done = train(cfg, tmp_path / "elsewhere", resume=True, export=False, kept_folder=folder)
    straight = train(cfg, tmp_path / "straight", export=False, kept_folder=None)
    assert done["steps_done"] == straight["steps_done"] == 6
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "elsewhere" / "checkpoint.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    with pytest.raises(KeepError, match="has finished"):
        keep(tmp_path / "elsewhere", folder)
    assert prune(tmp_path, folder) == [] and len(kept(folder)) == 1  # no finished run of that name here
    (tmp_path / "tiny-unet").mkdir()
    (tmp_path / "tiny-unet" / "checkpoint.pt").write_bytes((tmp_path / "elsewhere" / "checkpoint.pt").read_bytes())
    assert prune(tmp_path, folder) == [str(folder / "tiny-unet.pt")] and kept(folder) == []


def test_kept_checkpoints_in_the_repository_are_unfinished_runs_within_the_budget():
    from training.keep import BUDGET_MB, CHECKPOINTS, kept
    files = kept(CHECKPOINTS)
    assert sum(k["mb"] for k in files) <= BUDGET_MB
    for k in files:
        assert not k["finished"], k
        cfg = load_config(CONFIG_DIR / f"{k['name'].replace('-', '_')}.yaml")
        model = build_model(cfg)
        model.load_state_dict(torch.load(k["file"], map_location="cpu", weights_only=False)["state_dict"])


def test_checkpoints_are_written_between_validations_every_few_minutes(tmp_path):
    root = _tiny_data(tmp_path / "data")
    cfg = _tiny_config(root, val_every=100, checkpoint_minutes=0)  # 0: after every step
    saved = []
    import training.trainer as trainer
    real = trainer.save_checkpoint

    def spy(path, model, opt, c, history, step):
        saved.append(step)
        real(path, model, opt, c, history, step)
    trainer.save_checkpoint = spy
    try:
        train(cfg, tmp_path / "run", stop_after=4, export=False)
    finally:
        trainer.save_checkpoint = real
    assert saved[:3] == [1, 2, 3] and saved[-1] == 4
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 4 and [h["step"] for h in ckpt["history"] if "loss" in h] == [1, 2, 3, 4]


def test_train_stop_resume_export(tmp_path):
    root = _tiny_data(tmp_path / "data")
    cfg = _tiny_config(root)
    out = tmp_path / "run"
    first = train(cfg, out, stop_after=3, export=False)
    assert first["steps_done"] == 3
    model3, _, ckpt3 = load_checkpoint(out / "checkpoint.pt")
    assert ckpt3["step"] == 3 and "optimizer" in ckpt3
    # resuming with nothing left to do keeps the weights exactly
    again = train(cfg, out, resume=True, stop_after=3, export=False)
    assert again["steps_done"] == 3
    same, _, _ = load_checkpoint(out / "checkpoint.pt")
    for k, v in model3.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k
    # resuming continues the same schedule (6 steps) from step 3
    done = train(cfg, out, resume=True, export=True, evaluate=False)
    assert done["steps_done"] == 6
    model6, cfg6, ckpt6 = load_checkpoint(out / "checkpoint.pt")
    assert ckpt6["step"] == 6 and cfg6["steps"] == 6
    steps = [h["step"] for h in ckpt6["history"] if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert ckpt6["optimizer"]["state"][0]["step"].item() == 6  # Adam kept its moments across the resume
    changed = max(float((v - model3.state_dict()[k]).abs().max()) for k, v in model6.state_dict().items())
    assert changed > 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log if r.get("event") == "resume"] == ["resume", "resume"]
    # the exported file: card, receptive field, and the same output as torch through the pipeline
    onnx_path = Path(done["onnx"])
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    card = ModelCard.from_metadata(meta)
    assert card.name == "tiny-unet" and card.looks == 1.0 and card.norm_scale == 2.0
    assert card.receptive_field == model6.receptive_field
    assert "supervised" in card.training_strategy and "6 Adam steps" in card.training_strategy
    assert card.reproduce.startswith("python -m training train --config") and "--steps 6" in card.reproduce
    noisy = np.random.default_rng(0).gamma(1.0, 1.0, (45, 61)) * 3.0

    def run_torch(x):
        with torch.no_grad():
            return model6(torch.from_numpy(x)).numpy()

    a = despeckle_intensity(noisy, card, onnx_runner(onnx_path))
    b = despeckle_intensity(noisy, contract_card(1.0, 2.0, model6.receptive_field), run_torch)
    np.testing.assert_allclose(a, b, rtol=1e-4)


def test_cli_train_with_overrides_writes_reproduce_command(tmp_path, monkeypatch):
    root = _tiny_data(tmp_path / "data")
    cfgfile = tmp_path / "tiny.yaml"
    import yaml
    cfgfile.write_text(yaml.safe_dump(
        {"name": "tiny-dncnn", "architecture": {"type": "dncnn", "depth": 3, "width": 8},
         "data": {"root": str(root), "holdout_bsd": 2, "holdout_s1": 1}, "patch": 24, "batch": 2,
         "steps": 2, "workers": 0, "bf16": False, "log_every": 1, "val_every": 100,
         "optimizer": {"warmup": 1}}))
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(cfgfile), "--out", str(out), "--steps", "3",
                     "--set", "loss.kind=l1", "--no-eval"]) == 0
    _, cfg, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert cfg["loss"]["kind"] == "l1" and ckpt["step"] == 3
    assert cfg["reproduce"].endswith("--device cpu --steps 3 --set loss.kind=l1")
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(out / "tiny_dncnn.onnx")).metadata_props}
    assert "L1" in meta["training_strategy"] and json.loads(meta["metrics"])["parity_max_abs"] <= 1e-4


@needs_data
def test_smoke_every_configuration(tmp_path):
    """``make models-smoke``: every configuration trains 3 steps on the real data and exports."""
    assert cli.main(["smoke", "--out", str(tmp_path)]) == 0
    for f in CONFIG_DIR.glob("*.yaml"):
        cfg = load_config(f)
        onnx_path = tmp_path / cfg["name"] / f"{cfg['name'].replace('-', '_')}.onnx"
        import onnx
        meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
        card = ModelCard.from_metadata(meta)
        assert card.looks == float(cfg["data"]["looks"])
        expected = {"supervised": "supervised: clean references", "pairs": "self-supervised pairs",
                    "masking": "single-image self-supervision"}[cfg["strategy"]]
        assert expected in card.training_strategy, (cfg["name"], card.training_strategy)
        if str(cfg.get("init") or "").endswith(".onnx"):  # the bundled file's weights, as in the real run
            kind = "int8" if "_int8" in cfg["init"] else "float32"
            assert card.training_strategy.startswith(f"fine-tuned from {Path(cfg['init']).name} ({kind} ONNX")
        elif cfg.get("init"):  # the smoke run fine-tunes the smoke checkpoint of the configuration it names
            assert card.training_strategy.startswith(f"fine-tuned from {Path(cfg['init']).parent.name} (3 steps")


def test_init_from_a_bundled_float32_onnx_gives_its_network():
    """init: a .onnx file loads its weights by name: the torch model then computes what the file does."""
    from training.trainer import onnx_state_dict
    cfg = load_config("unet_l1_correlated_long")
    model = build_model(cfg).eval()
    model.load_state_dict(onnx_state_dict(str(MODELS / "unet_l1_long.onnx"), model))
    x = np.random.default_rng(0).normal(size=(1, 1, 64, 72)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, onnx_runner(MODELS / "unet_l1_long.onnx")(x), atol=1e-4)
    with pytest.raises(ValueError, match="no weight 'down.0.0.weight'"):
        onnx_state_dict(str(MODELS / "dncnn_l1_general.onnx"), model)


def test_init_from_a_bundled_int8_onnx_dequantises_its_weights():
    """An int8 file gives its weights dequantised: within half a quantisation step of the float32
    weights it was quantised from, and a network that computes what the int8 file does up to the
    quantisation of its activations (far closer than the float32 network's distance to noise)."""
    import onnx
    from onnx import numpy_helper
    from training.trainer import onnx_state_dict
    model = build_model(load_config("unet_l1_long")).eval()
    float_w = onnx_state_dict(str(MODELS / "unet_l1_long.onnx"), model)
    int8_w = onnx_state_dict(str(MODELS / "unet_l1_long_int8.onnx"), model)
    graph = onnx.load(str(MODELS / "unet_l1_long_int8.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    quantised = [k for k in float_w if k + "_quantized" in inits]
    assert len(quantised) >= 20 and "up.0.weight" in quantised  # convolutions and transposed ones
    for key in quantised:
        scale = inits[key + "_scale"] if key + "_scale" in inits else inits[key + "_quantized_scale"]
        axis = 1 if key.startswith("up.") and key.endswith("weight") else 0  # ConvTranspose: output channels
        shape = [1] * float_w[key].ndim
        shape[axis] = -1
        err = (int8_w[key] - float_w[key]).abs().numpy()
        assert np.all(err <= np.reshape(scale, shape) * 0.5001 + 1e-7), key
        assert err.max() > 0, key  # really the quantised values, not a float copy
    model.load_state_dict(int8_w)
    g = np.random.default_rng(1)
    x = (np.log(g.exponential(size=(1, 1, 96, 96))) * 0.5).astype(np.float32)  # normalised log speckle
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    y_int8 = onnx_runner(MODELS / "unet_l1_long_int8.onnx")(x)
    y_float = onnx_runner(MODELS / "unet_l1_long.onnx")(x)
    assert np.abs(y - y_int8).mean() < 0.05 * np.abs(y_float - x).mean()
    np.testing.assert_allclose(y, y_float, atol=0.01 * np.abs(y_float - x).max())


def test_card_command_sets_keys_and_refuses_bad_ones(tmp_path, capsys):
    import shutil
    from training.quantize import int8_extra, read_card
    path = tmp_path / "m.onnx"
    shutil.copy(MODELS / "unet_l1_fast_int8.onnx", path)
    assert cli.main(["card", str(path), "--set", "auto_looks=0.5,2", "--set", "auto_correlation=0,0.2",
                     "--set", "auto_priority=3", "--set", "sensor_family=tests"]) == 0
    card = read_card(path)
    assert card.extra["auto_looks"] == "0.5,2" and card.extra["auto_priority"] == "3"
    assert card.name == "unet-l1-fast-int8" and json.loads(capsys.readouterr().out)["sensor_family"] == "tests"
    before = path.read_bytes()
    from sar_despeckle_plugin.core.errors import ModelCardError
    with pytest.raises(ModelCardError, match="auto_correlation"):
        cli.main(["card", str(path), "--set", "auto_correlation=0.9,0.1"])
    assert path.read_bytes() == before
    assert int8_extra({"auto_priority": "10", "x": "y"}) == {"auto_priority": "5", "x": "y"}
    assert int8_extra({"x": "y"}) == {"x": "y"}
    # the float32 file's rank on CPUs without VNNI is not the int8 copy's (int8 is slow there)
    assert int8_extra({"auto_priority": "5", "auto_priority_no_vnni": "16"}) == {"auto_priority": "0"}


def test_auto_section_becomes_card_keys():
    from training.export import build_config_card
    card = build_config_card(load_config("unet_l1_correlated_long"))
    assert card.extra["auto_looks"] == "0.3,1.3" and card.extra["auto_correlation"] == "0.15,1"
    assert card.extra["auto_priority"] == "10" and "TerraSAR-X" in card.extra["sensor_family"]
    assert "drawn independently for rows and columns" in card.training_data
    assert "auto_looks" not in build_config_card(load_config("unet_l1_fast")).extra
    assert "auto_priority_no_vnni" not in card.extra
    lite16 = build_config_card(load_config("unet_l1_lite16_long")).extra
    assert (lite16["auto_priority"], lite16["auto_priority_no_vnni"]) == ("5", "16")
    # looks_scaling: only where the configuration sets it (the 4.4-look GRD network, the 1-8-look blind one)
    assert build_config_card(load_config("unet_l4_correlated")).extra["looks_scaling"] == "true"
    assert build_config_card(load_config("dncnn_l1to8_blind")).extra["looks_scaling"] == "true"
    assert "looks_scaling" not in card.extra and "looks_scaling" not in lite16
    from training.quantize import int8_extra
    assert int8_extra({"auto_priority": "10", "looks_scaling": "true"})["looks_scaling"] == "true"
    # the measured halo of the float32 16-channel networks (benchmarks/bench_halo.py); others: none
    assert build_config_card(load_config("unet_l1_lite16_long")).halo == 40
    assert build_config_card(load_config("unet_l1_correlated_lite16_long")).tile_halo == 40
    assert card.halo == 44 and build_config_card(load_config("unet_l1_long")).halo == 40
    l4 = build_config_card(load_config("unet_l4_correlated"))     # int8-only: no measured halo
    assert l4.halo is None and l4.tile_halo == 52


def test_bf16_falls_back_to_float32_where_the_cpu_would_emulate_it(tmp_path, monkeypatch):
    """A CPU without native bf16 (AVX2 only) runs bf16 autocast about 20 x slower than float32:
    a configuration that asks for bf16 trains in float32 there, says so in the log, and its
    checkpoint, reproduce command and card record float32; the weights equal those of a run
    asked for float32. Where bf16 is native, autocast is used (the weights differ)."""
    from training import precision
    root = _tiny_data(tmp_path / "data")
    plain = train(_tiny_config(root, steps=3, val_every=100), tmp_path / "fp32", export=False)
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: False)
    assert precision.resolve_bf16(False, torch.device("cpu")) == (False, None)
    use, note = precision.resolve_bf16(True, torch.device("cpu"))
    assert not use and "float32" in note
    events = []
    cfg = _tiny_config(root, steps=3, val_every=100, bf16=True)
    fallback = train(cfg, tmp_path / "fallback", export=False, log=events.append, overrides=["bf16=true"])
    assert [e["bf16"] for e in events if e.get("event") == "precision"] == [False]
    a = torch.load(tmp_path / "fp32" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "fallback" / "checkpoint.pt", weights_only=False)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert b["config"]["bf16"] is False and b["config"]["reproduce"].endswith("--set bf16=false")
    assert "--set bf16=true" not in b["config"]["reproduce"]
    from training.export import training_run_extra
    assert "float32" in training_run_extra(b["config"])["training_run"]
    assert (plain["steps_done"], fallback["steps_done"]) == (3, 3)
    # native bf16 (patched in: the kernels still run here, only slowly): autocast is on
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)
    events.clear()
    train(cfg, tmp_path / "bf16", export=False, log=events.append)
    c = torch.load(tmp_path / "bf16" / "checkpoint.pt", weights_only=False)
    assert not [e for e in events if e.get("event") == "precision"] and c["config"]["bf16"] is True
    assert any(not torch.equal(v, c["state_dict"][k]) for k, v in a["state_dict"].items())
