"""Pure statistics of the suite: medians, ratios, time-to-accuracy and ensemble bookkeeping.

Nothing here runs, reads or writes anything; tests/unit/test_bench_suite.py covers it.
"""

from __future__ import annotations

import math
import statistics

from benchkit.config import ACC_EPS, ENSEMBLE_GOAL, SINGLE_GOAL, TTA_GOAL_RATIO


def _numbers(xs) -> list:
    return [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]


def median(xs):
    """The median of the numbers in xs (None and NaN left out), or None if there are none."""
    vals = _numbers(xs)
    return statistics.median(vals) if vals else None


def percentile(xs, q):
    """The q-th percentile (0-100) of xs, interpolated linearly between the nearest ranks; None if empty."""
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(xs) -> dict:
    """values, median, min and max of the numbers in xs (None and NaN left out)."""
    vals = _numbers(xs)
    return {"values": vals, "median": statistics.median(vals) if vals else None,
            "min": min(vals) if vals else None, "max": max(vals) if vals else None}


def sub(a, b):
    """a - b, or None if either is missing."""
    return a - b if a is not None and b is not None else None


def div(a, b):
    """a / b, or None if a is missing or b is missing or zero."""
    return a / b if a is not None and b else None


# --- overhead ---------------------------------------------------------------------------------------


def pair_ratios(runs: list[dict]) -> dict:
    """Per-pair ratios digitq/bare of the overhead benchmark's runs (each has "service" and "bare"):
    wall (service wall_seconds / bare timed_seconds), epochs (train_seconds of each) and end_to_end
    (client seconds / bare process seconds), each summarized."""
    def ratios(sk, bk):
        return [div(r["service"].get(sk), r["bare"].get(bk)) for r in runs]
    return {"wall": summarize(ratios("wall_seconds", "timed_seconds")),
            "epochs": summarize(ratios("train_seconds", "train_seconds")),
            "end_to_end": summarize(ratios("client_seconds", "process_seconds"))}


def overhead_pairs(res: dict) -> dict:
    """The overhead result's per-pair ratios (recomputed from its runs for a suite.json older than them)."""
    return res["summary"].get("pairs") or pair_ratios(res["runs"])


# --- time to accuracy -------------------------------------------------------------------------------


def first_reaching(history: list[dict], target: float) -> dict | None:
    """The first history entry whose tracked test accuracy reaches target, or None."""
    return next((e for e in history if (e.get("test_accuracy") or 0) >= target - ACC_EPS), None)


def reached_thresholds(history: list[dict], thresholds) -> dict:
    """{"0.990": {"seconds": train_elapsed, "epoch": n} or None, ...}: when each accuracy was first reached."""
    out = {}
    for thr in thresholds:
        hit = first_reaching(history, thr)
        out[f"{thr:.3f}"] = {"seconds": hit.get("train_elapsed"), "epoch": hit["epoch"]} if hit else None
    return out


def tta_curve(history: list[dict]) -> list[dict]:
    """A job's history reduced to its time-to-accuracy curve."""
    return [{"epoch": e["epoch"], "train_elapsed": e.get("train_elapsed"), "test_accuracy": e.get("test_accuracy"),
             "seconds": e.get("seconds")} for e in history]


def tta_goal(cnn: dict, seed: dict, target: float, goal: float = TTA_GOAL_RATIO) -> dict:
    """Whether the cnn reached `target` at least `goal` times sooner (training seconds) than the seed-cnn.

    cnn and seed are time-to-accuracy job records ("reached", "epochs", "train_seconds"). Returns status
    "met", "NOT met" or "undecided" (the seed-cnn never reached the target and its whole run, a lower
    bound of its time to it, is less than `goal` times the cnn's), the ratio (or its lower bound) and why.
    """
    k = f"{target:.3f}"
    c, s = (cnn.get("reached") or {}).get(k), (seed.get("reached") or {}).get(k)
    if not c:
        return {"status": "NOT met", "ratio": None, "lower_bound": False,
                "why": f"the cnn did not reach {target * 100:.1f}% in {cnn['epochs']} epochs"}
    if s:
        ratio = s["seconds"] / c["seconds"]
        return {"status": "met" if ratio >= goal else "NOT met", "ratio": ratio, "lower_bound": False,
                "why": f"seed-cnn {s['seconds']:.0f} s / cnn {c['seconds']:.0f} s of training = {ratio:.1f}x"}
    bound = seed["train_seconds"] / c["seconds"]
    why = (f"the seed-cnn did not reach {target * 100:.1f}% in {seed['epochs']} epochs "
           f"({seed['train_seconds']:.0f} s of training), so the ratio is more than {bound:.1f}x")
    return {"status": "met" if bound >= goal else "undecided", "ratio": bound, "lower_bound": True, "why": why}


# --- accuracy ceiling (ensembles) -------------------------------------------------------------------


def split_members(history: list[dict]) -> dict[int, list[dict]]:
    """An ensemble job's history by member (1-based); entries without "member" belong to member 1."""
    out: dict[int, list[dict]] = {}
    for e in history or []:
        out.setdefault(int(e.get("member", 1)), []).append(e)
    return dict(sorted(out.items()))


def reaches(acc, goal: float) -> bool:
    """Whether a test accuracy (None: not measured) reaches a goal."""
    return acc is not None and acc >= goal - ACC_EPS


def ceiling_summary(result: dict, seed: int = 0) -> dict:
    """Members, their spread and the goals, from an `--ensemble K --track-test` job's result JSON."""
    per = split_members(result.get("history") or [])
    accs = list(result.get("member_accuracies") or [])
    if not accs and len(per) <= 1:  # --ensemble 1: the job's own accuracy is its one member's
        accs = [result.get("test_accuracy")]
    members = []
    for i, acc in enumerate(accs):
        hist = per.get(i + 1, [])
        tracked = [e for e in hist if e.get("test_accuracy") is not None]
        best = max(tracked, key=lambda e: e["test_accuracy"]) if tracked else None
        members.append({"member": i + 1, "seed": seed + i, "test_accuracy": acc, "epochs": len(hist),
                        "train_seconds": round(sum(e.get("seconds") or 0 for e in hist), 3),
                        "best_epoch": best["epoch"] if best else None,
                        "best_accuracy": best["test_accuracy"] if best else None,
                        "meets_single_goal": reaches(acc, SINGLE_GOAL),
                        "curve": tta_curve(hist)})
    spread = summarize(m["test_accuracy"] for m in members)
    ens = result.get("test_accuracy")
    return {"members": members, "member_median": spread["median"], "member_min": spread["min"],
            "member_max": spread["max"], "ensemble_accuracy": ens,
            "members_meeting_single_goal": sum(m["meets_single_goal"] for m in members),
            "single_goal": SINGLE_GOAL, "ensemble_goal": ENSEMBLE_GOAL,
            "single_goal_met": reaches(spread["median"], SINGLE_GOAL),
            "ensemble_goal_met": reaches(ens, ENSEMBLE_GOAL)}


def member_accuracies(job: dict) -> list:
    """A job's member test accuracies (a one-model job: its own accuracy)."""
    return list(job.get("member_accuracies") or [job.get("test_accuracy")])


def merged_history(jobs: list[dict]) -> list[dict]:
    """The jobs' histories as one, members numbered on across the jobs."""
    out, offset = [], 0
    for job in jobs:
        per = split_members(job.get("history") or [])
        out += [{**e, "member": m + offset} for m, entries in per.items() for e in entries]
        offset += len(member_accuracies(job))
    return out


def combined_ceiling_summary(jobs: list[dict], ensemble_accuracy: float | None) -> dict:
    """`ceiling_summary` over the members of several ensemble jobs combined into one model:
    members numbered on across the jobs, each with its job's augmentation and its own seed."""
    accs, seeds, recipes = [], [], []
    for job in jobs:
        own = member_accuracies(job)
        accs += own
        seeds += list(range(job.get("seed", 0), job.get("seed", 0) + len(own)))
        recipes += [{"augment": job.get("augment"), "model_flags": job.get("model_flags") or []}] * len(own)
    summary = ceiling_summary({"history": merged_history(jobs), "member_accuracies": accs,
                               "test_accuracy": ensemble_accuracy})
    for member, seed, recipe in zip(summary["members"], seeds, recipes):
        member.update(seed=seed, **recipe)
    if len(jobs) > 1:
        # The single-model goal is about `--augment` models: judge it on the affine members when
        # there are any (an elastic member is a different recipe), else on all of them.
        judged = [m for m in summary["members"] if m["augment"] == "affine"] or summary["members"]
        spread = summarize(m["test_accuracy"] for m in judged)
        summary.update(single_goal_recipe=judged[0]["augment"], single_goal_members=len(judged),
                       single_goal_median=spread["median"],
                       single_goal_meeting=sum(m["meets_single_goal"] for m in judged),
                       single_goal_met=reaches(spread["median"], SINGLE_GOAL))
    return summary


# --- queue ------------------------------------------------------------------------------------------


def latency_stats(samples: list[tuple[float, str]], runtimes: dict) -> dict:
    """Round trips (seconds, task id) summarized, next to the worker's own time for the same tasks."""
    xs = [s for s, _ in samples]
    worker = [runtimes[i] for _, i in samples if i in runtimes]
    return {"n": len(xs), "p50": percentile(xs, 50), "p99": percentile(xs, 99), "mean": statistics.mean(xs),
            "min": min(xs), "max": max(xs), "samples": xs,
            "worker_p50": percentile(worker, 50), "worker_p99": percentile(worker, 99), "worker_samples": worker}


def burst_stats(n: int, send_seconds: float, total_seconds: float, worker_seconds: list[float]) -> dict:
    """n tasks sent at once: how fast they drained, against the worker's own bound."""
    return {"n": n, "send_seconds": send_seconds, "total_seconds": total_seconds, "jobs_per_second": n / total_seconds,
            "worker_busy_seconds": sum(worker_seconds),
            "worker_bound_jobs_per_second": (len(worker_seconds) / sum(worker_seconds)) if worker_seconds else None}
