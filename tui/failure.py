"""Why an engine call failed, as a value: what the screens say and what they do about it.

No Textual here, so the pure views (`lenstop.tui.views`) can take a failure as they take a result.
Its annotations are objects, not strings (no `from __future__ import annotations`): what crosses into
the app is checked field by field (tests/test_seam.py), and a string would have to be looked up."""

from dataclasses import dataclass

from lenstop.models.errors import LengthMismatchError, LenstopError, NumericError, describe


def failure_text(err: BaseException) -> str:
    """One line for the screen: ours as they are, anything else marked as lenstop's own fault."""
    return describe(err) if isinstance(err, LenstopError) else f"internal error: {describe(err)}"


@dataclass(frozen=True)
class Failure:
    """Why an engine call failed, as the screen says it (`text`), with what a screen does more than say."""

    text: str
    numeric: bool = False  # the run came out NaN or infinite: an intervention too strong
    mismatch: LengthMismatchError | None = None  # a corrupted prompt's tokens did not line up with the clean's

    @classmethod
    def of(cls, err: BaseException) -> "Failure":
        mismatch = err if isinstance(err, LengthMismatchError) else None
        return cls(failure_text(err), isinstance(err, NumericError), mismatch)
