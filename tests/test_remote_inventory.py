"""Device inventory: group defaults, tags, strict one-line errors naming file, device and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from ofakit.profiler.remote.inventory import InventoryError, default_inventory_path, load_inventory

GOOD = """
version: 1
defaults:
  user: pi
  backend: tflite
  threads: 1
groups:
  pi4s:
    vars: {threads: 4, taskset: "0-3"}
    devices: [pi4-a, pi4-b]
  lab:
    vars: {python: /opt/py/bin/python3}
    devices: [pi4-b]
devices:
  pi4-a:
    host: 192.168.1.20
    key_file: ~/.ssh/id_ed25519
    tags: [arm]
  pi4-b: {host: pi4-b.local, port: 2222, threads: 2, taskset: [2, 3]}
  jetson: {host: 10.0.0.5, backend: onnxruntime, workdir: /tmp/ofakit}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "devices.yaml"
    p.write_text(text)
    return p


def test_defaults_groups_and_device_precedence(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    a, b, j = (inv.get(n) for n in ("pi4-a", "pi4-b", "jetson"))
    assert list(inv.devices) == ["pi4-a", "pi4-b", "jetson"]
    assert (a.user, a.backend, a.threads, a.taskset, a.port) == ("pi", "tflite", 4, "0-3", 22)
    assert (b.threads, b.taskset, b.port, b.python) == (2, "2,3", 2222, "/opt/py/bin/python3")
    assert (j.backend, j.threads, j.taskset, j.python, j.workdir) == ("onnxruntime", 1, None, "python3",
                                                                      "/tmp/ofakit")
    assert a.tags == ("pi4s", "arm") and set(b.tags) == {"pi4s", "lab"}
    assert a.key_path == Path.home() / ".ssh" / "id_ed25519"
    assert a.workdir == ".cache/ofakit"
    assert [d.name for d in inv.select(tag="pi4s")] == ["pi4-a", "pi4-b"]
    assert [d.name for d in inv.select(["jetson", "pi4-a"], tag="lab")] == ["jetson", "pi4-a", "pi4-b"]
    assert "key_file" not in a.describe()


@pytest.mark.parametrize("text, words", [
    ("devices:\n  pi: {host: h, port: 70000}\n", ["device 'pi'", "'port'", "1..65535"]),
    ("devices:\n  pi: {host: h, backend: tensorrt}\n", ["device 'pi'", "'backend'", "onnxruntime, tflite"]),
    ("devices:\n  pi: {host: h, password: hunter2}\n", ["device 'pi'", "'password'", "ssh-agent"]),
    ("devices:\n  pi: {host: h, hots: x}\n", ["device 'pi'", "unknown field 'hots'"]),
    ("devices:\n  pi: {port: 22}\n", ["device 'pi'", "'host' is required"]),
    ("devices:\n  pi: {host: h, taskset: 'a-b'}\n", ["device 'pi'", "'taskset'"]),
    ("devices:\n  pi: {host: h, threads: 0}\n", ["device 'pi'", "'threads'"]),
    ("devices:\n  pi: {host: h}\ngroups:\n  g: {devices: [nope]}\n", ["group 'g'", "'nope'"]),
    ("defaults: {threads: many}\ndevices: {pi: {host: h}}\n", ["defaults", "'threads'"]),
    ("devices:\n  pi: {host: h}\n  bad name: {host: h}\n", ["device name 'bad name'"]),
    ("devices:\n  - pi\n", ["'devices' must be a mapping"]),
    ("devices:\n  cpu: {host: h}\n", ["'cpu' is reserved"]),
    ("devices: {pi: {host: h}}\nextra: 1\n", ["unknown top-level key 'extra'"]),
    ("version: 2\ndevices: {pi: {host: h}}\n", ["version 2"]),
    ("devices: {pi: {host: [h}\n", ["not valid YAML", "line"]),
    ("groups:\n  a: {vars: {threads: 2}, devices: [pi]}\n  b: {vars: {threads: 3}, devices: [pi]}\n"
     "devices: {pi: {host: h}}\n", ["device 'pi'", "'threads'", "groups 'a' and 'b'"]),
])
def test_malformed_inventory_one_clear_line(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for w in words:
        assert w in msg, (w, msg)


def test_missing_file_and_unknown_device(tmp_path, monkeypatch):
    monkeypatch.setenv("OFAKIT_INVENTORY", str(tmp_path / "none.yaml"))
    assert default_inventory_path() == tmp_path / "none.yaml"
    with pytest.raises(InventoryError, match="no device inventory here"):
        load_inventory()
    inv = load_inventory(write(tmp_path, GOOD))
    with pytest.raises(InventoryError, match="no device 'pi5' .known: pi4-a, pi4-b, jetson"):
        inv.get("pi5")
    with pytest.raises(InventoryError, match="no device has tag 'x86'"):
        inv.select(tag="x86")
