"""The model registry: named, versioned models in Redis; their files live on the shared volume.

Keys (all under `digitq:`):
    models                 set of model names
    model:<name>           hash: version -> JSON record
    model:<name>:next      counter for the next version
    model:<name>:promoted  the version that NAME alone resolves to
    model-by-job:<job_id>  "name:version" registered by that job (a redelivered job registers once)
"""

from __future__ import annotations

import json
import time

from digitq.common.errors import InvalidRequest, LeaseLost, NoSuchModel
from digitq.common.fencing import HOLDS_LUA, Fence
from digitq.common.names import KEY_PREFIX
from digitq.common.schemas import check_model_name

MODELS_KEY = KEY_PREFIX + "models"


def _versions_key(name: str) -> str:
    return f"{KEY_PREFIX}model:{name}"


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """'NAME' or 'NAME:VERSION' -> (name, version or None)."""
    name, _, version = str(ref).partition(":")
    check_model_name(name)
    if not version:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise InvalidRequest(f"invalid model version {version!r} in {ref!r}: use NAME or NAME:VERSION (1, 2, ...)")
    return name, int(version)


_REGISTER_FENCED = f"""
if not {HOLDS_LUA} then return -1 end
local existing = redis.call('get', KEYS[3])
if existing then return tonumber(string.match(existing, ':(%d+)$')) end
local v = redis.call('incr', KEYS[4])
redis.call('set', KEYS[3], ARGV[3] .. ':' .. v)
redis.call('sadd', KEYS[5], ARGV[3])
redis.call('hset', KEYS[6], tostring(v), string.sub(ARGV[4], 1, -2) .. ', "version": ' .. v .. '}}')
return v
"""
"""register_model under a fence, in one step: KEYS = lease, fence counter, model-by-job, next,
models, versions; ARGV = owner, token, name, the record's JSON without its version."""


def register_model(r, name: str, job_id: str, record: dict, fence: Fence | None = None) -> int:
    """Add a version of `name` for `job_id` and return it; the same job always gets the same version.

    With `fence`, only while that fence holds (checked and written in one Lua script); a worker
    that lost the job gets LeaseLost and registers nothing."""
    check_model_name(name)
    by_job = f"{KEY_PREFIX}model-by-job:{job_id}"
    if fence is not None:
        rec = {k: v for k, v in record.items() if k != "version"}
        rec.update(name=name, job_id=job_id, created=time.time())
        version = int(r.eval(_REGISTER_FENCED, 6, *fence.keys(), by_job, f"{_versions_key(name)}:next", MODELS_KEY,
                             _versions_key(name), *fence.args(), name, json.dumps(rec)))
        if version < 0:
            raise LeaseLost(f"lost the lease of job {job_id} before registering its model")
        return version
    existing = r.get(by_job)
    if existing:
        return int(existing.decode().rpartition(":")[2])
    version = int(r.incr(f"{_versions_key(name)}:next"))
    record = {**record, "name": name, "version": version, "job_id": job_id, "created": time.time()}
    if not r.set(by_job, f"{name}:{version}", nx=True):  # a concurrent duplicate won the race
        return int(r.get(by_job).decode().rpartition(":")[2])
    pipe = r.pipeline()
    pipe.sadd(MODELS_KEY, name)
    pipe.hset(_versions_key(name), str(version), json.dumps(record))
    pipe.execute()
    return version


def combine_models(r, name: str, refs: list[str]) -> dict:
    """Register `name`'s next version as the average of the models `refs` name: one member per
    trained network, an ensemble's members taken one by one (so each network weighs the same).

    This is the other way to an ensemble: K jobs trained in parallel on several workers, or
    different recipes, then combined. Its test accuracy is unknown until it is evaluated."""
    import uuid

    check_model_name(name)
    if len(refs) < 2:
        raise InvalidRequest("combine needs at least two models")
    sources = [resolve_model(r, ref) for ref in refs]
    members: list[str] = []
    for rec in sources:
        for path in rec.get("members") or [rec["path"]]:
            if path in members:
                raise InvalidRequest(f"{rec['name']}:{rec['version']} repeats a network already combined ({path})")
            members.append(path)
    arches = sorted({rec.get("arch") for rec in sources})
    combined = [f"{rec['name']}:{rec['version']}" for rec in sources]
    version = register_model(r, name, f"combine-{uuid.uuid4().hex}", {
        "arch": arches[0] if len(arches) == 1 else "+".join(map(str, arches)),
        "hyperparameters": {"combined_from": combined},
        "dataset": sources[0].get("dataset"),
        "test_accuracy": None,
        "test_loss": None,
        "path": members[0],
        "kind": "ensemble",
        "members": members,
        "combined_from": combined,
    })
    return resolve_model(r, f"{name}:{version}")


def record_scores(r, ref: str, accuracy: float, loss: float) -> dict:
    """Store the MNIST test scores that evaluating NAME:VERSION measured in its record."""
    name, version, rec = _resolve_exact(r, ref, "record_scores")
    rec.pop("promoted", None)
    rec.update(test_accuracy=accuracy, test_loss=loss)
    r.hset(_versions_key(name), str(version), json.dumps(rec))
    return rec


def default_version(versions: dict, promoted: int | None) -> int:
    """The version NAME alone resolves to: the promoted one, else the one with the best MNIST
    test accuracy (the newest of equals; a version never scored counts below any score). So a
    quick experiment (`--train-size 5000`) does not take over from a better model by being newer;
    `digitq models promote` pins a version."""
    if promoted is not None and str(promoted).encode() in versions:
        return int(promoted)

    def score(item) -> tuple:
        v, raw = item
        acc = json.loads(raw).get("test_accuracy")
        return (acc if isinstance(acc, (int, float)) and acc == acc else -1.0, int(v))

    return int(max(versions.items(), key=score)[0])


def _promoted(r, name: str) -> int | None:
    raw = r.get(f"{_versions_key(name)}:promoted")
    return int(raw) if raw is not None else None


def list_models(r) -> list[dict]:
    """Every version of every model, newest first within a name, with `promoted` set, and
    `default` on the version NAME alone resolves to."""
    out = []
    for raw in sorted(r.smembers(MODELS_KEY)):
        name = raw.decode()
        promoted = _promoted(r, name)
        versions = r.hgetall(_versions_key(name))
        if not versions:
            continue
        default = default_version(versions, promoted)
        for v in sorted(versions, key=lambda k: -int(k)):
            rec = json.loads(versions[v])
            rec["promoted"] = promoted == int(v)
            rec["default"] = default == int(v)
            out.append(rec)
    return out


def resolve_model(r, ref: str) -> dict:
    """The record for 'NAME[:VERSION]': the given version, else `default_version` (the promoted
    one, else the best-scoring)."""
    name, version = parse_model_ref(ref)
    versions = r.hgetall(_versions_key(name))
    if not versions:
        raise NoSuchModel(f"no model named {name!r} (see `digitq models list`)")
    if version is None:
        version = default_version(versions, _promoted(r, name))
    raw = versions.get(str(version).encode())
    if raw is None:
        raise NoSuchModel(f"model {name!r} has no version {version} (see `digitq models list`)")
    rec = json.loads(raw)
    promoted = r.get(f"{_versions_key(name)}:promoted")
    rec["promoted"] = promoted is not None and int(promoted) == version
    return rec


def _resolve_exact(r, ref: str, verb: str) -> tuple[str, int, dict]:
    """(name, version, record) for a NAME:VERSION that must name its version."""
    name, version = parse_model_ref(ref)
    if version is None:
        raise InvalidRequest(f"{verb} needs NAME:VERSION, got {ref!r}")
    return name, version, resolve_model(r, ref)


def promote_model(r, ref: str) -> dict:
    """Make NAME resolve to VERSION."""
    name, version, rec = _resolve_exact(r, ref, "promote")
    r.set(f"{_versions_key(name)}:promoted", version)
    rec["promoted"] = True
    return rec


def delete_model(r, ref: str) -> dict:
    """Remove one version from the registry (its files stay with the job that made them)."""
    name, version, rec = _resolve_exact(r, ref, "delete")
    pipe = r.pipeline()
    pipe.hdel(_versions_key(name), str(version))
    promoted = r.get(f"{_versions_key(name)}:promoted")
    if promoted is not None and int(promoted) == version:
        pipe.delete(f"{_versions_key(name)}:promoted")
    pipe.execute()
    if not r.hlen(_versions_key(name)):
        r.srem(MODELS_KEY, name)
    return rec
