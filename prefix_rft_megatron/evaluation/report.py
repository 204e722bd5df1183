"""The results as a plain-text table (one row per benchmark, then the average) and as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict


def format_table(results: Dict[str, Any]) -> str:
    """Accuracies in percent, lengths in tokens."""
    metrics = results["metrics"]
    header = ["benchmark", "problems"] + metrics
    rows = [[name, str(r["num_problems"])] + [_fmt(m, r[m]) for m in metrics]
            for name, r in results["benchmarks"].items()]
    if len(results["benchmarks"]) > 1:
        rows.append(["average", ""] + [_fmt(m, results["average"][m]) for m in metrics])
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    s = results["settings"]
    title = (f"k={s['k']} samples/problem, temperature={s['temperature']}, top_p={s['top_p']}, "
             f"max_new_tokens={s['max_new_tokens']} (accuracy in %)")
    return "\n".join([title, line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _fmt(metric: str, value: float) -> str:
    return f"{value:.1f}" if metric == "mean_response_tokens" else f"{100 * value:.2f}"


def write_json(results: Dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return path
