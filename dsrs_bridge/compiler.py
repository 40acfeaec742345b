"""SwarmCompiler: optimize on the cheap swarm, validate on a premium LM, pick by premium score.

    compiled, report = dsrs_bridge.compile(program, trainset, metric, swarm_lm=cheap, premium_lm=premium,
                               budget_msat=50_000)

1. optimize: the optimizer (default BootstrapFewShot) runs with the swarm LM as the task
   and teacher LM; its candidates are the uncompiled program, the compiled one, and any
   `candidate_programs` the optimizer kept (random search does).
2. validate: each candidate is scored with dspy.Evaluate on the premium LM (any dspy.LM:
   an OpenAI-compatible URL, or a pylon_lm pinned to a priced provider) over `valset`
   (default: the trainset); the best premium score wins (ties: the earlier candidate).
3. budget: before each candidate's validation the compiler checks that what was spent plus
   what the last validation cost still fits `budget_msat`; when it does not, it stops and
   picks among the candidates validated so far (`report.stopped_at_budget`). The swarm LM's
   own `budget_msat` caps the optimize phase inside the optimizer.

The cost report gives msats and tokens per phase (tokens from DSPy's usage tracker; msats
from the pylon_lm's receipts, or tokens at `premium_msat_per_1k_tokens` for a non-Pylon
premium LM), and the counterfactual: the same optimization run on the premium LM alone,
i.e. the optimize phase's tokens at the premium price (given, or measured in the validate
phase as msat per 1k tokens) plus the validation itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class PhaseCost:
    msat: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: "PhaseCost") -> None:
        self.msat += other.msat
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls


@dataclass
class CostReport:
    optimize: PhaseCost
    validate: PhaseCost
    premium_msat_per_1k_tokens: float
    premium_only_msat: int  # the counterfactual: optimize + validate, all at the premium price
    candidates: list[dict[str, Any]] = field(default_factory=list)  # {"index", "score", "msat"}
    chosen: int = 0
    stopped_at_budget: bool = False

    @property
    def total_msat(self) -> int:
        return self.optimize.msat + self.validate.msat

    @property
    def optimize_premium_msat(self) -> int:
        """What the optimize phase's tokens would have cost on the premium LM."""
        return round(self.optimize.tokens * self.premium_msat_per_1k_tokens / 1000)

    @property
    def saving(self) -> float:
        """The cut against premium-only, 0..1 (the whole run)."""
        return 1 - self.total_msat / self.premium_only_msat if self.premium_only_msat else 0.0

    @property
    def optimize_saving(self) -> float:
        """The cut on the optimize phase alone (what the swarm replaces)."""
        base = self.optimize_premium_msat
        return 1 - self.optimize.msat / base if base else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for phase in ("optimize", "validate"):
            out[phase]["tokens"] = getattr(self, phase).tokens
        out.update(total_msat=self.total_msat, optimize_premium_msat=self.optimize_premium_msat,
                   saving=round(self.saving, 4), optimize_saving=round(self.optimize_saving, 4))
        return out


def _spent(lm: Any) -> int | None:
    """What a pylon_lm (and its copies) paid so far, from the receipts; None for other LMs."""
    from dsrs_bridge.lm import hub_of

    try:
        return hub_of(lm).spent_msat
    except TypeError:
        return None


def _phase(tracker: Any, lm: Any, spent_before: int | None, msat_per_1k_tokens: float | None) -> PhaseCost:
    """One phase's calls and tokens (from DSPy's usage tracker) and msats: what the pylon_lm
    paid since `spent_before`, or, for another LM, its tokens at `msat_per_1k_tokens`."""
    cost = PhaseCost(calls=_calls(tracker))
    for usage in tracker.get_total_tokens().values():
        cost.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        cost.completion_tokens += int(usage.get("completion_tokens") or 0)
    spent_after = _spent(lm)
    if spent_before is not None and spent_after is not None:
        cost.msat = spent_after - spent_before
    else:
        cost.msat = round(cost.tokens * (msat_per_1k_tokens or 0) / 1000)
    return cost


def _calls(tracker: Any) -> int:
    """LM calls with usage (a pylon_lm also adds an {"msat": n} entry per call: not counted)."""
    return sum(1 for entries in tracker.usage_data.values() for e in entries if "prompt_tokens" in e)


def compile(program: Any, trainset: Sequence[Any], metric: Callable[..., Any], *, swarm_lm: Any, premium_lm: Any,
            budget_msat: int, optimizer: Any = None, valset: Sequence[Any] | None = None,
            premium_msat_per_1k_tokens: float | None = None, num_threads: int = 1) -> tuple[Any, CostReport]:
    """Compile `program` on the swarm, choose by premium validation; returns (program, report)."""
    import dspy

    if budget_msat <= 0:
        raise ValueError("budget_msat must be positive")
    if _spent(premium_lm) is None and premium_msat_per_1k_tokens is None:
        raise ValueError("a premium LM that is not a pylon_lm needs premium_msat_per_1k_tokens")
    valset = list(valset if valset is not None else trainset)
    optimizer = optimizer or dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2,
                                                   max_labeled_demos=2, max_rounds=1)

    swarm_before = _spent(swarm_lm)
    with dspy.context(lm=swarm_lm), dspy.track_usage() as tracker:
        compiled = optimizer.compile(program.deepcopy(), trainset=list(trainset))
    optimize = _phase(tracker, swarm_lm, swarm_before, premium_msat_per_1k_tokens)

    candidates = [program.deepcopy(), compiled]
    for extra in getattr(compiled, "candidate_programs", None) or []:
        candidate = extra.get("program") if isinstance(extra, dict) else None
        if candidate is not None and all(candidate is not c for c in candidates):
            candidates.append(candidate)

    validate = PhaseCost()
    scored: list[dict[str, Any]] = []
    stopped = False
    last_cost = 0
    evaluate = dspy.Evaluate(devset=valset, metric=metric, num_threads=num_threads, display_progress=False)
    for index, candidate in enumerate(candidates):
        if optimize.msat + validate.msat + last_cost > budget_msat:
            stopped = True
            break
        before = _spent(premium_lm)
        with dspy.context(lm=premium_lm), dspy.track_usage() as tracker:
            result = evaluate(candidate)
        phase = _phase(tracker, premium_lm, before, premium_msat_per_1k_tokens)
        last_cost = phase.msat
        validate.add(phase)
        scored.append({"index": index, "score": float(getattr(result, "score", result)), "msat": phase.msat,
                       "demos": sum(len(p.demos) for p in candidate.predictors())})

    rate = premium_msat_per_1k_tokens
    if rate is None:
        rate = validate.msat * 1000 / validate.tokens if validate.tokens else 0.0
    chosen = max(scored, key=lambda c: (c["score"], -c["index"]))["index"] if scored else 1
    report = CostReport(optimize=optimize, validate=validate, premium_msat_per_1k_tokens=rate,
                        premium_only_msat=round(optimize.tokens * rate / 1000) + validate.msat,
                        candidates=scored, chosen=chosen, stopped_at_budget=stopped)
    return candidates[chosen], report
