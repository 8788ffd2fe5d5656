"""The client side installs and runs without TensorFlow: prove it never imports it."""

import subprocess
import sys


def test_cli_and_api_never_import_tensorflow():
    code = (
        "import sys\n"
        "import digitq.client.cli, digitq.client.api, digitq.common.images, digitq.common.registry\n"
        "import digitq.common.stack\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(digitq.client.cli.app, ['submit-train', '--arch', 'nope'])\n"
        "assert r.exit_code != 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
