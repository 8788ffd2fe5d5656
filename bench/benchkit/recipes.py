"""A training job's recipe as `digitq submit-train` flags, and in words for the report."""

from __future__ import annotations

MODEL_FLAGS = (("conv_channels", "--conv-channels"), ("dense_units", "--dense-units"), ("dropout", "--dropout"))
"""(request key, flag) of the architecture options a ceiling job may set."""

AUGMENT_WORDS = {
    "affine": "random affine augmentation (`--augment`: rotation ±10°, shear ±0.1, zoom ±10%, shift ±2 px, in one "
              "resampling)",
    "elastic": "random affine augmentation plus an elastic distortion (`--augment --elastic`: rotation ±10°, shear "
               "±0.1, zoom ±10%, shift ±2 px, and Simard's smooth displacement field, σ 5 px, α 34 px, in one "
               "resampling)",
}


def model_flags(request: dict) -> list[str]:
    """The architecture flags a job's request sets away from its arch's defaults: ["--conv-channels", "48,96,192"]."""
    out = []
    for key, flag in MODEL_FLAGS:
        value = request.get(key)
        if value is not None:
            out += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return out


def augment_flags(augment: str | None) -> list[str]:
    """The `digitq submit-train` flags of an augmentation kind (affine before elastic existed)."""
    return ["--augment", "--elastic"] if augment == "elastic" else ["--augment"]


def recipe_flags(item: dict) -> list[str]:
    """A ceiling job's or member's recipe as `digitq submit-train` flags: augmentation, then architecture."""
    return [*augment_flags(item.get("augment")), *(item.get("model_flags") or [])]


def cnn_words(job: dict) -> str:
    """"the default cnn", or "the cnn at `--conv-channels 48,96,192`"."""
    flags = job.get("model_flags")
    return f"the cnn at `{' '.join(flags)}`" if flags else "the default cnn"


def arg_value(argv: list[str], flag: str) -> str | None:
    """The value after `flag` in an argument list, or None."""
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None
