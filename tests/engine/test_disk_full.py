"""A full disk under the checkpoint folder (a small tmpfs where the test may mount one; else, and always too, the
fault injected at the write): one line naming the path, the bytes needed and the bytes free, exit status 4, the
last complete checkpoint kept, the outputs that fit written."""
from __future__ import annotations

import errno
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pgcore.engine import checkpoint as ckpt_lib
from pgcore.engine.checkpoint import latest_checkpoint, read_checkpoint
from pgcore.engine.cli import main
from pgcore.engine.faults import DiskFullError, disk_full, is_disk_full

ROOT = Path(__file__).resolve().parents[2]
RUN = ["--model", "tiny-arith", "--reward-model", "arithmetic", "--max-new-tokens", "6", "--batch-size", "2",
       "--num-samples", "2", "--kl-coef", "0", "--quiet"]


def places(out: Path, ckpt: Path, models: Path) -> list[str]:
    return ["--output-dir", str(out), "--checkpoint-dir", str(ckpt), "--model-dir", str(models)]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _tiny_tmpfs(path: Path, size: str):
    """Mount a tmpfs of `size` on `path` (root only); False when this machine does not let the test."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_checkpoint_folder_on_a_filling_tmpfs(tmp_path):
    """checkpoint-1 (about 2.8 MB for tiny-arith) fits in 4 MB, checkpoint-2 beside it does not."""
    ckpt = tmp_path / "ckpt"
    if not _tiny_tmpfs(ckpt, "4m"):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission); the injected fault below runs")
    try:
        proc = subprocess.run([sys.executable, "-m", "pgcore.lm", *RUN, "--steps", "4", "--save-every", "1",
                               "--keep-last", "0", *places(tmp_path / "out", ckpt, tmp_path / "m")],
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
        line = _one_line(proc.stderr)
        assert proc.returncode == 4, proc.stderr
        assert f"writing {ckpt / 'checkpoint-2'}:" in line and "bytes needed" in line and "bytes free" in line, line
        assert f"kept the last complete checkpoint {ckpt / 'checkpoint-1'}" in line, line
        assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-1"]  # the partial folder is gone
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(ckpt / "checkpoint-1" / "model")
        assert read_checkpoint(ckpt / "checkpoint-1", model).step == 1
        del model  # its weights map the file: unmapped before the umount
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["status"] == "disk_full" and summary["steps"] == 2 and "checkpoint-2" in summary["error"]
        assert list(pd.read_csv(tmp_path / "out" / "training_metrics.csv")["step"]) == [1, 2]
        assert not (tmp_path / "m").exists()
    finally:
        import gc

        gc.collect()
        if subprocess.run(["umount", str(ckpt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(ckpt)], check=True)  # still busy: detach it now, freed when idle


def test_the_stream_error_torch_save_raises_on_a_full_disk_is_recognized():
    inner = RuntimeError("basic_ios::clear: iostream error")
    try:
        try:
            raise inner
        except RuntimeError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 6656 vs 6548")
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(RuntimeError("shape mismatch")) and not is_disk_full(ValueError("no space left"))
    with pytest.raises(DiskFullError) as e, disk_full("/some/where", needed=1234):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(e.value).startswith("no space left on the device writing /some/where: about 1,234 bytes needed, ")
    with pytest.raises(KeyError), disk_full("/x"):
        raise KeyError("other errors pass")


def test_an_injected_full_disk_at_the_second_checkpoint(tmp_path, monkeypatch, capsys):
    real_save = ckpt_lib.torch.save

    def save(obj, f, *a, **k):
        if "checkpoint-2" in str(f):  # what torch.save raises when its stream hits a full disk
            raise RuntimeError("basic_ios::clear: iostream error")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_lib.torch, "save", save)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    (out).mkdir()
    code = main([*RUN, "--steps", "4", "--save-every", "1", "--keep-last", "0", *places(out, ckpt, tmp_path / "m")])
    line = _one_line(capsys.readouterr().err)
    assert code == 4 and f"writing {ckpt / 'checkpoint-2'}" in line and "bytes free" in line, line
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-1"] and latest_checkpoint(ckpt).name == "checkpoint-1"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "disk_full" and summary["last_checkpoint"] == str(ckpt / "checkpoint-1")
    assert (out / "training_curves.png").exists() and len(json.loads((out / "log_history.json").read_text())) == 2
    monkeypatch.undo()  # space again: the run continues from the checkpoint it kept
    assert main([*RUN, "--steps", "4", "--save-every", "1", "--keep-last", "0", *places(out, ckpt, tmp_path / "m"),
                 "--resume"]) == 0
    assert list(pd.read_csv(out / "training_metrics.csv")["step"]) == [1, 2, 3, 4]


def test_an_injected_full_disk_when_saving_the_final_model(tmp_path, monkeypatch, capsys):
    from transformers import PreTrainedModel

    real = PreTrainedModel.save_pretrained

    def save_pretrained(self, folder, *a, **k):
        if "policy_gradient" in str(folder):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, folder, *a, **k)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_pretrained)
    code = main([*RUN, "--steps", "2", "--save-every", "0", *places(tmp_path / "out", tmp_path / "ckpt",
                                                                    tmp_path / "m")])
    line = _one_line(capsys.readouterr().err)
    assert code == 4 and f"writing {tmp_path / 'm' / 'policy_gradient'}" in line, line
    assert f"checkpoint {tmp_path / 'ckpt' / 'checkpoint-2'}" in line  # the end-of-run checkpoint came first
    assert not (tmp_path / "m" / "policy_gradient").exists()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "disk_full"


def test_an_injected_full_disk_when_writing_the_metrics_files(tmp_path, monkeypatch, capsys):
    from pgcore.engine import metrics

    real = metrics.write_json

    def write_json(path, obj):
        if Path(path).name == "summary.json" and obj.get("steps") == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(metrics, "write_json", write_json)  # the logger's writes; the fallback writes its own
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    code = main([*RUN, "--steps", "4", "--save-every", "2", *places(out, ckpt, tmp_path / "m")])
    line = _one_line(capsys.readouterr().err)
    assert code == 4 and f"writing {out}:" in line and f"checkpoint {ckpt / 'checkpoint-2'}" in line, line
    summary = json.loads((out / "summary.json").read_text())  # written in the end: a small file still fits
    assert summary["status"] == "disk_full" and summary["steps"] == 2


def test_a_2mb_tmpfs_that_holds_no_checkpoint_at_all(tmp_path):
    """The case first reported: the first checkpoint (2.8 MB) does not fit; exit 4, one line, the outputs written."""
    ckpt = tmp_path / "ckpt"
    if not _tiny_tmpfs(ckpt, "2m"):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission); the injected faults run")
    try:
        proc = subprocess.run([sys.executable, "-m", "pgcore.lm", *RUN, "--steps", "4", "--save-every", "2",
                               *places(tmp_path / "out", ckpt, tmp_path / "m")],
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
        line = _one_line(proc.stderr)
        assert proc.returncode == 4 and f"writing {ckpt / 'checkpoint-2'}" in line, proc.stderr
        assert line.endswith("; no complete checkpoint") and list(ckpt.iterdir()) == []
        needed, free = [int(x.replace(",", "")) for x in re.findall(r"([\d,]+) bytes", line)]
        assert needed > free and free <= 2 * 1024 * 1024
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["status"] == "disk_full" and summary["last_checkpoint"] is None
    finally:
        if subprocess.run(["umount", str(ckpt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(ckpt)], check=True)
