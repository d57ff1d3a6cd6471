"""Search over plans: simulated annealing with structured moves, and an exact search.

A state gives every call one candidate layout (an index into its `CallSpace`). The
energy is the simulated steady-state iteration time; a state whose devices run out of
memory gets its time multiplied by `2 + 10 x overflow ratio`, so a chain can walk
through it but it is never returned. The result is the best feasible state of all
states simulated.

Annealing: a proposal that is not worse is always accepted; a worse one with
probability exp(-(E_new / E_cur - 1) / T), relative to the current energy, with T
cooling geometrically from `t_start` to `t_end` over a round (ReaLHF's released search
rounded this test so that small worsenings were always accepted). Moves: change the
strategy on the same mesh, move a call (or every call of its model) to another mesh,
colocate two calls (same placement when possible), separate two calls (move one off the
other's devices, or give them the two halves of one mesh so they run side by side), swap
the meshes of two calls.

Rounds: the search is a fixed sequence of rounds, each an annealing chain followed by a
greedy polish of the chain's best state (one call at a time, every candidate, fastest
first), with its own budget: `round_s` for the first two rounds, doubling every two
rounds after. Round 0 starts from the given starts' best (e.g. the best heuristic plan)
or, without starts, from the fastest layout per call; round 1 from the fastest layouts;
later rounds alternate between the best state so far (reheated) and a random start
(each call's fastest layout on a random mesh). The sequence does not depend on the total
budget: a larger budget runs more of the same sequence, so it simulates a superset of
the states a smaller one simulates, and its plan is never worse (same seed).

Budget and determinism: the budget is counted in *work units*, not seconds. A unit is a
reference microsecond: the simulator charges each simulation and each move it prices
(`planner.simulator`: fitted on one core of the development machine, so a nominal
second takes about a second there), a cached state or a failed proposal costs
`CACHED_UNITS`. `time_budget_s x units_per_second` units in all, so the same seed and
budget give the same plan on any machine. A wall-clock guard stops the search at
max(`wall_clock_factor x time_budget_s`, `time_budget_s + wall_clock_slack_s`); if it
fires the result says so (`SearchStats.wall_clock_stop`) and is then not reproducible.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.errors import PlanError
from planner.simulator import SimResult, Simulator
from planner.space import CallSpace, Candidate

CACHED_UNITS = 6.0
"""Work units of a proposal whose state was simulated before, or that does not apply."""
FEASIBLE_GRACE = 20.0
"""While no feasible plan was found, the search goes on up to this many times its budget."""


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """Budget, seed and schedule of the annealing search."""

    time_budget_s: float = 20.0
    """Nominal search time; converted to deterministic work units (see module docstring)."""
    seed: int = 0
    """Seed of every round's random stream."""
    round_s: float = 0.02
    """Nominal seconds of each of the first two rounds; the rounds double every two after."""
    units_per_second: float = 1.0e6
    """Work units per nominal second; units are reference microseconds (see module docstring)."""
    t_start: float = 0.05
    """Initial temperature of a round: a 5% worsening is accepted with probability 1/e."""
    t_end: float = 1e-4
    """Final temperature of a round."""
    polish_share: float = 0.1
    """Share of each round's budget kept for its greedy polish."""
    wall_clock_factor: float = 3.0
    """Hard stop at this multiple of time_budget_s (breaks reproducibility if hit)..."""
    wall_clock_slack_s: float = 30.0
    """...but never sooner than this many seconds past the budget (small budgets, busy CPUs)."""

    def __post_init__(self) -> None:
        if not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if not self.round_s > 0:
            raise ValueError(f"round_s must be > 0, got {self.round_s}")
        if not 0 < self.t_end <= self.t_start:
            raise ValueError(f"need 0 < t_end <= t_start, got t_start={self.t_start} t_end={self.t_end}")
        if not 0 <= self.polish_share < 1:
            raise ValueError(f"polish_share must be in [0, 1), got {self.polish_share}")
        if self.units_per_second <= 0 or self.wall_clock_factor < 1:
            raise ValueError("units_per_second must be > 0 and wall_clock_factor >= 1")

    def round_units(self, r: int) -> float:
        """Work units of round r (independent of the total budget)."""
        return self.round_s * self.units_per_second * 2 ** (r // 2)


@dataclass(frozen=True, kw_only=True)
class SearchStats:
    """How the search went."""

    num_steps: int
    num_evaluations: int
    """Distinct states simulated."""
    num_accepted: int
    chain_best: tuple[float, ...]
    """Best feasible energy each round found (inf when none)."""
    units: float = 0.0
    """Work units spent."""
    trace: tuple[tuple[float, float, float], ...]
    """(wall seconds, work units, best feasible iteration time) at each improvement."""
    wall_s: float
    wall_clock_stop: bool


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """The best state found."""

    choice: tuple[int, ...]
    """Candidate index per call, in `graph.calls` order."""
    candidates: tuple[Candidate, ...]
    sim: SimResult
    stats: SearchStats


class Problem:
    """Candidates, move tables and the energy cache of one search."""

    def __init__(self, sim: Simulator, spaces: Mapping[str, CallSpace]) -> None:
        self.sim = sim
        self.names = [c.name for c in sim.calls]
        missing = [n for n in self.names if n not in spaces or not spaces[n].candidates]
        if missing:
            raise PlanError(f"no feasible candidate for call(s) {', '.join(missing)}")
        self.cands: list[tuple[Candidate, ...]] = [spaces[n].candidates for n in self.names]
        self.by_mesh: list[dict[tuple, list[int]]] = []
        self.by_key: list[dict[tuple, int]] = []
        for cands in self.cands:
            mesh_map: dict[tuple, list[int]] = {}
            key_map: dict[tuple, int] = {}
            for j, c in enumerate(cands):  # fastest first, so [0] of a group is its fastest
                mesh_map.setdefault(c.key[0], []).append(j)
                key_map.setdefault(c.key, j)
            self.by_mesh.append(mesh_map)
            self.by_key.append(key_map)
        self.meshes = [list(m) for m in self.by_mesh]
        models = [c.model for c in sim.calls]
        self.same_model = [[k for k, m in enumerate(models) if m == models[i]] for i in range(len(models))]
        self.cache: dict[tuple[int, ...], tuple[float, bool]] = {}
        self.units = 0.0
        self.num_evaluations = 0
        self.tracker: _Tracker | None = None
        """Offered every state simulated (the search's best is the best of them all)."""

    def add(self, i: int, cand: Candidate) -> int:
        """Append a candidate to call i's list (e.g. a heuristic's layout); its index."""
        j = len(self.cands[i])
        self.cands[i] = (*self.cands[i], cand)
        group = self.by_mesh[i].setdefault(cand.key[0], [])
        if not group:
            self.meshes[i].append(cand.key[0])
        group.append(j)
        self.by_key[i].setdefault(cand.key, j)
        return j

    def state_cands(self, state: Sequence[int]) -> list[Candidate]:
        return [self.cands[i][j] for i, j in enumerate(state)]

    def energy(self, state: tuple[int, ...]) -> tuple[float, bool]:
        hit = self.cache.get(state)
        if hit is not None:
            self.units += CACHED_UNITS
            return hit
        cands = self.state_cands(state)
        self.num_evaluations += 1
        spent = self.sim.work_units
        res = self.sim.simulate(cands)
        self.units += self.sim.work_units - spent  # the simulation and the moves it priced
        e = res.iteration_time_s
        if not res.feasible:
            e *= 2.0 + 10.0 * res.overflow_ratio
        hit = (e, res.feasible)
        self.cache[state] = hit
        if self.tracker is not None:
            self.tracker.offer(state, e, res.feasible)
        return hit

    # ------------------------------------------------------------------ moves

    def _on_mesh(self, rng: random.Random, i: int, mesh: tuple, like: tuple | None) -> int | None:
        if like is not None:
            j = self.by_key[i].get((mesh, *like[1:]))
            if j is not None:
                return j
        group = self.by_mesh[i].get(mesh)
        if not group:
            return None
        return group[0] if rng.random() < 0.5 else rng.choice(group)

    def propose(self, rng: random.Random, state: tuple[int, ...]) -> tuple[int, ...] | None:
        """A random structured move from `state`; None when the drawn move does not apply."""
        n = len(state)
        move = rng.randrange(7) if n > 1 else rng.randrange(3)
        i = rng.randrange(n)
        if move == 0:
            return self.change_strategy(rng, state, i)
        if move == 1:
            return self.change_mesh(rng, state, i)
        if move == 2:
            return self.move_model(rng, state, i)
        k = rng.randrange(n - 1)
        k += k >= i
        return (self.colocate, self.separate, self.split, self.swap)[move - 3](rng, state, i, k)

    @staticmethod
    def _set(state: tuple[int, ...], changes: dict[int, int]) -> tuple[int, ...] | None:
        new = list(state)
        for i, j in changes.items():
            new[i] = j
        out = tuple(new)
        return None if out == state else out

    def change_strategy(self, rng: random.Random, state: tuple[int, ...], i: int) -> tuple[int, ...] | None:
        """Call i takes another strategy (or micro-batch count) on the same mesh."""
        group = self.by_mesh[i][self.cands[i][state[i]].key[0]]
        return self._set(state, {i: rng.choice(group)}) if len(group) > 1 else None

    def change_mesh(self, rng: random.Random, state: tuple[int, ...], i: int) -> tuple[int, ...] | None:
        """Call i moves to another mesh (its fastest layout there, or a random one)."""
        meshes = self.meshes[i]
        j = self._on_mesh(rng, i, meshes[rng.randrange(len(meshes))], None)
        return None if j is None else self._set(state, {i: j})

    def move_model(self, rng: random.Random, state: tuple[int, ...], i: int) -> tuple[int, ...] | None:
        """Every call on call i's model moves to one other mesh, keeping strategies it can."""
        meshes = self.meshes[i]
        mesh = meshes[rng.randrange(len(meshes))]
        changes = {}
        for k in self.same_model[i]:
            j = self._on_mesh(rng, k, mesh, self.cands[k][state[k]].key)
            if j is None:
                return None
            changes[k] = j
        return self._set(state, changes)

    def colocate(self, rng: random.Random, state: tuple[int, ...], i: int, k: int) -> tuple[int, ...] | None:
        """Call k joins call i's mesh, with i's strategy when k has it."""
        cur = self.cands[i][state[i]]
        j = self._on_mesh(rng, k, cur.key[0], cur.key)
        return None if j is None else self._set(state, {k: j})

    def separate(self, rng: random.Random, state: tuple[int, ...], i: int, k: int) -> tuple[int, ...] | None:
        """Call k moves to a mesh that shares no device with call i's."""
        taken = set(self.cands[i][state[i]].key[0])
        free = [m for m in self.meshes[k] if taken.isdisjoint(m)]
        if not free:
            return None
        j = self._on_mesh(rng, k, free[rng.randrange(len(free))], None)
        return None if j is None else self._set(state, {k: j})

    def split(self, rng: random.Random, state: tuple[int, ...], i: int, k: int) -> tuple[int, ...] | None:
        """Calls i and k take the two halves of call i's mesh (so they can run side by side)."""
        halves = _halves(self.cands[i][state[i]].key[0], self.sim.cost.cluster.devices_per_node)
        if halves is None:
            return None
        first, second = halves if rng.random() < 0.5 else halves[::-1]
        a = self._on_mesh(rng, i, first, None)
        b = self._on_mesh(rng, k, second, None)
        return None if a is None or b is None else self._set(state, {i: a, k: b})

    def swap(self, rng: random.Random, state: tuple[int, ...], i: int, k: int) -> tuple[int, ...] | None:
        """Calls i and k exchange meshes (each keeps its strategy where it can)."""
        ci, ck = self.cands[i][state[i]], self.cands[k][state[k]]
        if ci.key[0] == ck.key[0]:
            return None
        a = self._on_mesh(rng, i, ck.key[0], ci.key)
        b = self._on_mesh(rng, k, ci.key[0], ck.key)
        return None if a is None or b is None else self._set(state, {i: a, k: b})


def _halves(mesh: tuple[int, ...], devices_per_node: int) -> tuple[tuple, tuple] | None:
    """The two halves of a mesh: whole nodes when it spans several, else two equal blocks."""
    size = len(mesh)
    if size < 2:
        return None
    if size > devices_per_node and size % devices_per_node == 0:
        cut = (size // devices_per_node // 2) * devices_per_node
    elif size % 2 == 0:
        cut = size // 2
    else:
        return None
    return mesh[:cut], mesh[cut:]


class _Tracker:
    def __init__(self, problem: Problem, t0: float) -> None:
        self.problem = problem
        self.t0 = t0
        self.best: tuple[int, ...] | None = None
        self.best_e = math.inf
        self.trace: list[tuple[float, float, float]] = []

    def offer(self, state: tuple[int, ...], e: float, feasible: bool) -> None:
        if feasible and e < self.best_e:
            self.best, self.best_e = state, e
            self.trace.append((time.perf_counter() - self.t0, self.problem.units, e))


def accept_probability(e_new: float, e_cur: float, temp: float) -> float:
    """Metropolis acceptance relative to the current energy: exp(-(e_new / e_cur - 1) / temp)."""
    if e_new <= e_cur:
        return 1.0
    if math.isinf(e_new) or e_cur <= 0:
        return 0.0
    return math.exp(-(e_new / e_cur - 1.0) / temp)


class _Round:
    """Limits of one round: its own units (which set its cooling), the total's end, the clock."""

    def __init__(self, problem: Problem, units: float, stop_at: float, deadline: float) -> None:
        self.problem = problem
        self.begin = problem.units
        self.units = units
        self.stop_at = stop_at
        self.deadline = deadline
        self.wall_stop = False

    def spent(self) -> float:
        return self.problem.units - self.begin

    def over(self, units: float, steps: int) -> bool:
        """Whether `units` of this round (or the total budget, or the clock) are used up."""
        if self.problem.units >= self.stop_at or self.spent() >= units:
            return True
        if steps % 64 == 0 and time.perf_counter() > self.deadline:
            self.wall_stop = True
            return True
        return False


def _anneal(problem: Problem, start: tuple[int, ...], rng: random.Random, lim: _Round,
            opts: SearchOptions) -> tuple[tuple[int, ...] | None, float, int, int]:
    """One chain over the round's annealing share; (best feasible state, its energy, steps, accepted)."""
    state = start
    e, ok = problem.energy(state)
    best, best_e = (state, e) if ok else (None, math.inf)
    steps = accepted = 0
    units = lim.units * (1 - opts.polish_share)
    ratio = opts.t_end / opts.t_start
    while not lim.over(units, steps):
        steps += 1
        temp = opts.t_start * ratio ** (lim.spent() / units)
        cand = problem.propose(rng, state)
        if cand is None:
            problem.units += CACHED_UNITS
            continue
        e_new, ok_new = problem.energy(cand)
        if ok_new and e_new < best_e:
            best, best_e = cand, e_new
        if e_new <= e or rng.random() < accept_probability(e_new, e, temp):
            state, e = cand, e_new
            accepted += 1
    return best, best_e, steps, accepted


def _polish(problem: Problem, state: tuple[int, ...], e: float, lim: _Round) -> None:
    """Greedy from `state`: one call at a time, every candidate (fastest first), while it improves."""
    improved = True
    steps = 0
    while improved:
        improved = False
        for i in range(len(state)):
            for j in range(len(problem.cands[i])):
                steps += 1
                if lim.over(lim.units, steps):
                    return
                if j == state[i]:
                    continue
                trial = state[:i] + (j,) + state[i + 1:]
                e_new, ok = problem.energy(trial)
                if ok and e_new < e * (1 - 1e-12):
                    state, e, improved = trial, e_new, True


def fastest_state(problem: Problem) -> tuple[int, ...]:
    """The fastest layout of every call (candidates are sorted fastest first)."""
    return tuple(0 for _ in problem.cands)


def _round_start(problem: Problem, r: int, seeds: list[tuple[int, ...]], rng: random.Random) -> tuple[int, ...]:
    """Round 0: the best given start (or the fastest layouts); 1: the fastest layouts (or a
    random start); then the best state so far and a random start, in turn."""
    if r == 0:
        if not seeds:
            return fastest_state(problem)
        return min(seeds, key=lambda st: problem.energy(st)[0])
    if r == 1:
        return fastest_state(problem) if seeds else _random_start(problem, rng)
    tracker = problem.tracker
    if r % 2 == 0 and tracker is not None and tracker.best is not None:
        return tracker.best
    return _random_start(problem, rng)


def anneal_search(sim: Simulator, spaces: Mapping[str, CallSpace],
                  starts: Sequence[Sequence[Candidate]] = (),
                  options: SearchOptions | None = None) -> SearchResult:
    """Rounds of simulated annealing and polish from `starts` (e.g. heuristic plans), the
    fastest layouts and random starts, until the budget is spent (see the module docstring)."""
    opts = options or SearchOptions()
    problem = Problem(sim, spaces)
    t0 = time.perf_counter()
    deadline = t0 + max(opts.wall_clock_factor * opts.time_budget_s,
                        opts.time_budget_s + opts.wall_clock_slack_s)
    tracker = problem.tracker = _Tracker(problem, t0)
    total = opts.time_budget_s * opts.units_per_second
    seeds = [st for st in (_state_of(problem, s) for s in starts) if st is not None]
    steps = accepted = 0
    round_best: list[float] = []
    wall_stop = False
    r = 0
    # past the budget only while nothing feasible was found (then the same rounds as a larger
    # budget's, so the superset property holds), and at most FEASIBLE_GRACE times the budget
    while not wall_stop and (problem.units < total
                             or (tracker.best is None and problem.units < FEASIBLE_GRACE * total)):
        rng = random.Random(opts.seed * 1_000_003 + r)
        start = _round_start(problem, r, seeds, rng)
        stop_at = total if tracker.best is not None else FEASIBLE_GRACE * total
        lim = _Round(problem, opts.round_units(r), stop_at, deadline)
        best, best_e, s, a = _anneal(problem, start, rng, lim, opts)
        if best is not None:
            _polish(problem, best, best_e, lim)
        steps, accepted = steps + s, accepted + a
        round_best.append(best_e)
        wall_stop = lim.wall_stop
        r += 1
    if tracker.best is None:
        raise PlanError(_no_feasible_message(problem, seeds[0] if seeds else fastest_state(problem)))
    stats = SearchStats(num_steps=steps, num_evaluations=problem.num_evaluations,
                        num_accepted=accepted, chain_best=tuple(round_best),
                        trace=tuple(tracker.trace), wall_s=time.perf_counter() - t0,
                        wall_clock_stop=wall_stop, units=problem.units)
    return _result(problem, tracker.best, stats)


def _result(problem: Problem, state: tuple[int, ...], stats: SearchStats) -> SearchResult:
    cands = tuple(problem.state_cands(state))
    return SearchResult(choice=state, candidates=cands,
                        sim=problem.sim.simulate(cands, detail=True), stats=stats)


def _state_of(problem: Problem, cands: Sequence[Candidate]) -> tuple[int, ...] | None:
    """Indices of given candidates, adding feasible ones the space lacks; None if one is not."""
    out = []
    for i, c in enumerate(cands):
        found = next((j for j, o in enumerate(problem.cands[i]) if o.layout == c.layout), None)
        if found is None:
            if not c.estimate.feasible:
                return None
            found = problem.add(i, c)
        out.append(found)
    return tuple(out)


def _random_start(problem: Problem, rng: random.Random) -> tuple[int, ...]:
    """Fastest layout per call on a random mesh of each call."""
    out = []
    for i in range(len(problem.cands)):
        meshes = problem.meshes[i]
        out.append(problem.by_mesh[i][meshes[rng.randrange(len(meshes))]][0])
    return tuple(out)


def _no_feasible_message(problem: Problem, state: tuple[int, ...]) -> str:
    res = problem.sim.simulate(problem.state_cands(state))
    why = "; ".join(res.reasons) or "every plan tried overflows device memory"
    return (f"no feasible plan found: {why}; every call fits alone but not together: add devices "
            "or memory, or raise the search budget")


def exact_search(sim: Simulator, spaces: Mapping[str, CallSpace], *,
                 max_plans: int = 200_000) -> SearchResult:
    """Every plan of the space (memory-infeasible prefixes pruned); small instances only."""
    problem = Problem(sim, spaces)
    sizes = [len(c) for c in problem.cands]
    if math.prod(sizes) > max_plans:
        raise PlanError(
            f"exact search over {math.prod(sizes)} plans exceeds max_plans={max_plans}; use the "
            "annealing search (mode: search) or a smaller cluster"
        )
    t0 = time.perf_counter()
    tracker = _Tracker(problem, t0)
    cap = sim.cost.device_memory_bytes
    best_e = math.inf
    best: tuple[int, ...] | None = None

    def visit(prefix: tuple[int, ...]) -> None:
        nonlocal best_e, best
        depth = len(prefix)
        if depth and max(sim.memory(problem.state_cands(prefix))) > cap:
            return  # memory only grows as calls are added
        if depth == len(sizes):
            e, ok = problem.energy(prefix)
            if ok and e < best_e:
                best_e, best = e, prefix
            return
        for j in range(sizes[depth]):
            visit(prefix + (j,))

    visit(())
    if best is None:
        raise PlanError("no feasible plan exists: every combination overflows device memory")
    tracker.offer(best, best_e, True)
    stats = SearchStats(num_steps=0, num_evaluations=problem.num_evaluations, num_accepted=0,
                        chain_best=(best_e,), trace=tuple(tracker.trace),
                        wall_s=time.perf_counter() - t0, wall_clock_stop=False)
    return _result(problem, best, stats)


