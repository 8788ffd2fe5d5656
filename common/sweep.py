"""Hyperparameter sweeps: the request, its search space, and the small records a sweep keeps in Redis.

A sweep runs N trials of one TrainRequest, at most P at once, each trial a normal training job
whose message carries `sweep = {"id": SWEEP_ID, "slot": m}` (slot 1..N). The worker that starts a
trial asks Optuna (its journal lives in Redis, one study per sweep) for the trial's parameters;
the worker that ends one enqueues the next slot (digitq.worker.sweep). The client reads only the
records below, so it never imports Optuna.

Keys (all under `digitq:sweep:<id>`):
    (hash)            request (SweepRequest JSON), state, created, finished, best (JSON), model
    :asked            counter: the last slot handed out (the client sets it to P at submit)
    :trials           hash: slot -> trial record (JSON: number, job_id, params, state, epoch, curve, ...)
    :follow:<m>       the slot enqueued when slot m ended (claimed once: a redelivery never enqueues twice)
    :sent:<m>         set once slot m's job message is on the queue
    :trial-of:<m>     the Optuna trial (JSON: number, id) of slot m, asked once
    :cancel           set by `digitq sweep cancel`
    :optuna           prefix of the Optuna journal (JournalRedisBackend)

Search-space syntax (`--param NAME=SPEC`, or a JSON/YAML object NAME: SPEC):
    loguniform:LO:HI  uniform:LO:HI   a float (learning rate, dropout, label smoothing)
    int:LO:HI  logint:LO:HI           a whole number (batch size, dense units, epochs)
    choice:A,B,C                      one of the values (conv channels as 16-32-64)
    VALUE                             fixed for every trial (any training option)
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from digitq.common.errors import InvalidRequest
from digitq.common.names import JOBS_INDEX_KEY, KEY_PREFIX, job_key
from digitq.common.schemas import TrainRequest, _spec, _Validated, train_field

PRUNERS = ("asha", "hyperband", "median", "none")
"""asha: asynchronous successive halving (the default; rungs at epochs 1, 3, 9, ..., the top third
goes on); hyperband: several ASHA brackets; median: stop a trial below the median of earlier
trials at the same epoch; none: every trial runs all its epochs."""

SAMPLERS = ("tpe", "random")

MAX_TRIALS = 500
"""Most trials a sweep runs (Optuna's journal is replayed by every worker that loads the study)."""

MAX_PARALLEL = 64

SEARCHABLE = {
    # field: (kinds allowed, short column name)
    "learning_rate": (("uniform", "loguniform", "choice"), "lr"),
    "dropout": (("uniform", "loguniform", "choice"), "drop"),
    "label_smoothing": (("uniform", "choice"), "ls"),
    "batch_size": (("int", "logint", "choice"), "bs"),
    "dense_units": (("int", "logint", "choice"), "dense"),
    "epochs": (("int", "choice"), "ep"),
    "conv_channels": (("choice",), "conv"),
    "schedule": (("choice",), "sched"),
    "augment": (("choice",), "aug"),
}
"""TrainRequest fields a sweep may search, the distributions each takes, and its short name."""

ALIASES = {"lr": "learning_rate", "batch": "batch_size", "bs": "batch_size", "channels": "conv_channels",
           "widths": "conv_channels", "dense": "dense_units", "width": "dense_units"}

FIXED_ONLY = {"arch", "seed", "name", "dataset", "validation_size", "train_size", "test_size", "standardize",
              "shuffle", "save_every_batches", "track_test", "precision", "jit"}
"""Training options a sweep takes as a fixed value only."""

TRIAL_STATES = ("queued", "running", "complete", "pruned", "failed", "cancelled")
FINAL_TRIAL_STATES = frozenset({"complete", "pruned", "failed", "cancelled"})
SWEEP_STATES = ("running", "complete", "failed", "cancelled")

SWEEP_ID_RE = re.compile(r"^sweep-[0-9a-f]{10}\Z")


# --- keys ----------------------------------------------------------------------------------------


def sweep_key(sweep_id: str) -> str:
    return f"{KEY_PREFIX}sweep:{sweep_id}"


def trials_key(sweep_id: str) -> str:
    return sweep_key(sweep_id) + ":trials"


def asked_key(sweep_id: str) -> str:
    return sweep_key(sweep_id) + ":asked"


def follow_key(sweep_id: str, slot: int) -> str:
    return f"{sweep_key(sweep_id)}:follow:{slot}"


def sent_key(sweep_id: str, slot: int) -> str:
    return f"{sweep_key(sweep_id)}:sent:{slot}"


def trial_of_key(sweep_id: str, slot: int) -> str:
    return f"{sweep_key(sweep_id)}:trial-of:{slot}"


def sweep_cancel_key(sweep_id: str) -> str:
    return sweep_key(sweep_id) + ":cancel"


def journal_prefix(sweep_id: str) -> str:
    return sweep_key(sweep_id) + ":optuna"


SWEEPS_INDEX_KEY = KEY_PREFIX + "sweeps"  # sorted set: sweep id -> submitted time


def new_sweep_id() -> str:
    return f"sweep-{uuid.uuid4().hex[:10]}"


def trial_job_id(sweep_id: str, slot: int) -> str:
    """A trial's job id: fixed by its slot, so a message sent twice is one job (its lease and
    result.json drop the duplicate)."""
    return f"{sweep_id}-{slot}"


def check_sweep_id(sweep_id: Any) -> str:
    if not isinstance(sweep_id, str) or not SWEEP_ID_RE.fullmatch(sweep_id):
        raise InvalidRequest(f"invalid sweep id {sweep_id!r}: `digitq sweep` prints one, like sweep-0123456789")
    return sweep_id


def check_sweep_ref(ref: Any) -> dict:
    """A TrainRequest's `sweep` field: {"id": SWEEP_ID, "slot": 1..MAX_TRIALS}."""
    if not isinstance(ref, dict) or set(ref) != {"id", "slot"}:
        raise InvalidRequest(f"sweep must be an object with id and slot, got {ref!r}")
    check_sweep_id(ref["id"])
    slot = ref["slot"]
    if isinstance(slot, bool) or not isinstance(slot, int) or not 1 <= slot <= MAX_TRIALS:
        raise InvalidRequest(f"sweep slot must be a whole number from 1 to {MAX_TRIALS}, got {slot!r}")
    return ref


# --- the search space ----------------------------------------------------------------------------


def _canonical(name: str) -> str:
    name = name.strip().replace("-", "_")
    return ALIASES.get(name, name)


def _number(text: str, kind, what: str):
    try:
        value = float(text) if kind is float else int(text)
    except ValueError:
        raise InvalidRequest(f"{what}: {text!r} is not a {'number' if kind is float else 'whole number'}") from None
    if kind is float and not math.isfinite(value):
        raise InvalidRequest(f"{what}: {text!r} is not a finite number")
    return value


def _choice_value(name: str, text: Any):
    """One value of a choice (or a fixed value) as the TrainRequest field takes it."""
    if not isinstance(text, str):
        if name == "conv_channels" and isinstance(text, list):
            return text
        return text
    text = text.strip()
    kind = train_field(name).metadata["kind"]
    if name == "conv_channels":
        parts = [p for p in re.split(r"[-x/ ]", text) if p]
        return [_number(p, int, f"conv_channels {text!r}") for p in parts]
    if kind is bool:
        if text.lower() in ("true", "on", "yes", "1"):
            return True
        if text.lower() in ("false", "off", "no", "0"):
            return False
        raise InvalidRequest(f"{name}: {text!r} is not true or false")
    if kind in (int, float):
        return _number(text, kind, name)
    return text


def parse_spec(name: str, spec: Any) -> tuple[str, Any]:
    """('search', distribution dict) or ('fixed', value) for one NAME=SPEC."""
    if isinstance(spec, dict):
        dist = dict(spec)
        if "type" not in dist:
            raise InvalidRequest(f"{name}: a search-space object needs a type (uniform, loguniform, int, logint, choice)")
        return "search", dist
    if isinstance(spec, list):
        return "search", {"type": "choice", "choices": spec}
    if not isinstance(spec, str):
        return "fixed", spec
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ("uniform", "loguniform", "int", "logint", "choice"):
        return "fixed", _choice_value(name, spec) if name in SEARCHABLE or name in FIXED_ONLY else spec
    if kind == "choice":
        choices = [c for c in rest.split(",") if c.strip()]
        return "search", {"type": "choice", "choices": choices}
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise InvalidRequest(f"{name}={spec}: {kind} takes two bounds, {kind}:LO:HI")
    return "search", {"type": kind, "low": bounds[0], "high": bounds[1]}


def _check_dist(name: str, dist: dict, base: dict) -> dict:
    """A distribution as stored in the SweepRequest: its values checked against TrainRequest's rules."""
    if name not in SEARCHABLE:
        if name in FIXED_ONLY or name in {f for f in base}:
            raise InvalidRequest(f"{name} cannot be searched (give it one fixed value); searchable: "
                                 f"{', '.join(SEARCHABLE)}")
        raise InvalidRequest(f"unknown training option {name!r}; searchable: {', '.join(SEARCHABLE)}")
    kinds = SEARCHABLE[name][0]
    kind = str(dist.get("type", "")).lower()
    if kind not in kinds:
        raise InvalidRequest(f"{name} takes {' or '.join(kinds)}, got {kind or 'no type'}")
    unknown = set(dist) - ({"type", "choices"} if kind == "choice" else {"type", "low", "high"})
    if unknown:
        raise InvalidRequest(f"{name}: unknown key(s) {', '.join(sorted(map(str, unknown)))} in its search space")

    def valid(value):
        try:
            TrainRequest.from_dict({**base, name: value})
        except InvalidRequest as exc:
            raise InvalidRequest(f"{name}: {exc}") from None
        return value

    if kind == "choice":
        raw = dist.get("choices")
        if not isinstance(raw, list) or not raw:
            raise InvalidRequest(f"{name}: choice needs at least one value, choice:A,B,C")
        values = [valid(_choice_value(name, c)) for c in raw]
        keys = [json.dumps(v) for v in values]
        if len(set(keys)) != len(keys):
            raise InvalidRequest(f"{name}: choice repeats a value")
        return {"type": "choice", "choices": values}
    number = int if kind in ("int", "logint") else float
    low, high = (_number(str(dist.get(k)), number, f"{name} {k}") if dist.get(k) is not None else None
                 for k in ("low", "high"))
    if low is None or high is None:
        raise InvalidRequest(f"{name}: {kind} needs low and high, {kind}:LO:HI")
    if not low < high:
        raise InvalidRequest(f"{name}: {kind}:{low}:{high} needs LO < HI")
    if kind.startswith("log") and low <= 0:
        raise InvalidRequest(f"{name}: {kind} needs LO > 0, got {low}")
    valid(low)
    valid(high)
    return {"type": kind, "low": low, "high": high}


def parse_space(params: list[str] | None = None, file_text: str | None = None, file_name: str = "space"
                ) -> tuple[dict, dict]:
    """(search space, fixed options) from `--param NAME=SPEC` strings and a JSON or YAML object.

    Names are TrainRequest fields or their short forms (lr, bs, widths); values are not checked
    here against TrainRequest's rules: SweepRequest.check does that."""
    raw: dict = {}
    if file_text is not None:
        try:
            data = json.loads(file_text)
        except ValueError:
            try:
                import yaml
            except ImportError:
                raise InvalidRequest(f"{file_name} is not JSON (YAML needs PyYAML: pip install pyyaml)") from None
            try:
                data = yaml.safe_load(file_text)
            except yaml.YAMLError as exc:
                where = getattr(exc, "problem_mark", None)
                at = f" at line {where.line + 1}" if where is not None else ""
                raise InvalidRequest(f"{file_name} is neither JSON nor YAML{at}") from None
        if not isinstance(data, dict):
            raise InvalidRequest(f"{file_name} must hold an object of NAME: SPEC, got {type(data).__name__}")
        for k, v in data.items():
            raw[_canonical(str(k))] = v
    for p in params or []:
        name, sep, spec = p.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise InvalidRequest(f"--param takes NAME=SPEC (e.g. lr=loguniform:1e-4:1e-2), got {p!r}")
        raw[_canonical(name)] = spec
    space, fixed = {}, {}
    for name, spec in raw.items():
        what, value = parse_spec(name, spec)
        (space if what == "search" else fixed)[name] = value
    return space, fixed


# --- the request ---------------------------------------------------------------------------------


@dataclass
class SweepRequest(_Validated):
    """What `digitq sweep` asks for: N trials of `base` over `space`, at most P at once."""

    space: dict = _spec(None, dict, doc="field -> distribution: {type: uniform|loguniform|int|logint, low, high} "
                                        "or {type: choice, choices: [...]}")
    base: dict | None = _spec(None, dict, optional=True, doc="the TrainRequest every trial starts from (its fixed options)")
    trials: int = _spec(12, int, 1, MAX_TRIALS, doc="N: trials in all.")
    parallel: int = _spec(2, int, 1, MAX_PARALLEL, doc="P: trials queued or running at once.")
    pruner: str = _spec("asha", str, choices=PRUNERS, doc="asha (default), hyperband, median or none.")
    sampler: str = _spec("tpe", str, choices=SAMPLERS, doc="tpe (default) or random.")

    def check(self) -> None:
        super().check()
        if not self.space:
            raise InvalidRequest("empty search space: give at least one --param NAME=SPEC to search "
                                 "(e.g. lr=loguniform:1e-4:1e-2)")
        if self.parallel > self.trials:
            raise InvalidRequest(f"--parallel ({self.parallel}) cannot exceed --trials ({self.trials})")
        self.base = dict(self.base or {})
        if self.base.get("sweep") is not None or self.base.get("ensemble", 1) != 1:
            raise InvalidRequest("a sweep's trials are single models: leave out ensemble")
        base = self.train_request()
        if base.validation_size < 1:
            raise InvalidRequest("a sweep needs validation images to compare trials: --validation-size must be >= 1")
        self.base = {k: v for k, v in base.to_dict().items() if k != "sweep"}
        self.space = {name: _check_dist(name, dist, self.base) for name, dist in self.space.items()}

    def train_request(self) -> TrainRequest:
        return TrainRequest.from_dict({k: v for k, v in self.base.items() if k != "sweep"})

    def max_epochs(self) -> int:
        d = self.space.get("epochs")
        if d is None:
            return self.base.get("epochs") or TrainRequest().epochs
        return int(max(d["choices"]) if d["type"] == "choice" else d["high"])


def make_sweep_request(params: list[str] | None = None, file_text: str | None = None, file_name: str = "space",
                       **options) -> SweepRequest:
    """A checked SweepRequest from `--param` strings, a space file, and trials/parallel/pruner/sampler
    (anything else in `options` is a fixed training option, e.g. name, epochs, train_size)."""
    space, fixed = parse_space(params, file_text, file_name)
    sweep_opts = {k: options.pop(k) for k in ("trials", "parallel", "pruner", "sampler") if k in options}
    base = {k: v for k, v in options.items() if v is not None}
    for name, value in fixed.items():
        if name not in SEARCHABLE and name not in FIXED_ONLY and name not in {"ensemble"}:
            raise InvalidRequest(f"unknown training option {name!r}")
        base[name] = value
    return SweepRequest.from_dict({"space": space, "base": base, **sweep_opts})


def enqueue_slot(r, sweep_id: str, req: SweepRequest, slot: int, enqueue: Callable[[str, dict], None],
                 ttl: int) -> str:
    """Put slot's trial job on the train queue (once: `sent:<slot>`), recorded as queued and listed
    in `digitq jobs`. Shared by the client (slots 1..P) and the worker (each next slot)."""
    job_id = trial_job_id(sweep_id, slot)
    if r.exists(sent_key(sweep_id, slot)):
        return job_id
    payload = {**req.base, "sweep": {"id": sweep_id, "slot": slot}}
    now = time.time()
    pipe = r.pipeline()
    pipe.hsetnx(trials_key(sweep_id), slot, json.dumps({"slot": slot, "job_id": job_id, "state": "queued",
                                                        "params": {}, "queued": now}))
    pipe.expire(trials_key(sweep_id), ttl)
    pipe.hset(job_key(job_id), mapping={"kind": "train", "name": payload.get("name", "digits"), "submitted": now,
                                        "request": json.dumps(payload)})
    pipe.expire(job_key(job_id), ttl)
    pipe.zadd(JOBS_INDEX_KEY, {job_id: now})
    pipe.execute()
    enqueue(job_id, payload)
    r.set(sent_key(sweep_id, slot), 1, ex=ttl)
    return job_id


# --- what the client shows -------------------------------------------------------------------------


def short_params(params: dict) -> str:
    """{'learning_rate': 0.00312, 'batch_size': 64} -> 'lr=3.1e-03 bs=64'."""
    parts = []
    for name, value in params.items():
        short = SEARCHABLE.get(name, ((), name))[1]
        if isinstance(value, float):
            text = f"{value:.2g}" if 1e-2 <= abs(value) < 10 or value == 0 else f"{value:.1e}"
        elif isinstance(value, list):
            text = "-".join(map(str, value))
        else:
            text = str(value)
        parts.append(f"{short}={text}")
    return " ".join(parts)


def load_record(r, sweep_id: str) -> dict | None:
    """The sweep's hash with JSON fields decoded, or None."""
    raw = r.hgetall(sweep_key(sweep_id))
    if not raw:
        return None
    rec = {k.decode(): v.decode() for k, v in raw.items()}
    for key in ("request", "best"):
        if key in rec:
            rec[key] = json.loads(rec[key])
    for key in ("created", "finished"):
        if key in rec:
            rec[key] = float(rec[key])
    return rec


def load_trials(r, sweep_id: str) -> dict[int, dict]:
    """slot -> trial record."""
    return {int(k): json.loads(v) for k, v in r.hgetall(trials_key(sweep_id)).items()}
