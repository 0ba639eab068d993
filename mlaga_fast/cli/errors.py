"""How every `mlaga-fast` command reports failure: one place, one convention.

    Error: <one line naming the problem>       on stderr, no traceback

    exit 2   the command cannot run with what it was given: bad options (click's usage errors), and
             input that is missing, corrupt or does not match (ValueError, FileNotFoundError), or
             weights that are not on this machine (EncoderUnavailable)
    exit 1   a valid command failed while running: its output is in use by another process, the disk
             is full or unwritable (OSError), memory ran out

Commands raise plain exceptions; the top-level group turns the ones above into this form. Anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

import click

USAGE_EXIT = 2
RUNTIME_EXIT = 1


class InputError(click.ClickException):
    """A bad input (exit 2): printed as ``Error: message`` without click's usage lines."""

    exit_code = USAGE_EXIT


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg


def _is_input_error(e: BaseException) -> bool:
    from mlaga_fast.features.encoders import EncoderUnavailable

    return isinstance(e, (ValueError, FileNotFoundError, EncoderUnavailable))


def _is_runtime_error(e: BaseException) -> bool:
    from mlaga_fast.utils.lock import OutputLocked

    # torch.OutOfMemoryError is matched by name: importing torch here would slow every `--help`.
    return isinstance(e, (OutputLocked, OSError, MemoryError)) or type(e).__name__ == "OutOfMemoryError"


class Group(click.Group):
    """The top-level group: maps the exceptions of any subcommand to the convention above."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised below unless it is a user-facing failure
            if _is_input_error(e):
                raise InputError(_one_line(e)) from None
            if _is_runtime_error(e):
                err = click.ClickException(_one_line(e))
                err.exit_code = RUNTIME_EXIT
                raise err from None
            raise
