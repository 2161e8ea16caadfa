"""Runners time built model files and journal the results; the local one drives the agent on this machine.

A runner has ``measure(models, journal, job, progress) -> {id: Summary}`` and ``environment()``. The local
runner uses the agent file's own measurement loop and timing worker, so local and on-board measurement are one
method; the SSH runner (profiler.remote) runs the same file on a board.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from ofakit.ofa_core.errors import UserError

from .agent import ofakit_agent as agent
from .backends import Backend

LOCAL_DEVICES = {"cpu": "onnxruntime", "gpu": "torch-cuda"}  # this machine's devices and their default backends


class LocalRunner:
    """Measures on this machine with ``backend``'s worker at ``threads`` threads."""

    def __init__(self, backend: Backend, threads: int = 1):
        self.backend = backend
        self.threads = int(threads)

    def measure(self, models: Mapping[str, str], journal: str | os.PathLike, job: agent.JobSettings,
                progress: agent.Progress | None = None) -> dict[str, agent.Summary]:
        """Time ``models`` ({item id: model path}) in interleaved rounds, journaling to ``journal``."""
        header = agent.make_header(self.backend.name, self.threads, job)
        try:
            return agent.measure(sorted(models.items()), str(journal), self.backend.worker_argv(self.threads), job,
                                 header, progress, log_path=str(journal) + ".worker.log")
        except agent.AgentError as exc:
            raise UserError(str(exc)) from None

    def environment(self) -> dict[str, Any]:
        env = agent.environment(self.backend.name, self.threads)
        env["runtime"] = self.backend.versions()
        return env
