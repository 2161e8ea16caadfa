"""The `ofakit` command line: help, one-line errors with exit code 2, and a real export."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ofakit.cli import main

ARCH = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 4] * 5, "d": [2, 2, 3, 2, 2], "r": [128]}
OFAKIT = Path(sys.executable).with_name("ofakit")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(ARCH))
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_subcommands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "Commands" in out and "export" in out
    code, out, _ = run(capsys, "export", "--help")
    assert code == 0 and "--format" in out and "--out" in out and "--width" in out


@pytest.mark.parametrize("content, extra, expected", [
    (None, [], "cannot read arch file"),
    ("{not json", [], "not valid JSON"),
    (json.dumps({**ARCH, "ks": [4] * 20}), [], "ks[0]: 4 is not one of"),
    (json.dumps({**ARCH, "colour": 1}), [], "colour: unknown field"),
    (json.dumps(ARCH), ["--width", "-1"], "width"),
    (json.dumps(ARCH), ["--format", "pdf"], "--format"),
])
def test_user_mistakes_give_one_line_and_exit_2(capsys, tmp_path, content, extra, expected):
    arch = tmp_path / "a.json"
    if content is not None:
        arch.write_text(content)
    args = ["export", str(arch), "--out", str(tmp_path / "o.onnx")]
    args += extra if "--format" in extra else ["--format", "onnx", *extra]
    code, out, err = run(capsys, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and expected in err and err.startswith("ofakit: error:")
    assert not (tmp_path / "o.onnx").exists()


def test_missing_out_folder_and_bad_weights(capsys, arch_file, tmp_path):
    code, _, err = run(capsys, "export", str(arch_file), "--format", "onnx", "--out", str(tmp_path / "no" / "o.onnx"))
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "export", str(arch_file), "--format", "onnx", "--out", str(tmp_path / "o.onnx"),
                       "--weights", str(arch_file))
    assert code == 2 and "weights_only" in err and len(err.strip().splitlines()) == 1


def test_console_script_error_is_one_line(tmp_path):
    proc = subprocess.run([str(OFAKIT), "export", str(tmp_path / "missing.json"), "--format", "onnx", "--out",
                           str(tmp_path / "o.onnx")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "missing.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_onnx_writes_a_loadable_model(capsys, arch_file, tmp_path):
    out = tmp_path / "net.onnx"
    code, stdout, err = run(capsys, "export", str(arch_file), "--format", "onnx", "--out", str(out), "--width", "1.2",
                            "--check")
    assert code == 0, err
    assert "wrote" in stdout and "max |onnx - torch|" in stdout
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, 128, 128]
    y = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 128, 128), np.float32)})[0]
    assert y.shape == (1, 1000) and np.isfinite(y).all()


def test_export_from_supernet_weights(capsys, arch_file, tmp_path):
    from ofakit.ofa_core.space import load_arch
    from ofakit.ofa_core.supernet import OFAMobileNetV3

    torch.manual_seed(0)
    sup = OFAMobileNetV3(n_classes=7)
    weights = tmp_path / "supernet.pt"
    torch.save({"state_dict": sup.state_dict()}, weights)
    out = tmp_path / "net.onnx"
    code, _, err = run(capsys, "export", str(arch_file), "--format", "onnx", "--out", str(out), "--weights",
                       str(weights))
    assert code == 0, err
    sup.set_active_subnet(load_arch(str(arch_file)))
    x = torch.randn(1, 3, 128, 128)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = sup.eval()(x).numpy()
    assert np.abs(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] - ref).max() <= 1e-4
