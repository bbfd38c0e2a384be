"""The names the Run:AI UI reads, and turning a framework's log key into a valid report name.

One home for the Keras autolog (``_autolog.py``) and the Lightning and
Transformers integrations: none of them spells these names or sanitizes on its own.
Framework-free: it imports no training framework.
"""

from __future__ import annotations

import logging
import re

__all__ = [
    "ACCURACY",
    "BATCH_SIZE",
    "EPOCH",
    "GLOBAL_STEP",
    "LEARNING_RATE",
    "LOSS",
    "NUMBER_OF_LAYERS",
    "OPTIMIZER_NAME",
    "OVERALL_EPOCHS",
    "STEP",
    "TRAINING_PROGRESS",
    "FailureLog",
    "report_name",
    "to_number",
]

# The UI's progress bar is epoch / overall_epochs.
EPOCH, OVERALL_EPOCHS = "epoch", "overall_epochs"
# Its recommended columns besides (runai 0.4.1's names), and the global step beside 0.4.1's step.
STEP, GLOBAL_STEP, BATCH_SIZE = "step", "global_step", "batch_size"
NUMBER_OF_LAYERS, OPTIMIZER_NAME = "number_of_layers", "optimizer_name"
LEARNING_RATE, LOSS, ACCURACY = "learning_rate", "loss", "accuracy"
# The fraction of training done, in [0, 1], 1.0 when training ends; each integration computes it in its
# own framework's terms. Prometheus cannot: a Keras or Lightning epoch is 0-based and sent at the epoch's
# start, a Transformers epoch is a fractional count of epochs completed (docs/integrations.md).
TRAINING_PROGRESS = "training_progress"

_UNSAFE_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def report_name(key: str) -> str:
    """*key* as a valid report name, as Prometheus client libraries sanitize (``val/top-5`` -> ``val_top_5``).

    Every character outside ``[a-zA-Z0-9_]`` becomes ``_``, and a name that would
    start with a digit (or be empty) gets a leading ``_``.
    """
    name = _UNSAFE_NAME_CHARS.sub("_", key)
    return "_" + name if not name or name[0].isdigit() else name


def to_number(value: object) -> float | None:
    """*value* as a float if it is one real number (Python, numpy, a 0-d tensor, a Keras variable), else None."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        # float() rather than a framework's conversion: every framework's
        # scalars and 0-d tensors support it, without numpy 2's copy warning.
        return float(value)  # type: ignore[arg-type]  # any object: whatever float() takes is one number
    except Exception:  # not a single number: not reported
        return None


class FailureLog:
    """An integration's failures, logged once per place (a report's name, a hook) on *log*.

    Once per place, not once ever: a name that fails every step is told once, and a second bad name is told
    too. At most :attr:`MAX_PLACES` places are told, then one line says that later ones are not (a program that
    invents names cannot fill the log).
    """

    MAX_PLACES = 100

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log, self._what = log, what  # what: "runai reporting", "runai autologging"
        self._places: set[str] = set()

    def failed(self, where: str, exc: Exception, place: str | None = None) -> None:
        """Log *exc* raised in *where*, unless its *place* (by default *where*) was told already."""
        places, place = self._places, where if place is None else place
        if place in places or len(places) > self.MAX_PLACES:
            return
        places.add(place)
        if len(places) > self.MAX_PLACES:
            self._log.warning(
                "%s failed in %d places; training continues, later failures are not logged", self._what, self.MAX_PLACES
            )
            return
        self._log.warning(
            "%s failed in %s (%s: %s); training continues, later failures there are not logged",
            self._what,
            where,
            type(exc).__name__,
            exc,
        )
