"""Who writes the GFD-compatible ``nvidia.com/*`` labels: the ``--nvidia-labels`` mode and the
conflict rule that keeps gputopo out of a write war with GPU Feature Discovery (pure).

* ``own`` — gputopo writes the keys it computes where they are absent and keeps the ones it
  holds current; a key another writer holds together with it (the same value applied by both)
  stays gputopo's to update, and a one-off overwrite of a key gputopo wrote (a
  ``kubectl label --overwrite``) is corrected — once per key: the correction is recorded (a
  ``corrected:<key>`` marker in the pending-removal annotation, written with the correction),
  and when the value is replaced again gputopo yields the key like the other modes.
* ``defer`` (the default) — gputopo writes a key only where no other field manager holds it:
  a key that any other writer holds, alone or together with gputopo, is that writer's.
* ``off`` — gputopo writes none; the ones it holds go, after the usual removal hysteresis.

In every mode a key another writer set first is never overwritten (the admission policy denies
it too), and the conflict rule holds: once another field manager has replaced the value of a
key gputopo wrote (in ``own``: again, after the one correction), gputopo stops writing that
key — no write war. Who holds what is read from
the Node's ``metadata.managedFields``, which the API server keeps per field manager: an update
that changes a label hands the label to the writer that changed it.

A *conflict* is a key gputopo computes that the Node carries with another writer's different
value; the publisher reports it in a metric and one Event, and leaves it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gputopo.core.contract import NVIDIA_PREFIX

NVIDIA_LABEL_MODES: Final = ("own", "defer", "off")
# GPU Feature Discovery ships with the GPU Operator and is on nearly every NVIDIA node: its
# values win, gputopo only fills in where nobody else writes (docs/coexistence.md).
DEFAULT_NVIDIA_LABEL_MODE: Final = "defer"


def check_mode(mode: str) -> str:
    if mode not in NVIDIA_LABEL_MODES:
        raise ValueError(
            f"--nvidia-labels {mode!r}: expected one of {', '.join(NVIDIA_LABEL_MODES)}"
        )
    return mode


def is_nvidia_key(key: str) -> bool:
    return key.startswith(f"{NVIDIA_PREFIX}/")


def label_holders(entries: Any) -> dict[str, frozenset[str]]:
    """Label key -> the field managers that hold it, from a Node's ``managedFields``."""
    holders: dict[str, set[str]] = {}
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, Mapping):
            continue
        manager = entry.get("manager")
        fields = entry.get("fieldsV1")
        metadata = fields.get("f:metadata") if isinstance(fields, Mapping) else None
        names = metadata.get("f:labels") if isinstance(metadata, Mapping) else None
        if not isinstance(manager, str) or not isinstance(names, Mapping):
            continue
        for name in names:
            if isinstance(name, str) and name.startswith("f:"):
                holders.setdefault(name[2:], set()).add(manager)
    return {key: frozenset(managers) for key, managers in holders.items()}


CORRECTED_MARKER: Final = "corrected:"


def yielded_keys(
    claimed: frozenset[str],
    holders: Mapping[str, frozenset[str]],
    present: Mapping[str, str],
    mode: str,
    own_manager: str,
    corrected: frozenset[str] = frozenset(),
) -> frozenset[str]:
    """The ``nvidia.com/*`` keys among ``claimed`` (what gputopo's annotation or field manager
    says it owns) that belong to another writer now: held by another field manager and not by
    gputopo (it replaced gputopo's value: the conflict rule), or — in every mode but ``own`` —
    held by another field manager at all (``off`` and a prune never remove a label another
    writer holds too). In ``own`` a key another writer took is gputopo's to correct once:
    yielded only when it is among ``corrected``."""
    result = set()
    for key in claimed:
        if not is_nvidia_key(key) or key not in present:
            continue
        managers = holders.get(key, frozenset())
        others = managers - {own_manager}
        if not others:
            continue
        if mode != "own" or (own_manager not in managers and key in corrected):
            result.add(key)
    return frozenset(result)


@dataclass(frozen=True)
class LabelConflict:
    """An ``nvidia.com/*`` key gputopo computes that another writer holds with another value."""

    key: str
    ours: str
    theirs: str
    holders: tuple[str, ...]  # the other field managers holding it (empty: not recorded)

    def describe(self) -> str:
        by = ", ".join(self.holders) if self.holders else "another writer"
        return f"{self.key}={self.theirs} (held by {by}; gputopo computes {self.ours})"
