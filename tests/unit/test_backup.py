"""Backup generations (digitq.worker.backup) on a tiny real Keras model: written atomically,
checked on resume, and an unusable one never resumed from nor a permanent failure."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from digitq.worker.backup import KEEP, BackupStore  # noqa: E402
from digitq.worker.train import fit_phases  # noqa: E402

STEPS = 10


def tiny_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    return model


def train_steps(model, n: int) -> None:
    x = np.random.default_rng(n).normal(size=(n, 4)).astype("float32")
    model.fit(x, np.zeros((n, 3), "float32"), batch_size=1, epochs=1, verbose=0)


def weights(model) -> list:
    return [w.copy() for w in model.get_weights()]


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture
def saved(tmp_path):
    """Two generations: (epoch 1, batch 4) after 14 steps, then (epoch 2, batch 0) after 20."""
    model = tiny_model()
    store = BackupStore(tmp_path / "backup")
    train_steps(model, 14)
    store.save(model, 1, 4, STEPS)
    older = weights(model)
    train_steps(model, 6)
    store.save(model, 2, 0, STEPS)
    return store, older, weights(model)


def test_restore_loads_the_newest_generation_with_its_optimizer_state(saved):
    store, _, newest = saved
    model = tiny_model(seed=1)
    resume = store.restore(model, STEPS, epochs=5)
    assert (resume.epoch, resume.batch, resume.unusable) == (2, 0, [])
    assert same(weights(model), newest)
    assert int(model.optimizer.iterations.numpy()) == 20


def test_only_the_newest_generations_are_kept_and_a_killed_saves_temporary_goes_on_restore(saved, tmp_path):
    store, _, _ = saved
    model = tiny_model()
    (store.folder / ".tmp-otherhost-999-000009").mkdir()  # what a kill during a save leaves
    for _ in range(3):
        store.save(model, 3, 0, STEPS)
    assert [p.name for p in store.generations()] == ["gen-000005", "gen-000004"][:KEEP]
    assert [p.name for p in store.folder.glob(".tmp-*")] == [".tmp-otherhost-999-000009"], (
        "a save removes only its own temporaries: another process may be writing one")
    assert store.restore(tiny_model(seed=1), STEPS, epochs=5).epoch == 3
    assert not list(store.folder.glob(".tmp-*"))


def test_two_processes_saving_the_same_generation_number_both_land(saved, monkeypatch):
    """A stale holder racing the live one must not crash the live one's save."""
    import os

    store, _, _ = saved
    model = tiny_model()
    real_rename, raced = os.rename, []

    def racing_rename(src, dst):
        if not raced:  # the other process renames its gen-000003 into place first
            raced.append(dst)
            os.mkdir(dst)
            (store.folder / os.path.basename(dst) / "state.json").write_text("{}")
        return real_rename(src, dst)

    monkeypatch.setattr("digitq.worker.backup.os.rename", racing_rename)
    final = store.save(model, 3, 0, STEPS)
    assert [os.path.basename(p) for p in raced] == ["gen-000003"]
    assert final.name == "gen-000004" and (final / "weights.weights.h5").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete_weights", "bad_state", "delete_state"])
def test_a_damaged_newest_generation_falls_back_to_the_previous_one(saved, damage, caplog):
    store, older, _ = saved
    gen = store.generations()[0]
    w, s = gen / "weights.weights.h5", gen / "state.json"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "garbage":
        raw = bytearray(w.read_bytes())
        raw[len(raw) // 2: len(raw) // 2 + 64] = b"\x00" * 64
        w.write_bytes(bytes(raw))
    elif damage == "delete_weights":
        w.unlink()
    elif damage == "bad_state":
        s.write_text('{"epoch": 2, "bat')
    else:
        s.unlink()
    model = tiny_model(seed=1)
    with caplog.at_level(logging.WARNING, "digitq.worker.train"):
        resume = store.restore(model, STEPS, epochs=5)
    assert (resume.epoch, resume.batch) == (1, 4), "resumed from the last good generation"
    assert same(weights(model), older)
    assert int(model.optimizer.iterations.numpy()) == 14
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(gen) in lines[0] and "unusable" in lines[0] and "previous" in lines[0], lines


def test_no_usable_generation_starts_over_with_fresh_weights(saved, caplog):
    """Never random weights under an old epoch count, nor the weights of a half-done load."""
    store, _, _ = saved
    for gen in store.generations():
        (gen / "weights.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    fresh = tiny_model(seed=1)
    expected = weights(fresh)
    with caplog.at_level(logging.WARNING, "digitq.worker.train"):
        resume = store.restore(fresh, STEPS, epochs=5)
    assert (resume.epoch, resume.batch, resume.source) == (0, 0, None) and len(resume.unusable) == 2
    assert same(weights(fresh), expected)
    assert int(fresh.optimizer.iterations.numpy()) == 0
    assert "starting over" in caplog.records[-1].getMessage()


def test_weights_from_another_save_than_the_state_are_refused(saved):
    """Weights and state always come from one save: a state that says 14 steps is not resumed
    with weights after 20 (the checksum matches because the state was rewritten with it)."""
    store, older, _ = saved
    newest, previous = store.generations()
    state = json.loads((previous / "state.json").read_text())
    state["weights_sha256"] = json.loads((newest / "state.json").read_text())["weights_sha256"]
    (previous / "weights.weights.h5").write_bytes((newest / "weights.weights.h5").read_bytes())
    (previous / "state.json").write_text(json.dumps(state))
    (newest / "state.json").unlink()
    resume = store.restore(tiny_model(seed=1), STEPS, epochs=5)
    assert resume.source is None and "optimizer has taken 20 steps" in resume.unusable[-1][1]


def test_weights_that_load_but_are_not_the_ones_saved_are_refused(saved):
    """Bytes that still form a loadable file with the right optimizer step (a torn write
    across an old file, a disk error) are caught by the checksum, not trained on."""
    store, older, _ = saved
    newest = store.generations()[0]
    other = tiny_model(seed=1)
    store.restore(other, STEPS, epochs=5)
    other.layers[0].kernel.assign(other.layers[0].kernel.numpy() + 1.0)  # same step count, other weights
    other.save_weights(str(newest / "weights.weights.h5"))
    model = tiny_model(seed=2)
    resume = store.restore(model, STEPS, epochs=5)
    assert (resume.epoch, resume.batch) == (1, 4) and same(weights(model), older)
    assert "does not match its checksum" in resume.unusable[0][1]


def test_the_guard_can_refuse_a_new_generation(tmp_path):
    store = BackupStore(tmp_path / "backup", guard=lambda: False)
    assert store.save(tiny_model(), 1, 0, STEPS) is None
    assert store.generations() == [] and not list(store.folder.glob(".tmp-*"))


def test_a_keras_backup_and_restore_backup_is_still_resumed_from(tmp_path):
    """Jobs backed up by digitq before atomic backups (Keras' files in backup/) resume at their epoch."""
    model = tiny_model()
    train_steps(model, 5)
    folder = tmp_path / "backup"
    folder.mkdir()
    model.save_weights(str(folder / "latest.weights.h5"))
    (folder / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": 0}))
    restored = tiny_model(seed=1)
    resume = BackupStore(folder).restore(restored, STEPS, epochs=5)
    assert (resume.epoch, resume.batch) == (3, 0) and same(weights(restored), weights(model))


def test_fit_phases_finish_a_mid_epoch_backup_first():
    assert fit_phases(0, 0, 3, 10) == [(0, 0, 10)]
    assert fit_phases(1, 4, 3, 10) == [(1, 4, 6), (2, 0, 10)]
    assert fit_phases(2, 4, 3, 10) == [(2, 4, 6)]
    assert fit_phases(3, 0, 3, 10) == []


def test_mixed_precision_models_round_trip_with_their_loss_scale_optimizer(tmp_path):
    """--precision mixed (GPUs) wraps the optimizer in a LossScaleOptimizer: its step counter
    and variables survive a backup too."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model()
        assert "LossScale" in type(model.optimizer).__name__
        train_steps(model, 7)
        store = BackupStore(tmp_path / "backup")
        store.save(model, 0, 7, STEPS)
        restored = tiny_model(seed=1)
        resume = store.restore(restored, STEPS, epochs=5)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert (resume.epoch, resume.batch, resume.unusable) == (0, 7, [])
    assert same(weights(restored), weights(model))
    assert same([v.numpy() for v in restored.optimizer.variables], [v.numpy() for v in model.optimizer.variables])
    assert len(restored.optimizer.variables) == len(model.optimizer.variables)
