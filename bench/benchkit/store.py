"""suite.json: strict JSON out, an earlier run's results back in for a partial rerun."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchkit.stamps import git_label


def clean_json(obj):
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def last_json(text: str, error: type[BaseException] = RuntimeError):
    """The last line of a command's output that is a JSON object or list; `error` if there is none."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") or line.startswith("["):
            return json.loads(line)
    raise error(f"no JSON in output:\n{text[-2000:]}")


def write_suite_json(path: Path, doc: dict) -> None:
    Path(path).write_text(json.dumps(clean_json(doc), indent=2, default=str) + "\n")


def load_suite_json(path: Path) -> dict | None:
    """An earlier run's suite.json, or None if there is none. A broken one stops the suite: overwriting it
    would lose the results it holds."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"{path} is not valid JSON ({exc}): fix or move it, or run the whole suite") from None


def backfill_stamps(doc: dict) -> None:
    """Results of a suite.json written before results were stamped get their run's date and commit."""
    m = doc.get("machine") or {}
    for res in (doc.get("results") or {}).values():
        if isinstance(res, dict) and "stamp" not in res:
            res["stamp"] = {"ran_at": m.get("date"), "git": git_label(m.get("git_commit"), m.get("git_dirty")),
                            "quick": bool(doc.get("quick")), "repeats": None, "from_run": True}


def kept_results(doc: dict | None, rerun, names) -> tuple[dict, dict]:
    """The results and timings of an earlier suite.json for the benchmarks in `names` (in that order)
    that are not in `rerun`."""
    if not doc:
        return {}, {}
    backfill_stamps(doc)
    keep = [b for b in names if b not in set(rerun)]
    results = {b: doc["results"][b] for b in keep if b in (doc.get("results") or {})}
    timings = {b: doc["timings"][b] for b in results if b in (doc.get("timings") or {})}
    return results, timings
