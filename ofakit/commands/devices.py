"""`ofakit devices list|check|clean`: the boards of the inventory and whether they are ready to profile."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

devices_app = typer.Typer(help="Boards reachable over SSH (inventory: --inventory, $OFAKIT_INVENTORY or "
                               "~/.config/ofakit/devices.yaml).", no_args_is_help=True)

InventoryOpt = typer.Option(None, "--inventory", "-i", help="Device inventory YAML file.")
AcceptOpt = typer.Option(False, "--accept-new-host-key",
                         help="Trust a board's unknown SSH host key and record it (check its fingerprint first).")
TimeoutOpt = typer.Option(10.0, "--connect-timeout", min=0.1, help="Seconds to wait for a board to answer.")
RetriesOpt = typer.Option(3, "--retries", min=0, help="Connection retries (exponential backoff) on network errors.")
ReconnectsOpt = typer.Option(3, "--reconnects", min=0, help="Boards: reconnections after a dropped link before "
                                                            "giving up (a re-run resumes anyway).")
OpTimeoutOpt = typer.Option(None, "--op-timeout", min=0.1, help="Boards: seconds one op may take before it is "
                                                                "recorded as RUN_TIMEOUT (default 60).")
DevicesOpt = typer.Option(None, "--devices", help="Boards of the inventory to profile in parallel (comma list).")
TagOpt = typer.Option(None, "--tag", help="Profile every board with this tag or group, in parallel.")


def remote_settings(inventory: Optional[Path], accept_new_host_key: bool, connect_timeout: float, retries: int,
                    reconnects: int, op_timeout: Optional[float] = None, devices: Optional[str] = None,
                    tag: Optional[str] = None) -> dict:
    """The board-related options of `profile` / `validate`, as one dict for :func:`profile_boards_cli`."""
    return {"inventory": inventory, "accept_new_host_key": accept_new_host_key, "connect_timeout": connect_timeout,
            "retries": retries, "reconnects": reconnects, "op_timeout": op_timeout, "devices": devices, "tag": tag}


def _ssh(remote: dict):  # noqa: ANN202 - profiler.remote.ssh.SSHOptions (imported lazily)
    from profiler.remote.ssh import ssh_options

    return ssh_options(connect_timeout=remote["connect_timeout"], retries=remote["retries"],
                       accept_new_host_key=remote["accept_new_host_key"])


def profile_boards_cli(device: Optional[str], remote: dict, **kw) -> int:  # noqa: ANN003 - profile_local's options
    """`ofakit profile BOARD` / `--devices a,b` / `--tag T`: each board profiled like this CPU, in parallel,
    into its own profile (backend and threads from the inventory unless given). Returns the exit code."""
    from ofa_core.errors import UserError
    from profiler.remote.fleet import profile_boards
    from profiler.remote.inventory import InventoryError, load_inventory

    from .profile import make_request, profile_local

    try:
        inv = load_inventory(remote["inventory"])
    except InventoryError as exc:
        if device and not remote["inventory"]:
            raise UserError(f"unknown device {device!r}: 'cpu' is this machine and boards come from the device "
                            f"inventory ({exc})") from None
        raise
    names = ([device] if device else []) + [n.strip() for n in (remote["devices"] or "").split(",") if n.strip()]
    if not names and not remote["tag"]:
        raise UserError("give a DEVICE ('cpu' or a board of the inventory), --devices a,b or --tag T")
    boards = inv.select(names, remote["tag"])
    if len(boards) > 1 and (kw.get("out") or kw.get("name") or kw.get("work")):
        raise UserError("--out, --name and --work name one profile; profile boards one at a time to use them")
    backend, threads = kw.pop("backend", None), kw.pop("threads", None)
    op_timeout = remote.get("op_timeout")

    def options_for(dev) -> dict:  # noqa: ANN001 - an inventory Device
        return dict(kw, backend=backend or dev.backend, threads=threads or dev.threads)

    def request(dev):  # noqa: ANN001, ANN202
        o = options_for(dev)
        req = make_request(dev.name, o["backend"], o["threads"], o["resolutions"], o["quick"], o["rounds"],
                           o["name"], o["calibration"], o["seed"], o["jobs"], o["width"],
                           o.get("quick_resolutions", 4), o.get("min_time"))
        if op_timeout:
            req.job.timeout_s = op_timeout
        return req

    def run_one(dev, runner, log) -> Path:  # noqa: ANN001 - Device, SSHRunner, logger
        return profile_local(dev.name, runner=runner, log=log, **options_for(dev))

    outcomes = profile_boards(boards, request, _ssh(remote), run_one, reconnects=remote["reconnects"])
    return 0 if all(o.ok for o in outcomes) else 1


def board_profile(name: str, inventory: Optional[Path]):  # noqa: ANN201 - device_profiles.Profile
    """The profile ``name`` (name or folder), or, for a board of the inventory, its default profile
    ``<board>-<backend>-<threads>t``."""
    from device_profiles import ProfileError, load_profile
    from profiler.remote.inventory import InventoryError, load_inventory

    try:
        return load_profile(name)
    except ProfileError as exc:
        try:
            dev = load_inventory(inventory).get(name)
        except InventoryError:
            raise exc from None
        return load_profile(f"{dev.name}-{dev.backend}-{dev.threads}t")


def board_runner(profile, remote: dict):  # noqa: ANN001, ANN201 - Profile -> SSHRunner | None
    """The runner that re-measures on ``profile``'s device: None for this machine, an SSHRunner for a board.
    An imported profile (OFA's tables) has no device ofakit can reach: one line says so."""
    from ofa_core.errors import UserError

    meta = profile.meta
    if meta.source != "measured":
        raise UserError(f"profile {profile.name!r} was imported ({meta.source}), not measured by ofakit: there is "
                        f"nothing to measure (validate and recalibrate re-measure a profile made by `ofakit "
                        f"profile`)")
    return device_runner(meta.device, meta.backend, meta.threads, remote)[0]


def device_runner(device: str, backend: Optional[str], threads: Optional[int], remote: dict):  # noqa: ANN201
    """(runner, backend, threads) for measuring on ``device``: runner None for this machine (defaults
    onnxruntime, 1 thread), an SSHRunner for a board (defaults: its inventory's backend and threads)."""
    from profiler.backends import get_backend
    from profiler.pipeline import LOCAL_DEVICES
    from profiler.remote.inventory import load_inventory
    from profiler.remote.runner import SSHRunner

    if device in LOCAL_DEVICES:
        return None, backend or "onnxruntime", threads or 1
    dev = load_inventory(remote["inventory"]).get(device)
    backend, threads = backend or dev.backend, threads or dev.threads
    return SSHRunner(dev, get_backend(backend), _ssh(remote), remote["reconnects"], threads=threads), backend, threads


@devices_app.command("list")
def list_cmd(inventory: Optional[Path] = InventoryOpt,
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the devices of the inventory."""
    from rich.console import Console
    from rich.table import Table

    from profiler.remote.inventory import load_inventory

    inv = load_inventory(inventory)
    if as_json:
        print(json.dumps([d.describe() for d in inv.devices.values()], indent=2))
        return
    table = Table(title=f"devices in {inv.path}")
    for col in ("name", "address", "backend", "threads", "taskset", "python", "tags"):
        table.add_column(col)
    for d in inv.devices.values():
        table.add_row(d.name, d.address, d.backend, str(d.threads), d.taskset or "-", d.python, ", ".join(d.tags))
    Console().print(table)


@devices_app.command("check")
def check_cmd(names: List[str] = typer.Argument(None, help="Device names (default: all, or --tag)."),
              tag: Optional[str] = typer.Option(None, "--tag", help="Check every device with this tag or group."),
              inventory: Optional[Path] = InventoryOpt, accept_new_host_key: bool = AcceptOpt,
              connect_timeout: float = TimeoutOpt, retries: int = RetriesOpt,
              as_json: bool = typer.Option(False, "--json", help="Print the raw probe results as JSON.")) -> int:
    """Connect to boards and report Python, numpy, runtime, CPU, governor, temperature and throttling."""
    from rich.console import Console

    from profiler.remote.check import check_device
    from profiler.remote.inventory import load_inventory
    from profiler.remote.ssh import Connection, RemoteError, ssh_options

    inv = load_inventory(inventory)
    devices = inv.select(names or (), tag) if names or tag else list(inv.devices.values())
    opts = ssh_options(connect_timeout=connect_timeout, retries=retries, accept_new_host_key=accept_new_host_key)
    console = Console()
    bad = 0
    for dev in devices:
        try:
            with Connection(dev, opts) as conn:
                rep = check_device(dev, conn)
        except RemoteError as exc:
            if len(devices) == 1:
                raise
            console.print(f"[red]{exc}[/red]")
            bad += 1
            continue
        bad += not rep.ok
        if as_json:
            print(json.dumps({"device": dev.name, "ok": rep.ok, "problems": rep.problems, "warnings": rep.warnings,
                              "fixes": rep.fixes, "info": rep.info}))
            continue
        _print_report(console, rep)
    return 1 if bad else 0


def _print_report(console, rep) -> None:  # noqa: ANN001 - rich console and CheckReport (imported lazily)
    from rich.table import Table

    info, dev = rep.info, rep.device
    cpu, st = info["cpu"], info["state"]
    rt = rep.runtime()
    temps = ", ".join(f"{k} {v:.1f} C" for k, v in st["temperatures_c"].items()) or "no thermal zones"
    thr = st["throttled"]
    rows = [
        ("python", f"{info['python']['version']} ({info['python']['executable']})"),
        ("numpy", info["packages"]["numpy"].get("version") or "MISSING"),
        (f"runtime ({dev.backend})", f"{rt[0]} {rt[1]}" if rt else "MISSING"),
        ("cpu", f"{cpu['model'] or '?'} ({cpu['machine']}), {cpu['cores']} cores"
                + (f", board {cpu['board']}" if cpu["board"] else "")),
        ("governor", f"{cpu['governor'] or 'n/a'}" + (f", {cpu['min_mhz']}-{cpu['max_mhz']} MHz"
                                                      if cpu["max_mhz"] else "")),
        ("temperature", temps),
        ("throttled", thr["raw"] if thr else "n/a (no vcgencmd)"),
        ("os", f"{info['os']['distro'] or info['os']['system']} {info['os']['release']}"),
    ]
    table = Table(title=f"{dev.name} ({dev.address})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for p in rep.problems:
        console.print(f"[red]problem:[/red] {p}")
    for w in rep.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for f in rep.fixes:
        console.print(f"[cyan]fix:[/cyan] {f}")
    console.print("[green]ready to profile[/green]" if rep.ok else "[red]not ready[/red]")


@devices_app.command("clean")
def clean_cmd(name: str = typer.Argument(..., help="Device name."), inventory: Optional[Path] = InventoryOpt,
              accept_new_host_key: bool = AcceptOpt, connect_timeout: float = TimeoutOpt,
              retries: int = RetriesOpt) -> None:
    """Remove ofakit's work folder (agent, cached op models, unfinished results) from a board."""
    from ofa_core.errors import UserError
    from profiler.remote.inventory import load_inventory
    from profiler.remote.ssh import Connection, ssh_options

    dev = load_inventory(inventory).get(name)
    opts = ssh_options(connect_timeout=connect_timeout, retries=retries, accept_new_host_key=accept_new_host_key)
    with Connection(dev, opts) as conn:
        path = conn.expand(dev.workdir)
        if path.rstrip("/") in ("", conn.home.rstrip("/")):
            raise UserError(f"{dev.name}: refusing to remove {path!r} (workdir must be a folder of its own)")
        conn.remove_tree(path)
    print(f"{dev.name}: removed {path}")


def register(app: typer.Typer) -> None:
    """Add `ofakit devices` to `app`."""
    app.add_typer(devices_app, name="devices")
