"""A sweep's trials on the worker: ask Optuna for a trial's parameters, prune it at an epoch's end,
tell the study how it ended, enqueue the next trial, and register the best model at the end.

    body, on_done = trial_steps(request, hooks)      # used by digitq.worker.train_job
    body(job_id, request, settings, r, report, owner) -> result     # inside the job's lease
    on_done(job_id, stored_result, r) -> stored_result             # a delivery that finds it done

The study lives in Redis (Optuna's JournalRedisBackend, one journal per sweep under
`digitq:sweep:<id>:optuna`), so any worker can load it; digitq's own small records (digitq.common.sweep)
are what the client reads. Every step can run twice (a redelivered job, a worker killed between
two steps) and still happens once:
- a slot's trial is asked once (SET NX `trial-of:<slot>`; a loser's extra trial is told FAIL);
- a trial is told once (`tell(..., skip_if_finished=True)`);
- the next slot is claimed once per ended slot (`follow:<slot>`, one Lua script), its message sent
  once (`sent:<slot>`; a duplicate message would be the same job id, which the lease drops);
- the best model is registered once (the registry keys versions by job id).
Fair share: a sweep has at most P trials queued or running, and the next one is queued only when
one ends, behind any job submitted meanwhile (the train queue is first in, first out).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Callable

from digitq.common.errors import JobCancelled, JobHandedBack, LeaseLost
from digitq.common.registry import register_model
from digitq.common.schemas import TrainRequest
from digitq.common.settings import Settings
from digitq.common.sweep import (
    FINAL_TRIAL_STATES, SweepRequest, asked_key, enqueue_slot, follow_key, journal_prefix, load_record, load_trials,
    sweep_cancel_key, sweep_key, trial_job_id, trial_of_key, trials_key,
)
from digitq.worker import job_folder

log = logging.getLogger("digitq.worker")

_FOLLOW = """
local f = redis.call('get', KEYS[1])
if f then return tonumber(f) end
local m = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], m, 'EX', ARGV[1])
return m
"""
"""Claim the slot that follows slot KEYS[1] once: the same answer however often it is asked."""


@dataclasses.dataclass
class SweepHooks:
    """What a trial needs from the worker around it: the broker's URL (Optuna's journal) and a way
    to queue a training job message (job id, payload)."""

    broker_url: str
    enqueue: Callable[[str, dict], None]
    ttl: int = 7 * 24 * 3600  # seconds the sweep's keys live after their last write


class Sweep:
    """One sweep's records in Redis and its Optuna study."""

    def __init__(self, r, sweep_id: str, hooks: SweepHooks):
        self.r, self.id, self.hooks = r, sweep_id, hooks
        rec = load_record(r, sweep_id)
        if rec is None:
            raise JobCancelled(f"sweep {sweep_id} is gone (expired or deleted)")
        self.record = rec
        self.request = SweepRequest.from_dict(rec["request"])
        self._study = None

    # --- Optuna ---------------------------------------------------------------------------------
    def study(self, slot: int = 0):
        """The sweep's study with its pruner, and a sampler seeded for `slot` (each process that
        asks builds its own sampler: one fixed seed would ask the same point every time)."""
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalRedisBackend

        import warnings

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # JournalRedisBackend's
        req = self.request
        seed = int(req.base.get("seed") or 0) * 1009 + slot
        if req.sampler == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, req.trials // 3)),
                                                 constant_liar=True)
        storage = JournalStorage(JournalRedisBackend(self.hooks.broker_url, prefix=journal_prefix(self.id)))
        return optuna.create_study(study_name=self.id, storage=storage, direction="maximize", sampler=sampler,
                                   pruner=make_pruner(req), load_if_exists=True)

    def distributions(self) -> dict:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for name, d in self.request.space.items():
            if d["type"] == "choice":
                out[name] = CategoricalDistribution([_encode(v) for v in d["choices"]])
            elif d["type"] in ("int", "logint"):
                out[name] = IntDistribution(int(d["low"]), int(d["high"]), log=d["type"] == "logint")
            else:
                out[name] = FloatDistribution(float(d["low"]), float(d["high"]), log=d["type"] == "loguniform")
        return out

    def trial_for(self, slot: int) -> dict:
        """{"number", "id", "params"} of slot's trial, asked the first time (once, whoever asks)."""
        key = trial_of_key(self.id, slot)
        raw = self.r.get(key)
        if raw:
            return json.loads(raw)
        from digitq.worker.compat import optuna_trial_id

        study = self.study(slot)
        trial = study.ask(self.distributions())
        info = {"number": trial.number, "id": optuna_trial_id(trial),
                "params": {k: _decode(k, v) for k, v in trial.params.items()}}
        if not self.r.set(key, json.dumps(info), nx=True, ex=self.hooks.ttl):  # another delivery asked first
            import optuna

            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            return json.loads(self.r.get(key))
        return info

    def tell(self, number: int, state: str, value: float | None) -> None:
        import optuna

        study = self._study or self.study()
        if state == "complete" and value is not None:
            study.tell(number, value, skip_if_finished=True)
        else:
            st = optuna.trial.TrialState.PRUNED if state == "pruned" else optuna.trial.TrialState.FAIL
            study.tell(number, state=st, skip_if_finished=True)

    # --- digitq's records -----------------------------------------------------------------------
    def cancelled(self) -> bool:
        try:
            return bool(self.r.exists(sweep_cancel_key(self.id)))
        except Exception as exc:  # a broker blip must not stop a trial
            log.warning("could not read sweep %s's cancel flag: %s", self.id, exc)
            return False

    def trial(self, slot: int) -> dict:
        raw = self.r.hget(trials_key(self.id), slot)
        return json.loads(raw) if raw else {"slot": slot, "job_id": trial_job_id(self.id, slot)}

    def update_trial(self, slot: int, **fields) -> dict:
        """Merge `fields` into slot's record (its one writer is the worker holding its job's lease)."""
        rec = {**self.trial(slot), **fields}
        pipe = self.r.pipeline()
        pipe.hset(trials_key(self.id), slot, json.dumps(rec))
        pipe.expire(trials_key(self.id), self.hooks.ttl)
        pipe.execute()
        return rec

    def end_trial(self, slot: int, state: str, **fields) -> dict:
        """Record how slot's trial ended and tell the study (both once)."""
        rec = self.trial(slot)
        if rec.get("state") in FINAL_TRIAL_STATES:
            return rec
        if "number" in rec:
            try:
                self.tell(rec["number"], state, fields.get("value"))
            except Exception as exc:  # the study is advice; digitq's record is what the sweep runs on
                log.warning("sweep %s: could not tell trial %s: %s", self.id, rec["number"], exc)
        return self.update_trial(slot, state=state, ended=time.time(), **fields)

    def follow(self, slot: int) -> int | None:
        """Queue the slot after `slot` (claimed once; none past N or once cancelled); returns it."""
        if self.cancelled():
            return None
        m = int(self.r.eval(_FOLLOW, 2, follow_key(self.id, slot), asked_key(self.id), self.hooks.ttl))
        if m > self.request.trials:
            return None
        enqueue_slot(self.r, self.id, self.request, m, self.hooks.enqueue, self.hooks.ttl)
        return m

    def finalize(self) -> dict | None:
        """Once every slot has ended: register the best complete trial's model as NAME:VERSION, with
        the sweep in its record, and mark the sweep complete (or failed: no trial completed).
        Runs on whichever worker ends the last trial; twice is harmless."""
        trials = load_trials(self.r, self.id)
        ended = [t for s, t in trials.items() if s <= self.request.trials and t.get("state") in FINAL_TRIAL_STATES]
        if len(ended) < self.request.trials or self.cancelled():
            return None
        for key in self.r.scan_iter(match=journal_prefix(self.id) + ":*", count=500):  # the study's journal
            self.r.expire(key, self.hooks.ttl)
        complete = [t for t in ended if t["state"] == "complete" and t.get("value") is not None]
        if not complete:
            self.r.hset(sweep_key(self.id), mapping={"state": "failed", "finished": time.time()})
            return None
        best = max(complete, key=lambda t: (t["value"], -t["slot"]))
        name = self.request.base.get("name") or "digits"
        version = register_model(self.r, name, best["job_id"], {
            "arch": best.get("arch"),
            "hyperparameters": best.get("hyperparameters"),
            "dataset": best.get("dataset"),
            "test_accuracy": best.get("test_accuracy"),
            "test_loss": best.get("test_loss"),
            "path": best.get("model_path"),
            "kind": "single",
            "members": [],
            "sweep": {"id": self.id, "trial": best.get("number"), "slot": best["slot"], "params": best.get("params"),
                      "val_accuracy": best["value"], "trials": self.request.trials,
                      "pruned": sum(t["state"] == "pruned" for t in ended), "pruner": self.request.pruner},
        })
        summary = {k: best.get(k) for k in ("slot", "number", "job_id", "params", "value", "test_accuracy")}
        self.r.hset(sweep_key(self.id), mapping={"state": "complete", "finished": time.time(),
                                                  "best": json.dumps(summary), "model": f"{name}:{version}"})
        log.info("sweep %s complete: best trial %s (val_accuracy %.4f) registered as %s:%s", self.id,
                 best.get("number"), best["value"], name, version)
        return summary


def make_pruner(req: SweepRequest):
    """The Optuna pruner `req.pruner` names, its resource counted in epochs."""
    import optuna

    if req.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if req.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(req.max_epochs(), 1), reduction_factor=3)
    if req.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def _encode(value):
    """A choice as Optuna stores it (JSON scalars only): conv channels [16, 32] -> '16-32'."""
    return "-".join(map(str, value)) if isinstance(value, list) else value


def _decode(name: str, value):
    if name == "conv_channels" and isinstance(value, str):
        return [int(v) for v in value.split("-")]
    return value


# --- one trial job ------------------------------------------------------------------------------


def pruning_callback(sweep: Sweep, slot: int, trial_info: dict, epochs: int):
    """A Keras callback: at each epoch's end, report val_accuracy to the trial and record it; when
    the pruner says so, stop training after this very epoch (`.pruned` is then the epoch)."""
    import keras
    import optuna

    study = sweep._study
    trial = optuna.trial.Trial(study, trial_info["id"])

    class PruneAtEpochEnd(keras.callbacks.Callback):
        pruned = None

        def on_epoch_end(self, epoch, logs=None):
            value = float((logs or {}).get("val_accuracy", float("nan")))
            step = epoch + 1
            rec = sweep.trial(slot)
            curve = (rec.get("curve") or [])[: epoch] + [value]
            prune = False
            try:
                trial.report(value, step)
                prune = trial.should_prune() and step < epochs  # asked at the last epoch too: ASHA records its rung
            except Exception as exc:  # the study unreachable: train on, unpruned
                log.warning("sweep %s trial %s: could not report epoch %d: %s", sweep.id, trial.number, step, exc)
            fields = {"epoch": step, "val_accuracy": value, "curve": curve}
            if prune:
                self.pruned = step
                fields["pruned_at"] = step
                log.info("sweep %s trial %s pruned after epoch %d (val_accuracy %.4f)", sweep.id, trial.number, step,
                         value)
                self.model.stop_training = True
            sweep.update_trial(slot, **fields)

    return PruneAtEpochEnd()


def trial_steps(request: TrainRequest, hooks: SweepHooks | None):
    """(body, on_done) for digitq.worker.train_job.run_train_job when `request` is a sweep's trial:
    `body` replaces training-and-registering inside the job's lease; `on_done` runs on a result a
    delivery finds already stored, and repeats the steps after training (each happens once)."""
    if hooks is None:
        raise JobCancelled("this worker was started without sweep support")  # never queued by digitq itself
    sweep_id, slot = request.sweep["id"], request.sweep["slot"]

    def run(job_id: str, req: TrainRequest, settings: Settings, r, report, owner: str, lease, register=True) -> dict:
        sweep = Sweep(r, sweep_id, hooks)
        if sweep.cancelled():
            sweep.end_trial(slot, "cancelled")
            raise JobCancelled(f"sweep {sweep_id} cancelled")
        return run_trial(sweep, slot, job_id, req, settings, r, report, owner, lease)

    def done(job_id: str, data: dict, r) -> dict:
        sweep = Sweep(r, sweep_id, hooks)
        after_trial(sweep, slot, data.get("sweep_trial_state") or "complete", data)
        return data

    return run, done


def run_trial(sweep: Sweep, slot: int, job_id: str, request: TrainRequest, settings: Settings, r, report,
              owner: str, lease) -> dict:
    """Train one trial under the job's `lease` (digitq.worker.train_job: fenced like any job)."""
    from digitq.worker.train import train
    from digitq.worker.train_job import guarded

    info = sweep.trial_for(slot)
    params = info["params"]
    trial_req = TrainRequest.from_dict({**request.to_dict(), **params})
    rec = sweep.trial(slot)
    sweep.update_trial(slot, number=info["number"], params=params, state="running", worker=owner,
                       epochs=trial_req.epochs, started=rec.get("started") or time.time(),
                       deliveries=rec.get("deliveries", 0) + 1)
    log.info("sweep %s trial %d (slot %d): %s", sweep.id, info["number"], slot,
             ", ".join(f"{k}={v}" for k, v in params.items()))
    sweep._study = sweep.study(slot)
    pruning = pruning_callback(sweep, slot, info, trial_req.epochs)
    try:
        should_stop, fenced_report = guarded(lease, r, job_id, report, stop_too=sweep.cancelled)
        result = train(trial_req, job_id, settings, report=fenced_report, should_stop=should_stop,
                       commit=lease.commit, callbacks=[pruning])
    except (LeaseLost, JobHandedBack):  # the trial goes on elsewhere: not its end
        raise
    except JobCancelled:
        sweep.end_trial(slot, "cancelled")
        after_trial(sweep, slot, "cancelled", None)
        raise
    except Exception as exc:
        sweep.end_trial(slot, "failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        after_trial(sweep, slot, "failed", None)
        raise
    state = "pruned" if pruning.pruned else "complete"
    result.model = ""  # a trial registers no version: only the sweep's best does (at the end)
    result.worker = owner
    data = result.to_dict()
    data["sweep_trial_state"] = state  # a result's unknown fields are ignored by readers
    data["sweep"] = {"id": sweep.id, "slot": slot, "trial": info["number"], "params": params}
    job_folder.write_json(job_folder.job_dir(settings, job_id) / "result.json", data, commit=lease.commit)
    after_trial(sweep, slot, state, data)
    return data


def after_trial(sweep: Sweep, slot: int, state: str, data: dict | None) -> None:
    """Record the end, tell the study, queue the next slot, and finish the sweep after its last trial."""
    fields = {}
    if data is not None:
        history = data.get("history") or []
        vals = [e.get("val_accuracy") for e in history]
        fields = dict(value=vals[-1] if vals else None, epoch=len(history), curve=vals,
                      seconds=data.get("train_seconds"), test_accuracy=data.get("test_accuracy"),
                      test_loss=data.get("test_loss"), model_path=data.get("model_path"), arch=data.get("arch"),
                      dataset=data.get("dataset"),
                      hyperparameters={**(sweep.request.base), **(data.get("sweep") or {}).get("params", {})})
    sweep.end_trial(slot, state, **fields)
    if state != "cancelled" or not sweep.cancelled():
        nxt = sweep.follow(slot)
        if nxt is not None:
            log.info("sweep %s: slot %d ended (%s), queued slot %d", sweep.id, slot, state, nxt)
    sweep.finalize()

