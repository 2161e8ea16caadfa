"""What the profiler measures: an *item* is one elastic operator (by OFA key) or one whole subnet (by arch).

Items have a stable id (the OFA key, or ``subnet:`` + the canonical arch JSON) that names them in result
journals, and build their torch module from :mod:`ofakit.ofa_core.static` (or their model file straight from their ops
with :mod:`ofakit.ofa_core.direct`), so an op measured alone and the same op inside a measured subnet are the same
layers.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ofakit.ofa_core.errors import UserError
from ofakit.ofa_core.ops import OpSpec, subnet_ops
from ofakit.ofa_core.space import ArchConfig

from .agent.ofakit_agent import SUBNET_PREFIX  # the agent gives whole networks (this id prefix) more rounds

OP, SUBNET = "op", "subnet"


@dataclass(frozen=True)
class Item:
    kind: str
    spec: str  # OFA key (op) or canonical arch JSON (subnet)

    @classmethod
    def op(cls, op: OpSpec) -> "Item":
        return cls(OP, op.key)

    @classmethod
    def subnet(cls, arch: ArchConfig) -> "Item":
        return cls(SUBNET, json.dumps(arch.canonical().to_dict(), separators=(",", ":"), sort_keys=True))

    @classmethod
    def from_id(cls, item_id: str) -> "Item":
        if item_id.startswith(SUBNET_PREFIX):
            return cls(SUBNET, item_id[len(SUBNET_PREFIX):])
        return cls(OP, item_id)

    @property
    def id(self) -> str:
        return self.spec if self.kind == OP else SUBNET_PREFIX + self.spec

    def arch(self) -> ArchConfig:
        if self.kind != SUBNET:
            raise UserError(f"{self.id}: not a subnet item")
        return ArchConfig.from_json(self.spec)

    def opspec(self) -> OpSpec:
        if self.kind != OP:
            raise UserError(f"{self.id}: not an operator item")
        return OpSpec.from_key(self.spec)

    def filename(self, suffix: str) -> str:
        """A short, filesystem-safe model file name derived from the id."""
        return hashlib.sha1(self.id.encode()).hexdigest()[:20] + suffix

    @property
    def seed(self) -> int:
        """A stable seed derived from the id: the weights of a directly built model file."""
        return int(hashlib.sha1(self.id.encode()).hexdigest()[:8], 16)

    def ops(self) -> list[OpSpec]:
        """The operators the item computes, in order (one for an operator item)."""
        return [self.opspec()] if self.kind == OP else subnet_ops(self.arch())

    def module(self) -> tuple[Any, Any]:
        """(eval-mode torch module, example input of batch 1)."""
        import torch

        from ofakit.ofa_core.static import build_op, build_subnet, op_input

        if self.kind == OP:
            op = self.opspec()
            return build_op(op).eval(), op_input(op)
        arch = self.arch()
        return build_subnet(arch).eval(), torch.randn(1, 3, arch.r, arch.r)
