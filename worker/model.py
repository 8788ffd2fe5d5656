"""The digit classifiers by architecture name, their default hyperparameters, and the
learning-rate schedule.

`build_model` returns an uncompiled functional keras.Model whose input is raw pixels
(0..255, N x 28 x 28 x 1) and whose output is 10 probabilities: normalisation is the model's
own first layers, so whoever calls predict never has to know the training statistics.

Backend-agnostic Keras 3: this module (the model, the schedule, the optimizer and the compile
step) uses `keras` and `keras.ops` only and never imports TensorFlow, so the same recipe runs
with KERAS_BACKEND=jax (bench/gpu_check.py; tests/unit/test_backend_jax.py). TensorFlow-only
parts (tf.data, MirroredStrategy, SavedModel export) live in the worker's other modules.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import keras
from keras import layers

from digitq.common.errors import InvalidRequest
from digitq.common.schemas import ARCH_DEFAULTS, TrainRequest

MNIST_MEAN = 33.32 / 255.0  # mean pixel of MNIST's 60,000 training images, on the [0, 1] scale
MNIST_STD = 78.57 / 255.0


@dataclass(frozen=True)
class HParams:
    """A request's hyperparameters with the architecture's defaults filled in."""

    arch: str
    learning_rate: float
    dropout: float
    conv_channels: tuple[int, ...]
    dense_units: int
    batch_size: int  # per replica
    schedule: str
    label_smoothing: float
    weight_decay: float
    augment: str  # none, shift (whole-pixel) or affine (rotation, shear, zoom, shift): see augment.py
    adam_betas: tuple[float, float]
    ema: float  # momentum of the weights' moving average (0: none); see make_optimizer
    warmup: float  # share of the one-cycle schedule's steps spent rising to the peak


def resolve_hparams(request: TrainRequest) -> HParams:
    d = ARCH_DEFAULTS[request.arch]
    channels = tuple(request.conv_channels) if request.conv_channels is not None else d["conv_channels"]
    stages = {"cnn": 3, "seed-cnn": 2, "fast-cnn": 2}.get(request.arch)
    if stages and len(channels) != stages:
        raise InvalidRequest(
            f"conv_channels for {request.arch} takes {stages} numbers (one per stage), got {list(channels)}")
    return HParams(
        arch=request.arch,
        learning_rate=request.learning_rate if request.learning_rate is not None else d["learning_rate"],
        dropout=request.dropout if request.dropout is not None else d["dropout"],
        conv_channels=channels,
        dense_units=request.dense_units if request.dense_units is not None else d["dense_units"],
        batch_size=request.batch_size if request.batch_size is not None else d["batch_size"],
        schedule=request.schedule if request.schedule is not None else d["schedule"],
        label_smoothing=request.label_smoothing if request.label_smoothing is not None else d["label_smoothing"],
        weight_decay=d["weight_decay"],
        augment=request.augment if request.augment is not None else d["augment"],
        adam_betas=tuple(d["adam_betas"]),
        ema=d["ema"],
        warmup=d["warmup"],
    )


def _normalise(inputs, mean: float, std: float):
    x = layers.Rescaling(1.0 / 255.0, name="to_unit")(inputs)
    return layers.Normalization(mean=mean, variance=std**2, name="standardise")(x)


def _batch_norm(name: str, synchronized: bool):
    # Under MirroredStrategy, Keras 3 keeps a separate moving mean/variance per replica (they
    # drift apart, and the saved model gets replica 0's); synchronized BN normalises with the
    # global batch's statistics, so every replica holds the same values, as on one device.
    # momentum 0.9 (not Keras' 0.99): the moving statistics must settle within a short run.
    return layers.BatchNormalization(momentum=0.9, synchronized=synchronized, name=name)


def _conv_bn(x, channels: int, name: str, synchronized: bool, strides: int = 1, kernel: int = 3):
    x = layers.Conv2D(channels, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = _batch_norm(f"{name}_bn", synchronized)(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _conv_pool_bn(x, channels: int, kernel: int, name: str, synchronized: bool):
    # Pooling before batch norm and ReLU: both then run on a map 4x smaller, which on a CPU costs
    # about as much as the convolution itself would have cost on the full map.
    x = layers.Conv2D(channels, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = _batch_norm(f"{name}_bn", synchronized)(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_model(hp: HParams, mean: float = MNIST_MEAN, std: float = MNIST_STD, replicas: int = 1) -> keras.Model:
    """An uncompiled model for `hp.arch`; `mean`/`std` are the training pixels' on [0, 1].

    `replicas` > 1 (inside a MirroredStrategy scope) makes batch-norm layers synchronized.
    """
    sync = replicas > 1
    inputs = keras.Input(shape=(28, 28, 1), name="pixels")
    x = _normalise(inputs, mean, std)
    if hp.arch == "seed-cnn":
        c1, c2 = hp.conv_channels
        x = layers.Conv2D(c1, 5, padding="same", activation="relu", name="conv1")(x)
        x = layers.MaxPooling2D(2, name="pool1")(x)
        x = layers.Conv2D(c2, 5, padding="same", activation="relu", name="conv2")(x)
        x = layers.MaxPooling2D(2, name="pool2")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(hp.dense_units, activation="relu", name="fc1")(x)
        x = layers.Dropout(hp.dropout, name="dropout")(x)
    elif hp.arch == "mlp":
        x = layers.Flatten(name="flatten")(x)
        for i, units in enumerate((hp.dense_units, max(hp.dense_units // 2, 1), max(hp.dense_units // 4, 1))):
            x = layers.Dense(units, activation="relu", name=f"fc{i + 1}")(x)
            x = layers.Dropout(hp.dropout, name=f"dropout{i + 1}")(x)
    elif hp.arch == "fast-cnn":
        c1, c2 = hp.conv_channels
        x = _conv_pool_bn(x, c1, 5, "s1", sync)  # 28 -> 14
        x = _conv_pool_bn(x, c2, 3, "s2", sync)  # 14 -> 7
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(hp.dense_units, activation="relu", name="fc1")(x)
        if hp.dropout:
            x = layers.Dropout(hp.dropout, name="dropout")(x)
    elif hp.arch == "cnn":
        c1, c2, c3 = hp.conv_channels
        x = _conv_bn(x, c1, "s1a", sync, strides=2, kernel=5)  # 28 -> 14: most of the cost saved here
        x = _conv_bn(x, c1, "s1b", sync)
        x = layers.MaxPooling2D(2, name="pool1")(x)  # 14 -> 7
        x = _conv_bn(x, c2, "s2a", sync)
        x = _conv_bn(x, c2, "s2b", sync)
        x = layers.MaxPooling2D(2, name="pool2")(x)  # 7 -> 3
        x = _conv_bn(x, c3, "s3a", sync)
        x = _conv_bn(x, c3, "s3b", sync)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        if hp.dense_units:
            x = layers.Dense(hp.dense_units, activation="relu", name="fc1")(x)
        if hp.dropout:
            x = layers.Dropout(hp.dropout, name="dropout")(x)
    else:  # TrainRequest validation makes this unreachable from a job message
        raise InvalidRequest(f"unknown architecture {hp.arch!r}")
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=hp.arch.replace("-", "_"))


@keras.saving.register_keras_serializable(package="digitq")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from peak/25 to `peak` over `warmup` of the steps, then cosine down to
    peak/1000. Units: steps are optimizer updates (global batches), not epochs."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.25, floor: float = 1e-3):
        self.peak = float(peak)
        self.total_steps = int(max(total_steps, 1))
        self.warmup = float(warmup)
        self.floor = float(floor)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        warm = max(self.total_steps * self.warmup, 1.0)
        start = self.peak / 25.0
        up = start + (self.peak - start) * step / warm
        progress = ops.clip((step - warm) / max(self.total_steps - warm, 1.0), 0.0, 1.0)
        down = self.peak * (self.floor + (1 - self.floor) * 0.5 * (1 + ops.cos(math.pi * progress)))
        return ops.where(step < warm, up, down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup, "floor": self.floor}


def make_optimizer(hp: HParams, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW when the architecture uses weight decay) with `hp.schedule` over `total_steps` updates.

    With `hp.ema`, the optimizer also keeps an exponential moving average of the weights (Keras'
    `use_ema`, in its variables, so backups carry it; its momentum warms up over the first steps,
    compat.with_ema_warm_up); `fit` puts the average in the model when it ends, and validation
    and --track-test use it meanwhile (callbacks.ema_weights)."""
    lr = OneCycle(hp.learning_rate, total_steps, hp.warmup) if hp.schedule == "onecycle" else hp.learning_rate
    b1, b2 = hp.adam_betas
    common = dict(learning_rate=lr, beta_1=b1, beta_2=b2, use_ema=hp.ema > 0, ema_momentum=hp.ema or 0.99)
    from digitq.worker.compat import with_ema_warm_up

    if hp.weight_decay:
        return with_ema_warm_up(keras.optimizers.AdamW)(weight_decay=hp.weight_decay, **common)
    return with_ema_warm_up(keras.optimizers.Adam)(**common)


def compile_model(model: keras.Model, hp: HParams, total_steps: int, jit: bool = False) -> None:
    """Compile with the recipe's optimizer, loss (one-hot labels) and accuracy metric.

    `jit` chooses XLA on TensorFlow (the worker's path). Other backends get Keras' own choice
    ("auto"): for JAX, XLA is the only compiler, and jit_compile=False would run every op eagerly
    (2.5x slower per epoch of the default cnn on these CPUs; on a GPU, each op is a launch).
    """
    model.compile(
        optimizer=make_optimizer(hp, total_steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=hp.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit if keras.backend.backend() == "tensorflow" else "auto",
    )


def uses_ema(model: keras.Model) -> bool:
    """Whether `model`'s optimizer keeps a moving average of the weights (and has built it)."""
    optimizer = getattr(model, "optimizer", None)
    return bool(getattr(optimizer, "use_ema", False) and getattr(optimizer, "built", False))


@contextlib.contextmanager
def ema_weights(model: keras.Model):
    """Within the block, `model` holds its optimizer's moving average of the weights (when the
    recipe keeps one), the model that training will end with."""
    if not uses_ema(model):
        yield
        return
    from digitq.worker.compat import swap_ema_weights

    swap_ema_weights(model)
    try:
        yield
    finally:
        swap_ema_weights(model)


def keep_average(model: keras.Model) -> None:
    """At the end of training: put the moving average of the weights into the model for good.
    (Keras would do it at the end of every `fit`; digitq trains in several fits, see
    compat.with_ema_warm_up.)"""
    if uses_ema(model):
        model.optimizer.use_average(model.trainable_variables)


def fold_batch_norm(model: keras.Model, probe=None, tolerance: float = 1e-4) -> keras.Model:
    """The same classifier for inference, with each batch-norm that follows a convolution folded
    into that convolution's weights and bias (w * g / sqrt(var + eps), and the shift into the
    bias): one op per layer fewer, so less CPU per image for inference. A batch norm after a
    convolution and a max-pooling (fast-cnn) is folded too when every channel's scale is
    positive: max-pooling commutes with a positive scale and a shift.

    Only for a chain of layers (every digitq architecture). The result is checked against the
    original on `probe` (raw pixels, N x 28 x 28 x 1; random ones by default): a model that is
    not a chain, or that differs by more than `tolerance` in any probability, is returned as it is.
    """
    import numpy as np

    layers_ = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not any(_foldable(layers_, i) for i in range(len(layers_))):
        return model
    if probe is None:
        probe = np.random.default_rng(0).integers(0, 256, (8, *model.input_shape[1:])).astype(np.float32)
    try:
        inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
        x, i = inputs, 0
        while i < len(layers_):
            layer = layers_[i]
            span = _foldable(layers_, i)
            if span == 2:  # conv, batch norm
                x = _folded_conv(layer, layers_[i + 1])(x)
                i += 2
            elif span == 3:  # conv, max-pool, batch norm
                x = layers_[i + 1](_folded_conv(layer, layers_[i + 2])(x))
                i += 3
            else:
                x = layer(x)
                i += 1
        folded = keras.Model(inputs, x, name=model.name)
        gap = float(np.abs(np.asarray(folded.predict_on_batch(probe)) - np.asarray(model.predict_on_batch(probe))).max())
    except Exception:  # noqa: BLE001 - not a chain of layers: keep the model as it is
        return model
    return folded if gap <= tolerance else model


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """The same classifier computing in `precision` ("float32": the model itself; "bfloat16":
    Keras' mixed_bfloat16 policy on every layer but the input and the output, so the
    probabilities stay float32). A model Keras cannot rebuild from its config is returned as it is."""
    if precision == "float32":
        return model
    config = model.get_config()
    try:
        outputs = config["output_layers"]
        output = {outputs[0]} if isinstance(outputs[0], str) else {name for name, *_ in outputs}  # one, or a list
        for layer in config["layers"]:
            if layer["class_name"] != "InputLayer" and layer["config"]["name"] not in output:
                layer["config"]["dtype"] = "mixed_bfloat16"
        rebuilt = keras.Model.from_config(config)
        rebuilt.set_weights(model.get_weights())
    except Exception:  # noqa: BLE001 - not a functional model digitq built: keep it as it is
        return model
    return rebuilt


def _foldable(layers_: list, i: int) -> int:
    """How many layers from i fold into one convolution: 2 (conv, batch norm), 3 (conv, max-pool,
    batch norm with every scale > 0), or 0."""
    if not isinstance(layers_[i], layers.Conv2D) or i + 1 >= len(layers_):
        return 0
    if isinstance(layers_[i + 1], layers.BatchNormalization):
        return 2
    if (i + 2 < len(layers_) and isinstance(layers_[i + 1], layers.MaxPooling2D)
            and isinstance(layers_[i + 2], layers.BatchNormalization) and (_bn_scale_shift(layers_[i + 2])[0] > 0).all()):
        return 3
    return 0


def _bn_scale_shift(bn: layers.BatchNormalization):
    """A batch norm as y = x * scale + shift, per channel (inference)."""
    import numpy as np

    n = bn.moving_mean.shape[0]
    gamma = bn.gamma.numpy() if bn.scale else np.ones(n, np.float32)
    beta = bn.beta.numpy() if bn.center else np.zeros(n, np.float32)
    scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    return scale, beta - bn.moving_mean.numpy() * scale


def _folded_conv(conv: layers.Conv2D, bn: layers.BatchNormalization) -> layers.Conv2D:
    import numpy as np

    weights = conv.get_weights()
    kernel, bias = weights[0], (weights[1] if conv.use_bias else np.zeros(conv.filters, np.float32))
    scale, shift = _bn_scale_shift(bn)
    folded = layers.Conv2D.from_config({**conv.get_config(), "use_bias": True, "name": f"{conv.name}_folded"})
    folded.build(conv.input.shape)
    folded.set_weights([kernel * scale, bias * scale + shift])
    return folded
