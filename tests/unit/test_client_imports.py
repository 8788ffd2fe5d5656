"""The client side installs and runs without TensorFlow: prove it never imports TensorFlow,
Keras, matplotlib or digitq.worker, and that importing it starts nothing."""

import subprocess
import sys

FORBIDDEN = ("tensorflow", "keras", "matplotlib", "optuna")  # optuna: sweeps replay its journal on workers only


def test_the_client_never_imports_tensorflow_or_the_worker():
    """Every client module, a command run end to end in-process (refused input) and the contact
    sheet drawn: none of them pulls in the worker side. A fresh interpreter, so nothing the test
    session imported hides an import."""
    code = (
        "import sys, threading\n"
        "import numpy as np\n"
        "import digitq.client.cli, digitq.client.api, digitq.client.predict, digitq.client.report\n"
        "import digitq.client.gallery, digitq.client.progress, digitq.common.images, digitq.common.registry\n"
        "import digitq.common.stack, digitq.common.schemas, digitq.client.sweep, digitq.common.sweep\n"
        "assert threading.active_count() == 1, 'a thread started at import'\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(digitq.client.cli.app, ['submit-train', '--arch', 'nope'])\n"
        "assert r.exit_code == 2, r.output\n"
        "r = CliRunner().invoke(digitq.client.cli.app, ['sweep', '-p', 'seed=int:1:2'])\n"
        "assert r.exit_code == 2, r.output\n"
        "from digitq.client.gallery import ContactSheet\n"
        "s = ContactSheet(); s.add(np.zeros((28, 28), np.uint8), 'a', 1, 0.5, None); s.render()\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or m.startswith('digitq.worker'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_m_digitq_client_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "digitq.client", "models", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "combine" in proc.stdout, proc.stderr
