"""runtime.info: versions, providers, the CUDA check and the bundled models' fingerprints."""
import json
import os
import platform

import numpy as np
import onnxruntime
import pytest
from osgeo import gdal

from sar_despeckle_plugin.runtime.info import cuda_check, model_infos, runtime_info
from sar_despeckle_plugin.runtime.models import DESPECKLERS, GAUSSIAN, RATIO, SUPER, bundled_models
from sar_despeckle_plugin.runtime.onnx_denoiser import CUDA, file_sha256, read_card


def test_versions_and_providers_are_those_of_this_python():
    info = runtime_info(check_cuda=False)
    assert info.numpy == np.__version__ and info.gdal == gdal.__version__
    assert info.onnxruntime == onnxruntime.__version__ and info.onnxruntime_error == ""
    assert info.available_providers == onnxruntime.get_available_providers()
    assert info.cuda_works is False and info.cuda_detail == "not checked"
    json.dumps(info.as_dict(), default=str)  # serialisable, for qgis_process --json
    assert info.lines()[2].startswith(f"onnxruntime {onnxruntime.__version__}, providers: ")


def test_every_bundled_file_is_listed_with_its_sha256_and_card():
    infos = model_infos()
    files = [(k, m) for k in (DESPECKLERS, GAUSSIAN, RATIO, SUPER) for m in bundled_models(k)]
    assert len(infos) == len(files) and any(k == RATIO for k, _ in files) and any(k == SUPER for k, _ in files)
    for info, (kind, m) in zip(infos, files):
        assert info.error == "" and info.name == m.name and info.index == m.index and info.file == m.file
        assert info.kind == {DESPECKLERS: "despeckler", GAUSSIAN: "gaussian", RATIO: "ratio", SUPER: "super"}[kind]
        assert info.sha256 == file_sha256(m.path) and len(info.sha256) == 64
        assert info.size_bytes == os.path.getsize(m.path)
        card = read_card(m.path)
        assert info.card["name"] == card.name and info.card["receptive_field"] == card.receptive_field
        assert card.architecture.split("(")[0] in info.summary
    auto = next(i for i in infos if i.name == "unet-l4-correlated-int8")
    assert "int8, 4.4-look despeckler, Auto for 1.3-12 looks" in auto.summary and auto.card["auto_priority"] == "5"
    assert "receptive field 103, tile" in auto.summary and auto.card["halo"] is None
    lite16 = next(i for i in infos if i.name == "unet-l1-lite16-long")    # a measured halo is said
    assert "receptive field 103 (halo 40, measured), tile 640" in lite16.summary and lite16.card["halo"] == 40
    # the float16 twins that CUDA runs: the sha256 an output made there records
    twins = {i.name: (i.fp16_file, i.fp16_sha256) for i in infos if i.fp16_file}
    twin = os.path.join(os.path.dirname(next(m.path for m in bundled_models())), "unet_l1_long_fp16.onnx")
    assert set(twins) == {"unet-l1-long", "unet-l1-correlated-lite-long-fp32", "dncnn-l1to8-blind"}
    assert twins["unet-l1-long"] == ("unet_l1_long_fp16.onnx", file_sha256(twin))
    line = next(s for s in runtime_info(check_cuda=False).lines() if s.startswith("MODEL 7 unet-l1-long "))
    assert line.endswith(f"; on CUDA with tensor cores its float16 twin unet_l1_long_fp16.onnx, "
                         f"sha256 {file_sha256(twin)}")


def test_cuda_check_runs_a_session_and_does_not_trust_the_provider_list():
    """Here (no GPU) the CUDA provider, when listed, must be reported as not working; a GPU machine
    reports a tile that ran. Either way the answer comes from a real session."""
    small = min(bundled_models(), key=lambda m: os.path.getsize(m.path))
    works, detail = cuda_check(onnxruntime, small.path)
    sess_providers = onnxruntime.InferenceSession(small.path, providers=[CUDA, "CPUExecutionProvider"]) \
        .get_providers() if CUDA in onnxruntime.get_available_providers() else ["CPUExecutionProvider"]
    assert works == (sess_providers[0] == CUDA)
    assert ("ran on CUDA" in detail) if works else ("CUDA" in detail)
    from sar_despeckle_plugin.runtime.onnx_denoiser import nvidia_driver_present
    if CUDA in onnxruntime.get_available_providers() and not nvidia_driver_present():
        assert "no NVIDIA driver" in detail  # what to fix, not only that it failed


def test_a_broken_model_file_is_reported_not_raised(tmp_path, monkeypatch):
    import sar_despeckle_plugin.runtime.models as models
    bad = tmp_path / "models"
    bad.mkdir()
    (bad / "models.json").write_text(json.dumps({"models": [{"file": "missing.onnx", "name": "gone"}],
                                                 "gaussian_models": []}))
    monkeypatch.setattr(models, "MODELS_DIR", str(bad))
    monkeypatch.setattr(models, "MANIFEST", str(bad / "models.json"))
    infos = model_infos()
    assert len(infos) == 1 and infos[0].name == "gone" and "missing.onnx" in infos[0].error
    with pytest.raises(FileNotFoundError):
        os.path.getsize(bad / "missing.onnx")


def test_cpu_line_names_the_vector_extensions_that_set_the_speed():
    from sar_despeckle_plugin.runtime.info import cpu_description, simd_level
    assert simd_level({"avx2", "avx512f", "avx512_vnni"}) == "AVX-512 VNNI"
    assert simd_level({"avx2", "avx_vnni"}) == "AVX-VNNI (AVX2)"
    assert simd_level({"avx2", "avx512f"}) == "AVX-512 (no VNNI)"
    assert simd_level({"sse4_2", "avx", "avx2"}) == "AVX2 (no VNNI)"
    assert simd_level(set()) == ""
    info = runtime_info(check_cuda=False)
    assert info.cpu == cpu_description() and info.lines()[1] == f"CPU: {info.cpu}"
    assert f"{os.cpu_count()} logical CPUs" in info.cpu
    if os.path.exists("/proc/cpuinfo"):
        flags = next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
        level = simd_level(flags)
        assert level in info.cpu
        slow_int8 = level != "" and "VNNI" not in level.replace("no VNNI", "")
        assert ("gain less over float32" in info.cpu) == slow_int8
        # conftest pins Auto's choice to the one made with VNNI, and the line says so
        assert ("SAR_DESPECKLE_VNNI=1: Auto takes the models it takes on CPUs with VNNI" in info.cpu) == slow_int8
        assert "Auto takes the float32" not in info.cpu
    # without the advice (benchmark headers): the same description up to the SIMD level
    assert info.cpu.startswith(cpu_description(advice=False)) and "gain less" not in cpu_description(advice=False)


def test_vnni_detection_and_its_override(monkeypatch):
    """Auto's CPU choice depends on VNNI: read from /proc/cpuinfo's flags, SAR_DESPECKLE_VNNI=0/1
    overrides it, an unknown level (not x86, not Linux) counts as VNNI (Auto's usual choice)."""
    from sar_despeckle_plugin.runtime import info as info_mod
    assert info_mod.lacks_vnni("AVX2 (no VNNI)") and info_mod.lacks_vnni("AVX-512 (no VNNI)")
    assert not info_mod.lacks_vnni("AVX-512 VNNI") and not info_mod.lacks_vnni("AVX-VNNI (AVX2)")
    assert not info_mod.lacks_vnni("")
    monkeypatch.setattr(info_mod, "_cpu", lambda: ("test CPU", frozenset({"avx", "avx2", "fma"})))
    for forced, lacks in (("0", True), ("1", False), ("", True), ("yes", True)):
        monkeypatch.setenv("SAR_DESPECKLE_VNNI", forced)
        assert info_mod.cpu_lacks_vnni() == lacks
    monkeypatch.setenv("SAR_DESPECKLE_VNNI", "0")
    line = info_mod.cpu_description()
    assert line.startswith("test CPU") and "AVX2 (no VNNI)" in line
    assert ("Auto takes the float32 MODEL 16 (unet-l1-lite16-long) and MODEL 17 (unet-l1-correlated-lite16-long) "
            "here") in line
    assert [m.name for m in info_mod.no_vnni_models()] == ["unet-l1-lite16-long", "unet-l1-correlated-lite16-long"]
    monkeypatch.setattr(info_mod, "_cpu", lambda: ("test CPU", frozenset({"avx2", "avx512f", "avx512_vnni"})))
    monkeypatch.delenv("SAR_DESPECKLE_VNNI")
    assert not info_mod.cpu_lacks_vnni() and "gain less" not in info_mod.cpu_description()


def test_vnni_without_proc_cpuinfo_from_numpy_features():
    """Windows and macOS have no /proc/cpuinfo: numpy's runtime CPU features, where they settle
    VNNI (AVX-512 VNNI seen; its absence on AMD, Intel Macs and the listed Intel models); an
    Intel model that may have AVX-VNNI (invisible to numpy) or an ARM CPU keeps Auto's usual choice."""
    from sar_despeckle_plugin.runtime.info import _numpy_cpu_features, flags_without_procfs, lacks_vnni, simd_level
    avx2 = {"SSE42": True, "AVX": True, "AVX2": True, "AVX512F": False, "AVX512VNNI": False, "NEON": False}
    avx512 = dict(avx2, AVX512F=True)
    vnni = dict(avx512, AVX512VNNI=True)

    def level(features, system, machine, processor):
        return simd_level(flags_without_procfs(features, system, machine, processor))

    win_zen3 = "AMD64 Family 25 Model 33 Stepping 0, AuthenticAMD"
    win_zen4 = "AMD64 Family 25 Model 97 Stepping 2, AuthenticAMD"
    win_comet = "Intel64 Family 6 Model 165 Stepping 5, GenuineIntel"
    win_alder = "Intel64 Family 6 Model 154 Stepping 3, GenuineIntel"
    win_future = "Intel64 Family 6 Model 250 Stepping 1, GenuineIntel"
    cases = [
        (avx2, "Windows", "AMD64", win_zen3, "AVX2 (no VNNI)"),          # Ryzen 5000: float32 lite16
        (vnni, "Windows", "AMD64", win_zen4, "AVX-512 VNNI"),             # Ryzen 7000
        (avx2, "Windows", "AMD64", win_comet, "AVX2 (no VNNI)"),          # Comet Lake laptop
        (avx2, "Windows", "AMD64", win_alder, "AVX-VNNI (AVX2)"),         # Alder Lake: int8 stays
        (avx2, "Windows", "AMD64", win_future, ""),                       # unknown: the usual choice
        (vnni, "Windows", "AMD64", win_future, "AVX-512 VNNI"),
        (avx512, "Windows", "AMD64", "Intel64 Family 6 Model 85 Stepping 4, GenuineIntel", "AVX-512 (no VNNI)"),
        (avx2, "Darwin", "x86_64", "i386", "AVX2 (no VNNI)"),             # Intel Mac
        ({"NEON": True, "ASIMD": True, "ASIMDDP": True}, "Darwin", "arm64", "arm", ""),  # Apple silicon
        ({}, "Windows", "AMD64", win_zen3, ""),                           # numpy told nothing
    ]
    for features, system, machine, processor, expected in cases:
        assert level(features, system, machine, processor) == expected, (processor, expected)
    assert lacks_vnni(level(avx2, "Windows", "AMD64", win_zen3))
    assert not lacks_vnni(level(avx2, "Windows", "AMD64", win_alder))
    assert not lacks_vnni(level(avx2, "Windows", "AMD64", win_future))
    # this numpy exposes its features, and on this x86 machine they agree with /proc/cpuinfo on AVX2
    features = _numpy_cpu_features()
    assert features and "AVX2" in features
    if os.path.exists("/proc/cpuinfo") and platform.machine() == "x86_64":
        flags = next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
        assert features["AVX2"] == ("avx2" in flags)
        assert features["AVX512VNNI"] == ("avx512_vnni" in flags)


def test_cpu_reading_falls_back_to_numpy_without_proc_cpuinfo(monkeypatch):
    from sar_despeckle_plugin.runtime import info as info_mod

    def no_procfs(path, *args, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr(info_mod, "open", no_procfs, raising=False)
    monkeypatch.setattr(info_mod.platform, "processor", lambda: "AMD64 Family 23 Model 49 Stepping 0, AuthenticAMD")
    monkeypatch.setattr(info_mod.platform, "system", lambda: "Windows")
    monkeypatch.setattr(info_mod, "_numpy_cpu_features", lambda: {"AVX": True, "AVX2": True, "AVX512VNNI": False})
    monkeypatch.delenv("SAR_DESPECKLE_VNNI", raising=False)
    info_mod._cpu.cache_clear()
    try:
        name, flags = info_mod._cpu()
        assert name == "AMD64 Family 23 Model 49 Stepping 0, AuthenticAMD" and flags == {"avx", "avx2"}
        assert info_mod.cpu_lacks_vnni() and "AVX2 (no VNNI)" in info_mod.cpu_description()
    finally:
        info_mod._cpu.cache_clear()
