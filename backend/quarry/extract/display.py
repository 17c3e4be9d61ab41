"""What `quarry extract` shows: a live progress bar (rich) on stderr, and its summary."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from quarry.extract.service import ExtractResult
from quarry.runs.schemas import RunEstimate, RunOut


def money(value: float | None) -> str:
    return "unknown (the model's price is not known)" if value is None else f"${value:.4f}"


class LiveProgress:
    """A rich progress bar: pairs done of all, failures, tokens, cost so far."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def stage(self, message: str) -> None:
        self._progress.console.print(f"[bold]·[/bold] {message}", highlight=False)

    def progress(self, run: RunOut) -> None:
        counts = run.counts
        detail = (
            f"failed {counts.failed}  tokens {run.tokens_in + run.tokens_out:,}  "
            f"cost {'?' if run.cost_usd is None else f'${run.cost_usd:.4f}'}"
        )
        if self._task is None:
            self._task = self._progress.add_task("pairs", total=run.total, detail=detail)
        self._progress.update(self._task, completed=run.done, total=run.total, detail=detail)


def estimate_lines(estimate: RunEstimate) -> list[str]:
    lines = [
        f"Estimate for {estimate.documents} documents × {estimate.variables} variables = "
        f"{estimate.pairs} pairs with {estimate.model}:",
        f"  calls: {estimate.calls} (answered from the cache: {estimate.cached_pairs} pairs)",
        f"  input tokens: {estimate.estimated_input_tokens:,}",
        f"  output tokens: {estimate.estimated_output_tokens:,}",
        f"  cost: {money(estimate.estimated_cost_usd)}",
    ]
    lines += [
        f"    {v.name}: {v.estimated_input_tokens:,} in, {v.estimated_output_tokens:,} out, "
        f"{money(v.estimated_cost_usd)}"
        for v in estimate.per_variable
    ]
    return lines


def summary_lines(result: ExtractResult) -> list[str]:
    """What the user reads at the end: what was done, what was not and why, where it went."""
    lines = [f"Not read: {name}: {reason}" for name, reason in result.unreadable]
    if result.estimate is not None:
        return [*lines, *estimate_lines(result.estimate)]
    run = result.run
    if run is not None:
        c = run.counts
        lines.append(
            f"{run.done} of {run.total} pairs done: {c.succeeded} found, {c.not_found} not "
            f"stated, {c.failed} failed, {c.cancelled} not asked; "
            f"{run.tokens_in:,} tokens in, {run.tokens_out:,} out, cost {money(run.cost_usd)}."
        )
    if result.interrupted:
        lines.append("Interrupted. What was answered is kept: run the same command again to go on.")
    if result.failures:
        lines.append(f"{result.pairs_not_done} pairs have no answer:")
        lines += [f"  {count} × {reason}" for reason, count in result.failures]
    if result.written is not None:
        lines.append(f"Wrote {result.written}")
    return lines
