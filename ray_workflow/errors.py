"""The one error contract of every script: one line on stderr, exit 2 for bad input, 1 for a failure of the world,
130 for Ctrl-C.

Every error the library raises on purpose is a ``WorkflowError``: a ``UserError`` when the input is wrong
(the message names the setting and value, or the file and line) and a ``WorldError`` when something outside
failed (a cluster, SLURM, kubectl, the network); each error class is one of the two, never both.
``script_main`` wraps every script's ``main``, so no script ends in a traceback: anything else is a bug of
ours, reported in one line with the file its traceback was saved to.

The library names a setting by its field (``setting("num_workers")``), and each script says it as its own
flag: ``script_main(flags={"num_workers": "--max_workers"})``; a field no script renames is said ``--num_workers``.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from ray_workflow import cache_dir

INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C
SHOW_TRACEBACKS = "ISAACLAB_RAY_TRACEBACK"  # set to 1 to see a bug's traceback on stderr as well
# A setting in a message, between two unit separators: a value echoed with repr() can never hold one.
_SETTING = re.compile("\x1f([a-z_]+)\x1f")


def setting(field: str) -> str:
    """``field`` as a message names it: each script says it as its own flag (see the module's docstring)."""
    return f"\x1f{field}\x1f"


def said(message: str, flags: Mapping[str, str] | None = None) -> str:
    """``message`` with each setting said as the script's flag (``flags``), else as ``--field``."""
    return _SETTING.sub(lambda match: (flags or {}).get(match[1], f"--{match[1]}"), message)


class WorkflowError(Exception):
    """An error our scripts report in one line; ``exit_code`` is what the script exits with."""

    exit_code = 1

    def __str__(self) -> str:
        return said(super().__str__())

    def said_with(self, flags: Mapping[str, str] | None) -> str:
        return said(super().__str__(), flags)


class UserError(WorkflowError):
    """The input is wrong: a flag, a file, a value. Nothing was started, written or deleted because of it."""

    exit_code = 2


class WorldError(WorkflowError):
    """Something outside failed or refused: a cluster, SLURM, kubectl, the network."""


class Interrupted(WorkflowError):
    """Ctrl-C, once the script has undone what it had started; the message says what was undone."""

    exit_code = INTERRUPTED


def script_main(
    main: Callable[..., int | None] | None = None, *, flags: Mapping[str, str] | None = None
) -> Callable[..., int]:
    """Wrap a script's ``main``: its errors become one ``error:`` line (settings said as ``flags`` has them) and an
    exit code, Ctrl-C one ``interrupted`` line and exit 130. Used bare (``@script_main``) or with ``flags``."""
    if main is None:
        return functools.partial(script_main, flags=flags)

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except Interrupted as error:
            print(f"interrupted: {error.said_with(flags)}", file=sys.stderr)
            return error.exit_code
        except WorkflowError as error:
            print(f"error: {error.said_with(flags)}", file=sys.stderr)
            return error.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return INTERRUPTED
        except Exception as error:  # the one place a bug of ours is turned into one line
            saved = _save_traceback(Path(sys.argv[0]).stem or "script")
            where = f"its traceback is in {saved}" if saved else "its traceback could not be saved"
            print(f"error: internal error {type(error).__name__}: {error} ({where}; please report it)", file=sys.stderr)
            if os.environ.get(SHOW_TRACEBACKS) == "1":
                traceback.print_exc()
            return 1

    return wrapped


def report_config_errors() -> None:
    """Make whatever stops a sweep config run directly before its ``main`` (a mistake in its settings, a bug in its
    code, Ctrl-C while it imports) one line too: ``script_main`` cannot catch it, ``sys.excepthook`` sees it.
    A mistake is the config author's (exit 2), named by the config's file and line."""
    default = sys.excepthook

    def one_line(kind, error, trace) -> None:
        if isinstance(error, KeyboardInterrupt):
            line, code = "interrupted", INTERRUPTED
        elif isinstance(error, WorkflowError):
            line, code = f"error: {error}", error.exit_code
        elif isinstance(error, Exception):
            frames = traceback.extract_tb(trace)
            config = os.path.abspath(sys.argv[0])
            ours = [frame for frame in frames if os.path.abspath(frame.filename) == config] or frames[-1:]
            where = f"{ours[-1].filename}:{ours[-1].lineno}: " if ours else ""
            line, code = f"error: {where}{type(error).__name__}: {error}", UserError.exit_code
        else:
            default(kind, error, trace)
            return
        print(line, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)  # nothing has started yet: the interpreter only has to stop

    sys.excepthook = one_line


def _save_traceback(script: str) -> Path | None:
    try:
        folder = cache_dir("tracebacks")
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with tempfile.NamedTemporaryFile(
            "w", dir=folder, prefix=f"{script}-{stamp}-", suffix=".txt", delete=False
        ) as file:
            file.write(f"{' '.join(sys.argv)}\n\n{traceback.format_exc()}")
        return Path(file.name)
    except OSError:
        return None
