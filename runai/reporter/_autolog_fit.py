"""How ``fit``'s arguments get the autolog callback, without Keras.

The state :func:`~runai.reporter.keras.autolog` installs, and the binding of
``fit``'s arguments by name: the callback added to a copy of the callbacks,
with the batch size told from the arguments where it can be.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from ._autolog import AutologCallbackMixin
from ._reporter import Reporter

__all__ = ["AutologState", "with_callback"]

_DEFAULT_BATCH_SIZE = 32  # what Keras' fit uses on arrays when given none


class AutologState:
    """What autolog() installed: the reporter, the options and the originals."""

    def __init__(self, reporter: Reporter | None, every_n_steps: int, options: dict[str, bool]) -> None:
        self.reporter = reporter
        self.every_n_steps = every_n_steps
        self.options = options
        # (class, attribute) -> the class's own attribute before patching, or
        # keras.py's _INHERITED when it only inherited it (then deleting ours restores it).
        self.originals: dict[tuple[type, str], object] = {}


def with_callback(
    active: AutologState,
    callback_class: type,
    signature: inspect.Signature,
    model: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    flatten: Callable[[Any], list[Any]],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """fit's arguments with the reporter's callback added to a copy of the callbacks.

    *flatten* is Keras' ``keras.tree.flatten``, passed in: this module does not import Keras.
    """
    bound = signature.bind_partial(model, *args, **kwargs)
    given = bound.arguments.get("callbacks")
    callbacks = list(given) if given is not None else []  # a copy: the user's list stays as it was
    if any(isinstance(c, AutologCallbackMixin) for c in callbacks):
        return args, kwargs  # the user passed one already: not logged twice
    callbacks.append(
        callback_class(
            active.reporter,
            every_n_steps=active.every_n_steps,
            batch_size=_batch_size(bound.arguments, flatten),
            **active.options,
        )
    )
    bound.arguments["callbacks"] = callbacks
    return bound.args[1:], bound.kwargs  # without the model, which the caller passes itself


def _batch_size(arguments: Mapping[str, Any], flatten: Callable[[Any], list[Any]]) -> int | None:
    """The batch size ``fit`` will use, where it can be told from its arguments (bound by name)."""
    given = arguments.get("batch_size")
    if given is not None:
        return int(given)
    x = arguments.get("x", arguments.get("generator"))
    if x is None:
        return None
    size = getattr(x, "batch_size", None)  # torch DataLoader, many PyDatasets
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if hasattr(x, "element_spec"):  # tf.data: the static leading dimension, if any
        try:
            first = next(iter(flatten(x.element_spec)))
            return int(first.shape[0]) if first.shape[0] is not None else None
        except Exception:  # the batch size is unknown then
            return None
    if hasattr(x, "__array__") or isinstance(x, (list, tuple, dict)):
        return _DEFAULT_BATCH_SIZE  # arrays: fit's default
    return None  # a generator: unknown until it yields
