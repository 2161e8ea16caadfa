"""Evolutionary search over the OFA space under device constraints.

The algorithm is OFA's ``EvolutionFinder`` (population 100, the top 25% kept as parents, half of each new
generation made by mutating a random parent -- every block's kernel+expand, every stage's depth and the
resolution re-drawn with probability 0.1 -- and half by uniform crossover of two random parents, every child
re-drawn until it meets the constraints), run on whole populations as integer arrays: candidates are drawn in
oversized batches, every constraint is evaluated on the whole batch at once and each child slot keeps its first
feasible candidate. On top of OFA's algorithm (each switchable in :class:`SearchConfig`):

- ``unique``: subnets are compared in canonical form (settings of blocks the depth skips do not count); each
  distinct subnet is predicted once per search (a cache) and the parents are distinct subnets;
- ``local_search``: the best subnet is polished at the end by hill climbing over single changes and over pairs
  (a change that raises accuracy but breaks a bound, plus a change that pays for it).

Predictors are plain objects with ``predict(archs) -> np.ndarray`` (one float per subnet); this module never
imports ``profiler`` or ``predictors``. Constraints are :class:`Constraint` objects (name, predictor, bound); an
infeasible one raises :class:`~ofakit.ofa_core.errors.UserError` at once, naming the smallest achievable value. A
constraint that carries its predictor's per-operator :class:`~ofakit.ofa_core.ops.SlotTable` (a LUT, FLOPs, parameters)
gets an exact minimum and a fast evaluation path; the table is checked against the predictor first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .errors import UserError
from .ops import OpSpec, SlotTable, block_op, conv_out, stage_input_sizes
from .space import MAX_DEPTH, N_BLOCKS, N_STAGES, ArchBatch, ArchConfig, SpaceSpec, as_batch, space_for_width

OFA_RESOLUTIONS = (160, 176, 192, 208, 224)

# Columns of a gene matrix (N, 46); genes are indices into the space's choices, not the values themselves.
_KS = slice(0, N_BLOCKS)
_E = slice(N_BLOCKS, 2 * N_BLOCKS)
_D = slice(2 * N_BLOCKS, 2 * N_BLOCKS + N_STAGES)
_R = 2 * N_BLOCKS + N_STAGES
N_GENES = _R + 1


@dataclass
class Constraint:
    """``predictor.predict(archs) <= bound`` for every subnet the search returns.

    ``table`` is the predictor's additive per-operator form when it has one (LUT sum, FLOPs, parameters): the
    search then computes the smallest achievable value exactly and evaluates candidates from the table directly.
    Without it the smallest value is found by evaluating the smallest configs.
    """

    name: str
    predictor: Any
    bound: float
    unit: str = ""
    table: SlotTable | None = None
    source: str = ""
    """What gives the values (e.g. which profile and predictor), for reports."""

    def evaluate(self, archs: "ArchBatch | Sequence[ArchConfig]") -> np.ndarray:
        return np.asarray(self.predictor.predict(as_batch(archs)), dtype=np.float64).reshape(-1)

    def describe(self, value: float) -> str:
        return f"{value:.4g}{' ' + self.unit if self.unit else ''}"


class OpSumPredictor:
    """A per-operator quantity summed over a subnet (``OpSpec.macs`` or ``OpSpec.params``) times ``scale``."""

    QUANTITIES: dict[str, Callable[[OpSpec], int]] = {"macs": lambda op: op.macs, "params": lambda op: op.params}

    def __init__(self, quantity: str, width: float = 1.0, resolutions: Sequence[int] = OFA_RESOLUTIONS,
                 scale: float = 1e-6):
        if quantity not in self.QUANTITIES:
            raise UserError(f"quantity: expected one of {sorted(self.QUANTITIES)}, got {quantity!r}")
        get = self.QUANTITIES[quantity]
        self.quantity = quantity
        self.table = SlotTable(space_for_width(width), sorted(set(int(r) for r in resolutions)),
                               lambda op, r: get(op) * scale)

    def predict(self, archs: "ArchBatch | Sequence[ArchConfig]") -> np.ndarray:
        return self.table.evaluate(as_batch(archs))


def flops_constraint(bound_m: float, width: float = 1.0, resolutions: Sequence[int] = OFA_RESOLUTIONS) -> Constraint:
    """FLOPs as OFA counts them (multiply-accumulates of convolutions and linear layers), in millions."""
    pred = OpSumPredictor("macs", width, resolutions)
    return Constraint("flops", pred, float(bound_m), "M", pred.table)


def params_constraint(bound_m: float, width: float = 1.0, resolutions: Sequence[int] = OFA_RESOLUTIONS
                      ) -> Constraint:
    """Trainable parameters, in millions."""
    pred = OpSumPredictor("params", width, resolutions)
    return Constraint("params", pred, float(bound_m), "M", pred.table)


@dataclass
class SearchConfig:
    """Evolution hyper-parameters and the additions described in the module docstring.

    The defaults are OFA's except ``generations``: with ``unique`` and ``local_search`` on, 100 generations reach
    what OFA's 500 reach (see BENCHMARKS.md, "search"); :meth:`ofa` gives OFA's plain algorithm.
    """

    population: int = 100
    generations: int = 100
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    resolution_mutate_prob: float = 0.1
    resolutions: tuple[int, ...] = OFA_RESOLUTIONS
    width: float = 1.0
    unique: bool = True
    local_search: bool = True
    max_rounds: int = 64

    @classmethod
    def ofa(cls, **kw: Any) -> "SearchConfig":
        """OFA's ``EvolutionFinder`` settings: 500 generations, no duplicate removal, no local search."""
        return cls(**{"generations": 500, "unique": False, "local_search": False, **kw})

    def validate(self) -> None:
        checks = [(self.population >= 2, f"population: must be at least 2, got {self.population}"),
                  (self.generations >= 0, f"generations: must be >= 0, got {self.generations}"),
                  (0 < self.parent_ratio <= 1, f"parent ratio: must be in (0, 1], got {self.parent_ratio}"),
                  (0 <= self.mutation_ratio <= 1, f"mutation ratio: must be in [0, 1], got {self.mutation_ratio}"),
                  (0 <= self.mutate_prob <= 1, f"mutate prob: must be in [0, 1], got {self.mutate_prob}"),
                  (0 <= self.resolution_mutate_prob <= 1,
                   f"resolution mutate prob: must be in [0, 1], got {self.resolution_mutate_prob}"),
                  (self.max_rounds >= 1, f"max rounds: must be >= 1, got {self.max_rounds}"),
                  (len(self.resolutions) > 0, "resolutions: need at least one")]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        for r in self.resolutions:
            if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 32 <= int(r) <= 1024:
                raise UserError(f"resolutions: {r!r} is not a resolution in [32, 1024]")
        space_for_width(self.width)


@dataclass
class SearchResult:
    """The best subnet found, its predicted accuracy and constraint values, and how the search went.

    ``history[g]`` is the best accuracy at the start of generation ``g`` (the last entry: after the search).
    ``population`` holds the final population, best first (distinct subnets when ``unique``).
    """

    arch: ArchConfig
    accuracy: float
    values: dict[str, float]
    history: np.ndarray
    evaluations: int
    seconds: float
    population: ArchBatch = field(repr=False)
    population_accuracy: np.ndarray = field(repr=False)


class _Codec:
    """Gene matrices of one space and resolution list: sampling, OFA's mutation and crossover, canonical keys,
    conversion to :class:`ArchBatch`."""

    def __init__(self, spec: SpaceSpec, resolutions: Sequence[int]):
        self.spec = spec
        self.ks = np.asarray(spec.ks_choices, dtype=np.int64)
        self.e = np.asarray(spec.e_choices, dtype=np.int64)
        self.d = np.asarray(spec.d_choices, dtype=np.int64)
        self.res = np.asarray(sorted(set(int(r) for r in resolutions)), dtype=np.int64)
        if self.d.min() < 1 or self.d.max() > MAX_DEPTH:
            raise UserError(f"depth choices must lie in 1..{MAX_DEPTH}")
        self.n_choices = np.array([self.ks.size] * N_BLOCKS + [self.e.size] * N_BLOCKS + [self.d.size] * N_STAGES
                                  + [self.res.size], dtype=np.float64)
        self.n_codes = self.ks.size * self.e.size  # code of a block = ks index * |e| + e index; skipped: n_codes
        self._active = np.arange(MAX_DEPTH)[None, :] < self.d[:, None]  # (|d|, 4)
        # coin of each gene in a mutation: block b's kernel and expand share coin b, then depths, then resolution
        self._coin = np.concatenate([np.arange(N_BLOCKS), np.arange(N_BLOCKS), N_BLOCKS + np.arange(N_STAGES),
                                     [N_BLOCKS + N_STAGES]])
        self._thresholds: tuple[tuple[float, float], np.ndarray] = ((-1.0, -1.0), np.empty(0))
        w = np.random.default_rng(0x0FA).integers(1, 2 ** 62, N_BLOCKS + 1, dtype=np.int64)
        self._w = (w.astype(np.uint64) << np.uint64(1)) | np.uint64(1)

    def batch(self, g: np.ndarray) -> ArchBatch:
        return ArchBatch(self.ks[g[:, _KS]], self.e[g[:, _E]], self.d[g[:, _D]], self.res[g[:, _R]],
                         self.spec.width_mult)

    def genes(self, b: ArchBatch, what: str = "archs") -> np.ndarray:
        """Gene matrix of a batch; raises :class:`UserError` for a value outside the choices."""
        g = np.empty((len(b), N_GENES), dtype=np.int64)
        for cols, values, choices, name in ((_KS, b.ks, self.ks, "ks"), (_E, b.e, self.e, "e"),
                                            (_D, b.d, self.d, "d"), (_R, b.r, self.res, "r")):
            idx = np.clip(np.searchsorted(choices, values), 0, choices.size - 1)
            bad = choices[idx] != values
            if bad.any():
                raise UserError(f"{what}: {name}={np.asarray(values)[bad].flat[0]} is not one of "
                                f"{choices.tolist()}")
            g[:, cols] = idx
        return g

    def active(self, g: np.ndarray) -> np.ndarray:
        """(N, 20) bool: which blocks run."""
        return self._active[g[:, _D]].reshape(g.shape[0], N_BLOCKS)

    def codes(self, g: np.ndarray) -> np.ndarray:
        """(N, 20) block codes, ``n_codes`` for a skipped block: with the resolution, a canonical form."""
        return np.where(self.active(g), g[:, _KS] * self.e.size + g[:, _E], self.n_codes)

    def keys(self, g: np.ndarray) -> np.ndarray:
        """64-bit hash of each canonical form (random odd weights; collisions are astronomically unlikely)."""
        c = np.concatenate([self.codes(g), g[:, _R:]], axis=1).astype(np.uint64)
        return (c * self._w).sum(axis=1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` subnets with every choice uniform (OFA's sampler)."""
        return (rng.random((n, N_GENES)) * self.n_choices).astype(np.int64)

    def mutate(self, rng: np.random.Generator, g: np.ndarray, p: float, p_r: float) -> np.ndarray:
        """OFA's mutation: with probability ``p`` a block's kernel and expand are re-drawn together, with ``p`` a
        stage's depth, with ``p_r`` the resolution."""
        n = g.shape[0]
        if self._thresholds[0] != (p, p_r):
            self._thresholds = ((p, p_r), np.array([p] * (N_BLOCKS + N_STAGES) + [p_r]))
        coins = rng.random((n, N_BLOCKS + N_STAGES + 1)) < self._thresholds[1]
        return np.where(coins[:, self._coin], self.sample(rng, n), g)

    @staticmethod
    def crossover(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """OFA's crossover: every gene from either parent with probability 1/2."""
        return np.where(rng.random(a.shape) < 0.5, a, b)


class _TableEval:
    """A constraint evaluated straight from its :class:`SlotTable` on gene matrices (values per block code)."""

    def __init__(self, c: Constraint, codec: _Codec):
        t = c.table
        if t.spec.width_mult != codec.spec.width_mult:
            raise UserError(f"{c.name}: its table is for width {t.spec.width_mult}, the search for width "
                            f"{codec.spec.width_mult}")
        missing_r = [int(r) for r in codec.res if int(r) not in t.resolutions]
        if missing_r:
            raise UserError(f"{c.name}: resolution {missing_r[0]} is not in its table "
                            f"({t.resolutions[0]}..{t.resolutions[-1]})")
        ri = [t.resolutions.index(int(r)) for r in codec.res]
        spec = codec.spec
        ki = [spec.ks_choices.index(int(k)) for k in codec.ks]
        ei = [spec.e_choices.index(int(e)) for e in codec.e]
        blocks = t.blocks[np.ix_(ri, range(N_BLOCKS), ki, ei)].reshape(len(ri), N_BLOCKS, codec.n_codes)
        self.fixed = t.fixed[ri]
        if np.isnan(blocks).any() or np.isnan(self.fixed).any():
            raise UserError(f"{c.name}: its table lacks operators the search needs "
                            f"({self._missing_key(codec, blocks)})")
        self.blocks = blocks  # (R, 20, n_codes)
        self.flat = np.concatenate([blocks, np.zeros((len(ri), N_BLOCKS, 1))], axis=2).ravel()
        self._offset = np.arange(N_BLOCKS) * (codec.n_codes + 1)
        self._stride = N_BLOCKS * (codec.n_codes + 1)
        self.codec = codec

    @staticmethod
    def _missing_key(codec: _Codec, blocks: np.ndarray) -> str:
        where = np.argwhere(np.isnan(blocks))
        if not where.size:
            return "a head operator"
        r_i, b, code = where[0]
        r = int(codec.res[r_i])
        s, i = divmod(int(b), MAX_DEPTH)
        size = stage_input_sizes(r, codec.spec)[s]
        size = size if i == 0 else conv_out(size, codec.spec.stages[s].stride)
        k, e = codec.ks[code // codec.e.size], codec.e[code % codec.e.size]
        return f"e.g. {block_op(codec.spec, s, i, size, int(k), int(e)).key} at r={r}"

    def __call__(self, g: np.ndarray) -> np.ndarray:
        r = g[:, _R]
        idx = (r * self._stride)[:, None] + self._offset + self.codec.codes(g)
        return self.flat.take(idx).sum(axis=1) + self.fixed[r]

    def smallest(self) -> np.ndarray:
        return _smallest_genes(self.blocks, self.codec)


def _smallest_genes(blocks: np.ndarray, c: _Codec) -> np.ndarray:
    """Genes of the subnet minimizing an additive per-block quantity ``blocks`` (R, 20, n_codes) at each
    resolution (exact: per-block minima, then the best depth of each stage; the fixed part does not depend on
    them)."""
    rows = np.zeros((c.res.size, N_GENES), dtype=np.int64)
    best = blocks.argmin(axis=2)  # (R, 20)
    rows[:, _KS], rows[:, _E] = best // c.e.size, best % c.e.size
    prefix = blocks.min(axis=2).reshape(c.res.size, N_STAGES, MAX_DEPTH).cumsum(axis=2)
    rows[:, _D] = prefix[:, :, c.d - 1].argmin(axis=2)
    rows[:, _R] = np.arange(c.res.size)
    return rows


class EvolutionSearch:
    """Evolutionary search maximizing ``accuracy.predict`` subject to ``constraints``.

    >>> result = EvolutionSearch(acc, [Constraint("latency", lut, 25.0, "ms", table)], SearchConfig()).run(seed=1)
    """

    def __init__(self, accuracy: Any, constraints: Sequence[Constraint], config: SearchConfig | None = None):
        if not callable(getattr(accuracy, "predict", None)):
            raise UserError("accuracy predictor: expected an object with predict(archs)")
        self.accuracy = accuracy
        self.constraints = list(constraints)
        self.config = config or SearchConfig()
        self.config.validate()
        for c in self.constraints:
            if not callable(getattr(c.predictor, "predict", None)):
                raise UserError(f"{c.name}: expected a predictor with predict(archs)")
            if not isinstance(c.bound, (int, float, np.integer, np.floating)) or np.isnan(c.bound):
                raise UserError(f"{c.name}: bound must be a number, got {c.bound!r}")
        self.spec = space_for_width(self.config.width)
        self.codec = _Codec(self.spec, self.config.resolutions)
        self._bounds = np.array([c.bound for c in self.constraints], dtype=np.float64)
        self._evals: list[Callable[[np.ndarray], np.ndarray]] = []
        self._tables: list[_TableEval | None] = []
        for c in self.constraints:
            te = _TableEval(c, self.codec) if c.table is not None else None
            if te is not None:
                self._check_table(c, te)
                self._evals.append(te)
            else:
                self._evals.append(lambda g, c=c: c.evaluate(self.codec.batch(g)))
            self._tables.append(te)
        self.evaluations = 0

    def _check_table(self, c: Constraint, te: _TableEval) -> None:
        g = np.concatenate([self.codec.sample(np.random.default_rng(1), 32), te.smallest()])
        want = c.evaluate(self.codec.batch(g))
        if not np.allclose(te(g), want, rtol=1e-6, atol=1e-9):
            raise UserError(f"{c.name}: its table does not match its predictor")

    # --- constraints ----------------------------------------------------------------------------
    def values(self, g: np.ndarray) -> np.ndarray:
        """(N, C) constraint values of a gene matrix."""
        if not self._evals:
            return np.zeros((g.shape[0], 0))
        return np.stack([f(g) for f in self._evals], axis=1)

    def _feasible(self, g: np.ndarray) -> np.ndarray:
        ok = np.ones(g.shape[0], dtype=bool)
        for f, bound in zip(self._evals, self._bounds):
            ok &= f(g) <= bound
        return ok

    def _bounds_text(self) -> str:
        return " and ".join(f"{c.name} <= {c.describe(c.bound)}" for c in self.constraints)

    def smallest(self, i: int) -> tuple[float, np.ndarray]:
        """(smallest value of constraint ``i`` over the space at the searched resolutions, genes of the
        smallest subnet per resolution). Exact with a table, else over the smallest uniform configs."""
        te, c = self._tables[i], self.codec
        if te is not None:
            cand = te.smallest()
        else:
            kk, ee, rr = np.meshgrid(np.arange(c.ks.size), np.arange(c.e.size), np.arange(c.res.size),
                                     indexing="ij")
            cand = np.zeros((kk.size, N_GENES), dtype=np.int64)
            cand[:, _KS], cand[:, _E], cand[:, _R] = kk.reshape(-1, 1), ee.reshape(-1, 1), rr.reshape(-1)
            cand[:, _D] = int(np.argmin(c.d))
        v = self._evals[i](cand)
        order = np.argsort(v, kind="stable")
        return float(v[order[0]]), cand[order[: c.res.size]]

    def check_feasible(self) -> np.ndarray:
        """Raise :class:`UserError` if a constraint cannot be met, naming its smallest achievable value; return
        the smallest subnets (per constraint, and of the bound-weighted sum of table constraints) meeting all."""
        cands = []
        for i, c in enumerate(self.constraints):
            v, cand = self.smallest(i)
            if v > c.bound:
                how = "" if self._tables[i] is not None else " among the smallest configs"
                res = ", ".join(map(str, self.codec.res.tolist()))
                raise UserError(f"{c.name} <= {c.describe(c.bound)} cannot be met: the smallest achievable{how} "
                                f"is {c.describe(v)} (resolutions {res})")
            cands.append(cand)
        tables = [(te, b) for te, b in zip(self._tables, self._bounds) if te is not None]
        if len(tables) > 1 and all(b > 0 for _, b in tables):  # exact minimum of sum(value / bound)
            cands.append(_smallest_genes(sum(te.blocks / b for te, b in tables), self.codec))
        if not cands:
            return np.empty((0, N_GENES), dtype=np.int64)
        cand = np.concatenate(cands)
        return cand[self._feasible(cand)]

    # --- the evolution ----------------------------------------------------------------------------
    def _draw(self, n_slots: int, make: Callable[[np.ndarray], np.ndarray], fallback: np.ndarray) -> np.ndarray:
        """Fill ``n_slots`` child slots, each with the first feasible of its candidates (``make(slots)`` gives one
        candidate per entry of ``slots``); empty slots are re-drawn, as in OFA's draw-until-feasible loops, with
        more candidates per slot in later rounds. Where OFA would loop forever (after ``max_rounds``), a slot
        takes its row of ``fallback`` (its feasible parent)."""
        out = fallback.copy()
        todo = np.arange(n_slots)
        for rnd in range(self.config.max_rounds):
            per_slot = 4 if rnd == 0 else 16
            cand = make(np.repeat(todo, per_slot))
            ok = self._feasible(cand).reshape(todo.size, per_slot)
            has = ok.any(axis=1)
            rows = np.flatnonzero(has)
            out[todo[rows]] = cand[rows * per_slot + ok[rows].argmax(axis=1)]
            todo = todo[~has]
            if not todo.size:
                break
        return out

    def _initial(self, rng: np.random.Generator, seeds: np.ndarray) -> np.ndarray:
        """OFA's initial population: random subnets that meet the constraints, after the feasible ``seeds``."""
        n, cfg = self.config.population, self.config
        parts = [seeds[self._feasible(seeds)]]
        count = parts[0].shape[0]
        for _ in range(cfg.max_rounds):
            if count >= n:
                break
            cand = self.codec.sample(rng, max(4 * n, 1024))
            parts.append(cand[self._feasible(cand)])
            count += parts[-1].shape[0]
        pool = np.concatenate(parts)
        if pool.shape[0] == 0:
            raise UserError(f"the constraints cannot be met together: no subnet found with {self._bounds_text()}")
        if pool.shape[0] < n:  # tight constraints: fill up with mutations of what was found
            base = pool
            idx = np.arange(n - base.shape[0]) % base.shape[0]
            extra = self._draw(idx.size, lambda slots: self.codec.mutate(
                rng, base[idx[slots]], cfg.mutate_prob, cfg.resolution_mutate_prob), base[idx])
            pool = np.concatenate([base, extra])
        return pool[:n]

    def _predict(self, g: np.ndarray, cache: dict[int, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(accuracy, canonical keys) of every row; with ``cache`` (then keys are computed), each distinct
        subnet is predicted once per search."""
        if cache is None:
            self.evaluations += g.shape[0]
            return self._call_accuracy(g), None
        keys = self.codec.keys(g)
        get = cache.get
        out = np.array([get(k, np.nan) for k in keys.tolist()], dtype=np.float64)
        miss = np.flatnonzero(np.isnan(out))
        if miss.size:
            uk, first, inv = np.unique(keys[miss], return_index=True, return_inverse=True)
            vals = self._call_accuracy(g[miss[first]])
            self.evaluations += uk.size
            cache.update(zip(uk.tolist(), vals.tolist()))
            out[miss] = vals[inv.reshape(-1)]
        return out, keys

    def _call_accuracy(self, g: np.ndarray) -> np.ndarray:
        out = np.asarray(self.accuracy.predict(self.codec.batch(g)), dtype=np.float64).reshape(-1)
        if out.shape[0] != g.shape[0]:
            raise UserError(f"accuracy predictor: returned {out.shape[0]} values for {g.shape[0]} subnets")
        return out

    @staticmethod
    def _select(acc: np.ndarray, keys: np.ndarray | None, n: int) -> np.ndarray:
        """Indices of the ``n`` best rows (distinct canonical subnets when ``keys`` are given), best first."""
        order = np.argsort(-acc, kind="stable")
        if keys is not None:
            _, first = np.unique(keys[order], return_index=True)
            order = order[np.sort(first)]
        return order[:n]

    def run(self, seed: int | None = 0, seeds: "ArchBatch | Sequence[ArchConfig] | None" = None) -> SearchResult:
        """Search with a numpy ``Generator`` seeded by ``seed``; ``seeds`` are subnets put into the first
        population (those that meet the constraints), e.g. the best of a search under a tighter bound."""
        t0 = time.perf_counter()
        cfg, codec = self.config, self.codec
        rng = np.random.default_rng(seed)
        self.evaluations = 0
        smallest = self.check_feasible()
        seed_genes = np.empty((0, N_GENES), dtype=np.int64)
        sb = as_batch(seeds) if seeds is not None and len(seeds) else None
        if sb is not None:
            if sb.width != self.spec.width_mult:
                raise UserError(f"seeds: width {sb.width} differs from the search's {self.spec.width_mult}")
            in_res = np.flatnonzero(np.isin(sb.r, codec.res))
            if in_res.size:
                seed_genes = codec.genes(sb[in_res], "seeds")
        cache: dict[int, float] | None = {} if cfg.unique else None
        pop = self._initial(rng, np.concatenate([seed_genes, smallest]))
        acc, keys = self._predict(pop, cache)
        n_par = max(1, int(round(cfg.parent_ratio * cfg.population)))
        n_mut = int(round(cfg.mutation_ratio * cfg.population))
        n_cross = cfg.population - n_mut
        history = np.empty(cfg.generations + 1)
        p, pr = cfg.mutate_prob, cfg.resolution_mutate_prob
        for gen in range(cfg.generations):
            sel = self._select(acc, keys, n_par)
            parents, parents_acc = pop[sel], acc[sel]
            history[gen] = parents_acc[0]
            k = parents.shape[0]
            pick = rng.integers(0, k, n_mut + 2 * n_cross)
            mut_par, cross_a, cross_b = pick[:n_mut], pick[n_mut::2], pick[n_mut + 1::2]

            def make(slots: np.ndarray) -> np.ndarray:
                m = slots[slots < n_mut]
                c = slots[slots >= n_mut] - n_mut
                return np.concatenate([codec.mutate(rng, parents[mut_par[m]], p, pr),
                                       codec.crossover(rng, parents[cross_a[c]], parents[cross_b[c]])])

            kids = self._draw(cfg.population, make, parents[np.concatenate([mut_par, cross_a])])
            kids_acc, kids_keys = self._predict(kids, cache)
            pop = np.concatenate([parents, kids])
            acc = np.concatenate([parents_acc, kids_acc])
            keys = None if keys is None else np.concatenate([keys[sel], kids_keys])
        order = self._select(acc, keys, len(pop))
        pop, acc = pop[order], acc[order]
        history[cfg.generations] = acc[0]
        best_g, best_acc = pop[0], float(acc[0])
        if cfg.local_search:
            best_g, best_acc = self._local_search(best_g, best_acc, cache)
            if best_acc > acc[0]:
                pop, acc = np.concatenate([best_g[None], pop]), np.r_[best_acc, acc]
                history[cfg.generations] = best_acc
        b = codec.batch(best_g[None])
        values = {c.name: float(v) for c, v in zip(self.constraints, self.values(best_g[None])[0])}
        return SearchResult(b.to_configs()[0], best_acc, values, history, self.evaluations,
                            time.perf_counter() - t0, codec.batch(pop), acc)

    # --- local search -----------------------------------------------------------------------------
    def _neighbours(self, g: np.ndarray) -> np.ndarray:
        """Distinct subnets one change away from ``g``: one active block's kernel+expand, one stage's depth (a
        block the new depth adds is tried with every kernel+expand), the resolution."""
        c = self.codec
        ke = np.stack(np.divmod(np.arange(c.n_codes), c.e.size), axis=1)  # (n_codes, 2) kernel, expand indices
        d = c.d[g[_D]]
        out = []
        for s in range(N_STAGES):
            for i in range(d[s]):
                blk = np.repeat(g[None], c.n_codes, 0)
                blk[:, s * MAX_DEPTH + i], blk[:, N_BLOCKS + s * MAX_DEPTH + i] = ke[:, 0], ke[:, 1]
                out.append(blk)
            for di, dv in enumerate(c.d):
                if dv < d[s]:
                    dep = g[None].copy()
                    dep[:, _D.start + s] = di
                    out.append(dep)
                elif dv > d[s]:
                    dep = np.repeat(g[None], c.n_codes, 0)
                    dep[:, _D.start + s] = di
                    new = s * MAX_DEPTH + np.arange(d[s], dv)
                    dep[:, new] = ke[:, :1]
                    dep[:, N_BLOCKS + new] = ke[:, 1:]
                    out.append(dep)
        res = np.repeat(g[None], c.res.size, 0)
        res[:, _R] = np.arange(c.res.size)
        out.append(res)
        nb = np.concatenate(out)
        keys = c.keys(nb)
        _, first = np.unique(keys, return_index=True)
        first = np.sort(first)
        return nb[first[keys[first] != c.keys(g[None])[0]]]

    def _local_search(self, g: np.ndarray, acc: float, cache: dict[int, float] | None, max_steps: int = 100,
                      n_pairs: int = 16) -> tuple[np.ndarray, float]:
        """Hill-climb from ``g``: take the best feasible single change that raises accuracy; when there is none,
        combine each of the ``n_pairs`` best infeasible single changes with every single change after it."""
        for _ in range(max_steps):
            nb = self._neighbours(g)
            a = self._predict(nb, cache)[0]
            ok = self._feasible(nb)
            if (ok & (a > acc)).any():
                i = int(np.argmax(np.where(ok, a, -np.inf)))
                g, acc = nb[i], float(a[i])
                continue
            up = np.flatnonzero(~ok & (a > acc))
            if up.size == 0:
                break
            up = up[np.argsort(-a[up], kind="stable")[:n_pairs]]
            pairs = np.concatenate([self._neighbours(u) for u in nb[up]])
            pairs = pairs[self._feasible(pairs)]
            pa = self._predict(pairs, cache)[0]
            if pa.size == 0 or pa.max() <= acc:
                break
            i = int(np.argmax(pa))
            g, acc = pairs[i], float(pa[i])
        return g, acc


def sweep(accuracy: Any, constraints: Sequence[Constraint], bounds: Sequence[float], index: int = 0,
          config: SearchConfig | None = None, seed: int | None = 0) -> list[SearchResult]:
    """The accuracy-vs-bound front of constraint ``index``: one search per bound, in increasing order, each
    seeded with the best subnets found so far (they meet every larger bound); then each bound's answer is the
    most accurate subnet of all final populations that meets it. Accuracy never drops as the bound grows.
    Returns one result per bound, in increasing order of bound."""
    if not constraints or not 0 <= index < len(constraints):
        raise UserError(f"sweep: constraint index {index} out of range")
    if not len(bounds):
        raise UserError("sweep: no bounds")
    results: list[SearchResult] = []
    carry: ArchBatch | None = None
    ordered = sorted(float(b) for b in bounds)
    for bound in ordered:
        cons = list(constraints)
        c = cons[index]
        cons[index] = Constraint(c.name, c.predictor, bound, c.unit, c.table)
        res = EvolutionSearch(accuracy, cons, config).run(seed, seeds=carry)
        results.append(res)
        top = res.population[: max(1, len(res.population) // 4)]
        carry = top if carry is None else ArchBatch.concat([top, carry])[: 2 * len(top)]
    # every final population met the other bounds and its own bound on this one: pool them
    pool = ArchBatch.concat([r.population for r in results])
    pool_acc = np.concatenate([r.population_accuracy for r in results])
    swept = constraints[index].evaluate(pool)
    for i, (bound, res) in enumerate(zip(ordered, results)):
        fits = np.flatnonzero(swept <= bound)
        j = fits[np.argmax(pool_acc[fits])]
        if pool_acc[j] > res.accuracy:
            arch = pool[j]
            values = {c.name: float(c.evaluate(arch)[0]) for c in constraints}
            results[i] = SearchResult(arch.to_configs()[0], float(pool_acc[j]), values, res.history,
                                      res.evaluations, res.seconds, res.population, res.population_accuracy)
    return results
