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
