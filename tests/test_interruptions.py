"""Training under interruption: SIGTERM and SIGKILL of a real `python -m lab train` process, and a
full disk during a save. Each resumes to exactly the losses of a run that was never interrupted,
and nothing half-written is ever loaded."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.storage import folder_problem
from lab.training.config_files import config_from_args
from lab.training.loop import train

from .conftest import with_flat

ROOT = Path(__file__).resolve().parents[1]
STEPS = 24


def _cfg(out: Path):
    cfg = config_from_args(str(ROOT / "configs" / "tiny.yaml"), [])
    return with_flat(cfg, corpus=str(ROOT / cfg.rows.corpus), heldout=str(ROOT / cfg.rows.heldout),
                     output_dir=str(out), steps=STEPS, ntp_steps=STEPS // 2, save_every=4, log_every=1)


def _losses(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    return [(r["step"], round(r["loss"], 5)) for r in rows]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> list[tuple]:
    out = tmp_path_factory.mktemp("straight") / "run"
    train(_cfg(out))
    return _losses(out)


def _start_and_signal(out: Path, sig: int) -> subprocess.CompletedProcess | int:
    """Start `python -m lab train` on the tiny recipe; once it has saved a checkpoint, send `sig`."""
    cmd = [sys.executable, "-m", "lab", "train", "--config", str(ROOT / "configs" / "tiny.yaml"),
           f"--rows.corpus={ROOT / 'data/sample/wiki_train_sample.jsonl'}",
           f"--rows.heldout={ROOT / 'data/sample/wiki_heldout_sample.jsonl'}", f"--run.output_dir={out}",
           f"--optim.steps={STEPS}", f"--objective.ntp_steps={STEPS // 2}", "--run.save_every=4", "--run.log_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not (out / "last").is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training did not save a checkpoint: {proc.stdout.read()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=240)
    return proc.returncode, output


def test_sigterm_saves_and_resume_gives_the_straight_losses(tmp_path, straight):
    out = tmp_path / "run"
    code, output = _start_and_signal(out, signal.SIGTERM)
    if "stopped at step" not in output:  # it may have finished before the signal landed
        assert code == 0 and _losses(out) == straight
        return
    assert code == 0, output[-2000:]
    stopped = int(output.split("stopped at step ")[1].split(";")[0])
    assert (out / "last").read_text().strip() == f"checkpoint-{stopped}"
    train(_cfg(out), resume=True)
    assert _losses(out) == straight


def test_sigkill_resumes_from_the_last_complete_checkpoint(tmp_path, straight):
    out = tmp_path / "run"
    code, _ = _start_and_signal(out, signal.SIGKILL)
    if code == 0:  # finished before the kill
        assert _losses(out) == straight
        return
    assert code == -signal.SIGKILL
    train(_cfg(out), resume=True)
    assert _losses(out) == straight
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "no debris of the killed write"
    assert all(folder_problem(p) is None for p in out.glob("checkpoint-*"))


def test_a_full_disk_during_a_save_rolls_back_and_resumes(tmp_path, straight, monkeypatch):
    import errno

    from lab.training import state

    out = tmp_path / "run"
    real, calls = state.save_file, []

    def disk_full_on_the_second_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(state, "save_file", disk_full_on_the_second_save)
    with pytest.raises(OSError, match="No space left"):
        train(_cfg(out))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    assert folder_problem(out / "checkpoint-4") is None and (out / "last").read_text().strip() == "checkpoint-4"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "the half-written save was removed"
    monkeypatch.setattr(state, "save_file", real)  # space again
    train(_cfg(out), resume=True)
    assert _losses(out) == straight
