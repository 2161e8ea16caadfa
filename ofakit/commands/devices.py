"""`ofakit devices list|check|clean`: the boards of the inventory and whether they are ready to profile."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

if TYPE_CHECKING:
    from ofakit.profiler.devices import RemoteSettings

devices_app = typer.Typer(help="Boards reachable over SSH (inventory: --inventory, $OFAKIT_INVENTORY or "
                               "~/.config/ofakit/devices.yaml).", no_args_is_help=True)

InventoryOpt = typer.Option(None, "--inventory", "-i", help="Device inventory YAML file.")
AcceptOpt = typer.Option(False, "--accept-new-host-key",
                         help="Trust a board's unknown SSH host key and record it (check its fingerprint first).")
TimeoutOpt = typer.Option(10.0, "--connect-timeout", min=0.1, help="Seconds to wait for a board to answer.")
RetriesOpt = typer.Option(3, "--retries", min=0, help="Connection retries (exponential backoff) on network errors.")
ReconnectsOpt = typer.Option(3, "--reconnects", min=0, help="Boards: reconnections after a dropped link before "
                                                            "giving up (a re-run resumes anyway).")
OpTimeoutOpt = typer.Option(None, "--op-timeout", min=0.1, help="Seconds one op may take (here or on a board) "
                                                                "before it is recorded as RUN_TIMEOUT (default 60).")
DevicesOpt = typer.Option(None, "--devices", help="Boards of the inventory to profile in parallel (comma list).")
TagOpt = typer.Option(None, "--tag", help="Profile every board with this tag or group, in parallel.")


def remote_settings(inventory: Optional[Path], accept_new_host_key: bool, connect_timeout: float, retries: int,
                    reconnects: int) -> RemoteSettings:
    """The board-related options of `profile` / `validate` / `profile recalibrate`."""
    from ofakit.profiler.devices import RemoteSettings

    return RemoteSettings(inventory, accept_new_host_key, connect_timeout, retries, reconnects)


@devices_app.command("list")
def list_cmd(inventory: Optional[Path] = InventoryOpt,
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the devices of the inventory."""
    from rich.console import Console
    from rich.table import Table

    from ofakit.profiler.remote.inventory import load_inventory

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

    from ofakit.profiler.devices import select_boards
    from ofakit.profiler.remote.check import check_device
    from ofakit.profiler.remote.inventory import load_inventory
    from ofakit.profiler.remote.ssh import Connection, RemoteError

    remote = remote_settings(inventory, accept_new_host_key, connect_timeout, retries, 0)
    devices = (select_boards(names or (), tag, remote) if names or tag
               else list(load_inventory(inventory).devices.values()))
    opts = remote.ssh_options()
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
    from ofakit.ofa_core.errors import UserError
    from ofakit.profiler.devices import board
    from ofakit.profiler.remote.ssh import Connection

    remote = remote_settings(inventory, accept_new_host_key, connect_timeout, retries, 0)
    dev = board(name, remote)
    with Connection(dev, remote.ssh_options()) as conn:
        path = conn.expand(dev.workdir)
        if path.rstrip("/") in ("", conn.home.rstrip("/")):
            raise UserError(f"{dev.name}: refusing to remove {path!r} (workdir must be a folder of its own)")
        conn.remove_tree(path)
    print(f"{dev.name}: removed {path}")


def register(app: typer.Typer) -> None:
    """Add `ofakit devices` to `app`."""
    app.add_typer(devices_app, name="devices")
