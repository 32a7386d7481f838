"""What the embedded stores check of an ``AppendInput`` before they apply it,
as S2 does: the JSON shape, 1 to 1000 records, S2's metered-size limits and
the fencing token's length. A batch that fails a check is refused whole,
with S2's status (422) and a typed error, and nothing of it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from resumable_fast import _core
from resumable_fast.errors import S2Error
from resumable_fast.records import SequencedRecord

__all__ = ["CheckedAppend", "check_append_input"]


@dataclass(frozen=True, slots=True)
class CheckedAppend:
    """An ``AppendInput`` that passed the checks, not yet given positions."""

    bodies: list[str]
    headed: list[tuple[int, list[list[str]]]]
    """The records that have headers: their index in the batch, and the headers."""
    fencing_token: str | None
    match_seq_num: int | None
    new_fencing_token: str | None
    """The body of the batch's last fence record: the stream's token once
    the batch is applied (None: the batch sets none)."""

    def sequenced(
        self, first_seq_num: int, timestamp_ms: int, start: int = 0, stop: int | None = None
    ) -> list[SequencedRecord]:
        """The records at their positions from ``first_seq_num``, stamped;
        only those at indexes ``start`` to ``stop`` (not included) if given."""
        bodies = self.bodies
        if stop is None:
            stop = len(bodies)
        records: list[SequencedRecord] = [
            {"seq_num": seq_num, "timestamp": timestamp_ms, "body": body}
            for seq_num, body in enumerate(bodies[start:stop], first_seq_num + start)
        ]
        for index, headers in self.headed:
            if start <= index < stop:
                records[index - start] = {
                    "seq_num": first_seq_num + index,
                    "timestamp": timestamp_ms,
                    "headers": headers,
                    "body": bodies[index],
                }
        return records


def check_append_input(append_input: bytes) -> CheckedAppend:
    """The batch of an ``AppendInput`` body, or an :class:`S2Error` (422)
    naming the check it failed. The native core reads and checks it
    (rust/append_input.rs): the bodies come out as one list, with no object
    made per record."""
    try:
        return CheckedAppend(*_core.check_append_input(append_input))
    except ValueError as invalid:
        raise S2Error(422, "invalid", str(invalid)) from None
