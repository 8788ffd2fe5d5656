"""Export a registered model as a TensorFlow SavedModel for TensorFlow Serving."""

from __future__ import annotations

from pathlib import Path

from digitq.common.errors import DigitqError, NoSuchModel


def export_saved_model(record: dict, directory: str) -> Path:
    """Write `directory` (a SavedModel) whose `serving_default` signature maps `pixels`
    (float32 N x 28 x 28 x 1, raw 0..255 values) to `probabilities` (N x 10)."""
    import keras
    import tensorflow as tf

    target = Path(directory).expanduser().resolve()
    if target.exists():
        raise DigitqError(f"{target} already exists; export writes a new folder")
    members = record.get("members") or [record["path"]]
    for p in members:
        if not Path(p).is_file():
            raise NoSuchModel(f"the model file {p} is not reachable here (mount the shared volume at DIGITQ_HOME)")
    models = [keras.models.load_model(p, compile=False) for p in members]

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.models = models

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="pixels")])
        def serve(self, pixels):
            probs = tf.add_n([m(pixels, training=False) for m in self.models]) / len(self.models)
            return {"probabilities": probs, "digit": tf.argmax(probs, axis=1)}

    module = Serving()
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})
    return target


def main(argv: list[str] | None = None) -> int:
    """`python -m digitq.worker.export DIR < record.json`: what `digitq models export` runs, in a
    process of its own so that the client never imports TensorFlow. Reads the model's registry
    record (JSON) on stdin; prints the folder written, or `error: ...` on stderr and exits non-zero."""
    import json
    import sys

    from digitq.worker.devices import prefer_onednn

    prefer_onednn()  # the worker's CPU kernels, chosen before TensorFlow starts
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m digitq.worker.export DIR < record.json", file=sys.stderr)
        return 2
    try:
        path = export_saved_model(json.loads(sys.stdin.read()), args[0])
    except DigitqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
