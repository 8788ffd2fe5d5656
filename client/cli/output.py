"""How the CLI speaks: stdout for results, stderr for notes and errors, one line per error.

Scripts parse these lines, so a long line stays one line when piped (soft_wrap), and nothing
here is Rich markup: a path with brackets prints as it is.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import threading

import typer
from rich.console import Console
from rich.table import Table

from digitq.common.errors import DigitqError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

INTERRUPTED_EXIT = 130
"""Exit code after Ctrl-C, as a shell reports a SIGINT."""

TERMINATED_EXIT = 143
"""Exit code after SIGTERM, as a shell reports it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is (as Ctrl-C raises KeyboardInterrupt), so the same
    clean-up runs: no partial output file, preprocessing processes stopped, the batch closed."""


@contextlib.contextmanager
def terminated_as_interrupt():
    """While a command runs in the main thread, SIGTERM raises Terminated instead of killing
    the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def friendly_errors(fn):
    """Turn expected failures into one line on stderr and a non-zero exit, never a traceback:
    a DigitqError exits with its own code (README "Exit codes"), an unreachable broker with 1,
    a file or folder the system refuses (an OSError nothing else caught) with 1, Ctrl-C with 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import redis
        from kombu.exceptions import OperationalError

        from digitq.common.redis_client import OUT_OF_MEMORY_MESSAGE, is_out_of_memory

        try:
            with terminated_as_interrupt():
                return fn(*args, **kwargs)
        except DigitqError as exc:
            note(f"error: {exc}", console=err)
            raise typer.Exit(code=exc.exit_code)
        except (redis.exceptions.RedisError, OperationalError) as exc:
            if is_out_of_memory(exc):
                note(f"error: {OUT_OF_MEMORY_MESSAGE}", console=err)
            else:
                note(f"error: broker unavailable: {exc}", console=err)
            raise typer.Exit(code=1)
        except Terminated:
            note("terminated", console=err)
            raise typer.Exit(code=TERMINATED_EXIT)
        except KeyboardInterrupt:
            note("interrupted", console=err)
            raise typer.Exit(code=INTERRUPTED_EXIT)
        except BrokenPipeError:
            raise  # the reader went away (`| head`): nothing to tell it
        except OSError as exc:  # the backstop: a path the system refuses, said in one line
            where = f": {exc.filename}" if exc.filename else ""
            note(f"error: {exc.strerror or exc}{where}", console=err)
            raise typer.Exit(code=1)

    return wrapper


def line(text: str, console: Console = out) -> None:
    """One line as it is: no markup, no highlighting."""
    console.print(text, markup=False, highlight=False)


def note(text: str, console: Console = err) -> None:
    """One line for a person, on stderr."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_json(obj) -> None:
    """One JSON document on one line of stdout."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def pct(fraction: float | None) -> str:
    """0.9912 -> '99.12%'; None -> ''."""
    return "" if fraction is None else f"{fraction * 100:.2f}%"


def train_result_table(res) -> Table:
    """A TrainResult as the two-column table `submit-train --wait`, `wait` and `status` print."""
    from rich.table import Column

    t = Table(Column(no_wrap=True), Column(overflow="fold"), show_header=False, box=None)
    t.add_row("job", res.job_id)
    t.add_row("model", f"{res.model} ({res.arch}, {res.replicas} replica(s) on {', '.join(res.devices)})")
    t.add_row("test accuracy", f"{pct(res.test_accuracy)}  (loss {res.test_loss:.4f})")
    t.add_row("epochs", f"{res.epochs}  ({res.train_images} training images)")
    for e in res.history:
        member = f"model {e['member']} " if "member" in e else ""
        t.add_row(f"  {member}epoch {e['epoch']}",
                  f"{e['seconds']:.1f} s  loss {e.get('loss', 0):.4f}  val_acc {e.get('val_accuracy', float('nan')):.4f}"
                  f"  {e.get('images_per_second', 0):.0f} img/s" + ("  (resumed)" if e.get("resumed") else ""))
    if res.member_accuracies:
        t.add_row("members", "  ".join(pct(a) for a in res.member_accuracies) + "  (averaged above)")
    for w in res.warnings:
        t.add_row("warning", w)
    t.add_row("wall time", f"{res.wall_seconds:.1f} s")
    t.add_row("model file", res.model_path)
    return t
