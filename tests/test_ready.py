"""`make check` (python -m lab check): plain verdicts, and a fix for every failure."""

import socket
import subprocess
import sys

from lab import check as ready


def test_a_busy_port_fails_and_names_another_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        c = ready.check_port(port)
    assert not c.ok and f"--port {port + 1}" in c.fix and "in use" in c.line()
    assert ready.check_port(port).ok, "free again once the other program has gone"


def test_missing_data_and_model_fail_with_the_command_that_fixes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ready, "PROJECT_ROOT", tmp_path)
    data = ready.check_data()
    assert not data.ok and "make data" in data.fix
    model = ready.check_default_model()  # the test cache (GEM_LAB_CACHE) is empty
    assert not model.ok and "python -m lab convert smollm2-135m" in model.fix
    checks = ready.run_checks(port=0)
    assert "GEM model" not in [c.name for c in checks], "no model run while the model is missing"
    text = ready.report(checks, 1.0)
    assert "NOT READY" in text and "-> " in text


def test_the_command_exits_non_zero_when_not_ready(tmp_path):
    env = {"GEM_LAB_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "lab", "check"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "[FAIL] default model" in out.stdout and "NOT READY" in out.stdout


def test_too_little_memory_fails_with_what_to_close(monkeypatch):
    monkeypatch.setattr(ready, "available_ram_gib", lambda: 1.2)
    c = ready.check_memory()
    assert not c.ok and "1.2 GiB available" in c.seen and "notebook kernels" in c.fix
    monkeypatch.setattr(ready, "available_ram_gib", lambda: 9.0)
    assert ready.check_memory().ok
    monkeypatch.setattr(ready, "available_ram_gib", lambda: None)
    assert ready.check_memory().ok, "unknown is not a failure"


def test_expected_times_scale_the_measured_ones_by_a_probe(tmp_path, monkeypatch):
    import json

    from lab.weights import probe

    here = probe.speed_probe(repeats=1, model="tiny-llama")
    assert here["seconds"] > 0 and here["cpu"] and here["threads"] >= 1
    (tmp_path / "docs" / "notebooks").mkdir(parents=True)
    timings = {"notebooks": {"01_the_gem_mask": {"seconds": 20.0}, "03_training": {"seconds": 120.0}},
               "probe": {"seconds": 1.0, "cpu": "the reference CPU"}}
    (tmp_path / "docs" / "notebooks" / "timings.json").write_text(json.dumps(timings))
    monkeypatch.setattr(ready, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(probe, "speed_probe", lambda: {"seconds": 1.5, "cpu": "this CPU"})
    c = ready.check_expected_times()
    assert c.ok and "01 30 s" in c.seen and "03 3.0 min" in c.seen and "1.5×" in c.seen and "the reference CPU" in c.seen
    monkeypatch.setattr(probe, "speed_probe", lambda: {"seconds": 3.0, "cpu": "a slow CPU"})
    slow = ready.check_expected_times()
    assert not slow.ok and "3.0× slower" in slow.fix and "QUICK" in slow.fix
    (tmp_path / "docs" / "notebooks" / "timings.json").write_text(json.dumps({"01_the_gem_mask": {"seconds": 1}}))
    assert ready.check_expected_times().ok, "no probe recorded yet: nothing to scale, not a failure"


def test_the_default_maps_are_drawn_once_then_read_from_the_cache(tmp_path, monkeypatch):
    from lab.corpora.textsets import TextSet
    from tests.conftest import shipped_like_gem, tiny_gem

    monkeypatch.setenv("GEM_LAB_CACHE", str(tmp_path))
    texts = TextSet(texts=[f"text number {i} about {t}" for i in range(12) for t in ("sport", "music")],
                    labels=["sport", "music"] * 12)
    first = ready.check_default_maps(shipped_like_gem(), base=tiny_gem("llama"), textset=texts)
    assert first.ok and "maps cached" in first.seen, first.seen
    assert len(list((tmp_path / "maps").glob("*.npz"))) == 3, "base, GEM and MiniLM"
    broken = ready.check_default_maps(None, base=tiny_gem("llama"), textset=texts)
    assert not broken.ok and "make data" in broken.fix
