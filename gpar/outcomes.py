"""How attempts, elements and jobs end: one vocabulary, and what each ending means.

    an attempt's error, as its worker names it (ErrorKind) ─┐
    an attempt ended without its worker's report (Ended) ───┴─▶ its row of the report
                                                               (Outcome); charged? (CHARGED)
    an element failed for good ─▶ its slot's TaskFailure.reason: failure_reason(kind)
    the job stopped (StopReason) ─▶ the reason of its open elements' slots (CUT_OFF)
"""

from __future__ import annotations

from typing import Literal

#: Why an attempt gave no value, as its worker saw it: "error" (fn raised), "input" (the
#: element could not be pickled or unpickled to reach fn), "result" (the value cannot be
#: pickled, or unpickled on the driver), "output" (its table could not be written),
#: "environment" (the call could not be restored on this worker), "system" (lost with its
#: batch), "timeout" (over task_timeout).
ErrorKind = Literal["error", "input", "result", "output", "environment", "system", "timeout"]

#: How an attempt ended without its worker's report: "timeout", "system" (lost with its batch;
#: both charged), "preempted" or "cancelled" (not charged).
EndedOutcome = Literal["timeout", "system", "preempted", "cancelled"]

#: An attempt's row in the report: "ok", an ErrorKind or an EndedOutcome, or "lost" (it
#: finished, but its worker died before it sent the value; started and finished NaN).
Outcome = Literal["ok", "lost", ErrorKind, EndedOutcome]

#: Outcomes charged to the element's retries and to the job's failure budget; "ok", "lost",
#: "preempted" and "cancelled" are not (the job stopped it, or another attempt finished first).
CHARGED = frozenset({"error", "input", "result", "output", "environment", "system", "timeout"})

#: Why an element has no value: see TaskFailure.
FailureReason = Literal["error", "system", "deadline", "quorum", "cancelled"]

#: Reasons of elements that failed, against those the job's end cut off.
FAILED = frozenset({"error", "system"})

#: Why a job stopped before every element was final.
StopReason = Literal["quorum", "deadline", "budget", "raise", "cancelled"]

#: What the slots of the elements still open say once the job stopped.
CUT_OFF: dict[StopReason, FailureReason] = {
    "deadline": "deadline", "quorum": "quorum",
    "budget": "cancelled", "raise": "cancelled", "cancelled": "cancelled",
}


def failure_reason(kind: ErrorKind, retryable: bool) -> FailureReason:
    """Whose fault an element's final failure is: fn's ("error": it raised, its element cannot
    reach it, it returned what output= cannot write), or the system's."""
    fns_fault = kind in ("error", "input") or (kind == "output" and not retryable)
    return "error" if fns_fault else "system"
