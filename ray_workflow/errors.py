"""The one error contract of every script: one line on stderr, exit 2 for bad input, 1 for a failure of the world.

Every error the library raises on purpose is a ``WorkflowError``: a ``UserError`` when the input is wrong
(the message names the flag and value, or the file and line) and a ``WorldError`` when something outside
failed (a cluster, SLURM, kubectl, the network). ``script_main`` wraps every script's ``main``, so no
script ends in a traceback: anything else is a bug of ours, reported in one line with the file its
traceback was saved to.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C
TRACEBACK_DIR = Path("~/.cache/isaaclab_ray/tracebacks")
SHOW_TRACEBACKS = "ISAACLAB_RAY_TRACEBACK"  # set to 1 to see a bug's traceback on stderr as well


class WorkflowError(Exception):
    """An error our scripts report in one line; ``exit_code`` is what the script exits with."""

    exit_code = 1


class UserError(WorkflowError):
    """The input is wrong: a flag, a file, a value. Nothing was started, written or deleted because of it."""

    exit_code = 2


class WorldError(WorkflowError):
    """Something outside failed or refused: a cluster, SLURM, kubectl, the network."""


def script_main(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a script's ``main``: its errors become one ``error:`` line and an exit code, Ctrl-C exit 130."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except WorkflowError as error:
            print(f"error: {error}", file=sys.stderr)
            return error.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return INTERRUPTED
        except Exception as error:  # noqa: BLE001 - the one place a bug of ours is turned into one line
            saved = _save_traceback(Path(sys.argv[0]).stem or "script")
            where = f"its traceback is in {saved}" if saved else "its traceback could not be saved"
            print(f"error: internal error {type(error).__name__}: {error} ({where}; please report it)", file=sys.stderr)
            if os.environ.get(SHOW_TRACEBACKS) == "1":
                traceback.print_exc()
            return 1

    return wrapped


def report_module_errors() -> None:
    """Show a ``WorkflowError`` raised outside ``main`` (a sweep config's settings, read when the file is run
    directly) as one line too: only what ``script_main`` cannot catch reaches ``sys.excepthook``."""
    default = sys.excepthook

    def one_line(kind, error, trace) -> None:
        if not isinstance(error, WorkflowError):
            default(kind, error, trace)
            return
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(error.exit_code)  # nothing has started yet: the interpreter only has to stop

    sys.excepthook = one_line


def _save_traceback(script: str) -> Path | None:
    try:
        folder = TRACEBACK_DIR.expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with tempfile.NamedTemporaryFile(
            "w", dir=folder, prefix=f"{script}-{stamp}-", suffix=".txt", delete=False
        ) as file:
            file.write(f"{' '.join(sys.argv)}\n\n{traceback.format_exc()}")
        return Path(file.name)
    except OSError:
        return None
