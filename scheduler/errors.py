"""The one exception type the scheduler raises for bad input."""

from __future__ import annotations


class SchedulerInputError(ValueError):
    """Malformed input: the message names the object (`Kind ns/name`) and the bad field.

    The CLI prints the message as one line and exits non-zero; it never shows a traceback.
    """
