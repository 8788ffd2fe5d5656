"""Recipe probe: candidate networks and recipes for the default job, bare Keras on the worker's
TensorFlow CPU path (oneDNN, its tf.data pipeline and shift augmentation), with per-epoch CPU
seconds (robust on a shared machine), wall seconds, and test accuracy of the raw weights and of
their moving average (--ema, Keras' own, without digitq's warm-up). What it found is in
bench/training_speed.md. Not part of the suite.

    python bench/recipe_probe.py --net fbn24_48_256 --batch 256 --lr 4e-3 --b1 0.7 --b2 0.9 --epochs 5 --ema 0.98 --warm 0.2
    python bench/recipe_probe.py --net tuo --batch 256 --tput 40      # images/s only, 40 steps after a warm-up

Nets: cur (cnn), tuo (tuomaso's, no batch norm), tuobn (batch norm on the full map),
fbnC1_C2_D (conv, pool, batch norm: fast-cnn's shape), s2C1_C2_C3, pC1_C2_C3.
"""
import argparse
import math
import sys
import time
p = argparse.ArgumentParser()
p.add_argument("--net", default="cur")
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--wd", type=float, default=5e-4)
p.add_argument("--ls", type=float, default=0.1)
p.add_argument("--aug", default="shift")
p.add_argument("--spe", type=int, default=1)
p.add_argument("--ema", type=float, default=0.0)
p.add_argument("--b1", type=float, default=0.9)
p.add_argument("--b2", type=float, default=0.999)
p.add_argument("--warm", type=float, default=0.25)
p.add_argument("--val", type=int, default=5000)
p.add_argument("--jit", type=int, default=0)
p.add_argument("--tput", type=int, default=0)
a = p.parse_args()
from digitq.worker.devices import prefer_onednn
prefer_onednn()
import keras  # noqa: E402
from keras import layers  # noqa: E402
from digitq.common.settings import load_settings  # noqa: E402
from digitq.worker import data
from digitq.worker.augment import make_augmenter
from digitq.worker.model import OneCycle, MNIST_MEAN, MNIST_STD
ds = data.load_dataset(load_settings(), "mnist", a.val, None, None, 0)
keras.utils.set_random_seed(0)
def bn(): return layers.BatchNormalization(momentum=0.9)
def cbr(x, c, k=3, s=1):
    x = layers.Conv2D(c, k, strides=s, padding="same", use_bias=False)(x); x = bn()(x); return layers.ReLU()(x)
inp = keras.Input((28, 28, 1))
x = layers.Rescaling(1/255.)(inp); x = layers.Normalization(mean=MNIST_MEAN, variance=MNIST_STD**2)(x)
n = a.net
if n == "cur":
    x = cbr(x, 32, 5, 2); x = cbr(x, 32); x = layers.MaxPooling2D()(x)
    x = cbr(x, 64); x = cbr(x, 64); x = layers.MaxPooling2D()(x)
    x = cbr(x, 128); x = cbr(x, 128); x = layers.GlobalAveragePooling2D()(x)
elif n == "tuo":
    x = layers.Conv2D(24, 5, padding="same", activation="relu")(x); x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x); x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x); x = layers.Dense(256, activation="relu")(x)
elif n == "tuobn":
    x = cbr(x, 24, 5); x = layers.MaxPooling2D()(x)
    x = cbr(x, 32); x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x); x = layers.Dense(256, activation="relu")(x)
elif n.startswith("fbn"):  # conv -> pool -> BN -> relu (BN on the pooled map: 4x cheaper)
    c1, c2, d = [int(v) for v in n[3:].split("_")]
    x = layers.Conv2D(c1, 5, padding="same", use_bias=False)(x); x = layers.MaxPooling2D()(x); x = bn()(x); x = layers.ReLU()(x)
    x = layers.Conv2D(c2, 3, padding="same", use_bias=False)(x); x = layers.MaxPooling2D()(x); x = bn()(x); x = layers.ReLU()(x)
    x = layers.Flatten()(x); x = layers.Dense(d, activation="relu")(x)
elif n.startswith("s2"):  # stride-2 stem then 2 stages, fewer BNs
    c1, c2, c3 = [int(v) for v in n[2:].split("_")] if "_" in n else (32, 64, 128)
    x = cbr(x, c1, 5, 2)                     # 14x14
    x = cbr(x, c2); x = layers.MaxPooling2D()(x)   # 7x7
    x = cbr(x, c3); x = layers.MaxPooling2D()(x)   # 3x3
    x = layers.GlobalAveragePooling2D()(x)
elif n.startswith("p"):  # pooled stem: conv5 at 28 c1, pool, conv3 c2, pool, conv3 c3, gap/flatten
    c1, c2, c3 = [int(v) for v in n[1:].split("_")]
    x = cbr(x, c1, 5); x = layers.MaxPooling2D()(x)
    x = cbr(x, c2); x = layers.MaxPooling2D()(x)
    x = cbr(x, c3); x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
out = layers.Dense(10, activation="softmax")(x)
model = keras.Model(inp, out)
steps = math.ceil(len(ds.train) / a.batch)
opt = keras.optimizers.AdamW(OneCycle(a.lr, steps * a.epochs, warmup=a.warm), weight_decay=a.wd, beta_1=a.b1, beta_2=a.b2,
                             use_ema=a.ema > 0, ema_momentum=a.ema or 0.99)
model.compile(opt, keras.losses.CategoricalCrossentropy(label_smoothing=a.ls), metrics=["accuracy"], jit_compile=bool(a.jit),
              steps_per_execution=a.spe)
aug = make_augmenter(a.aug, 0)
tr = data.make_tf_dataset(ds.train, a.batch, shuffle=True, seed=0, augment=aug, repeat=True)
tx = data.make_images_dataset(ds.test.x[..., None], 2048)
ty = ds.test.y
macs = None
print("params", model.count_params(), file=sys.stderr)
class CB(keras.callbacks.Callback):
    def __init__(s): s.t = 0.0; s.rows = []
    def on_epoch_begin(s, e, logs=None): s.t0 = time.perf_counter(); s.c0 = time.process_time()
    def on_epoch_end(s, e, logs=None):
        s.t += time.perf_counter() - s.t0
        print(f'  cpu {time.process_time()-s.c0:.1f}s', flush=True)
        def acc():
            return float((s.model.predict(tx, verbose=0).argmax(1) == ty).mean())
        if a.ema:
            s.model.optimizer.finalize_variable_values  # noqa
            raw = [v.numpy() for v in s.model.trainable_variables]
            for v, m in zip(s.model.trainable_variables, s.model.optimizer._model_variables_moving_average):
                v.assign(m)
            ta = acc()
            for v, r in zip(s.model.trainable_variables, raw): v.assign(r)
            tr_ = acc()
            print(f"epoch {e+1} t={s.t:.1f}s ema={ta:.4f} raw={tr_:.4f}", flush=True)
        else:
            print(f"epoch {e+1} t={s.t:.1f}s test={acc():.4f}", flush=True)
if a.tput:
    model.fit(tr, epochs=1, steps_per_epoch=20, verbose=0)
    w0, c0 = time.perf_counter(), time.process_time()
    model.fit(tr, epochs=1, steps_per_epoch=a.tput, verbose=0)
    w, c = time.perf_counter() - w0, time.process_time() - c0
    print(f"TPUT net={a.net} batch={a.batch} spe={a.spe}: wall {a.tput*a.batch/w:.0f} img/s, cpu {a.tput*a.batch/c:.0f} img/cpu-s; epoch est wall {55000/(a.tput*a.batch/w):.1f}s cpu/2 {55000/(a.tput*a.batch/c)/2:.1f}s")
    sys.exit()
t = time.perf_counter()
model.fit(tr, epochs=a.epochs, steps_per_epoch=steps, verbose=0, callbacks=[CB()])
print("done", vars(a), f"{time.perf_counter()-t:.1f}")
