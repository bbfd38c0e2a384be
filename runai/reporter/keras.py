"""Keras autologging: report training progress from ``fit`` without code changes.

``autolog()`` wraps ``keras.Model.fit`` (and, where the Keras 2 package
``tf_keras`` is installed, its ``fit`` and ``fit_generator``) so that every
``fit`` call gets a :class:`ReporterCallback` appended to a *copy* of its
callbacks. ``disableAutolog()`` puts the exact original methods back.

This is the only module of the package that imports Keras; what is reported
is in ``_autolog.py``, and how ``fit``'s arguments are bound in ``_autolog_fit.py``,
which do not.
Names and defaults follow runai 0.4.1; ``docs/keras.md`` lists every reported name.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import threading
from typing import Any

try:
    import keras
except ModuleNotFoundError as _exc:
    if _exc.name == "keras":
        raise ModuleNotFoundError(
            "runai.reporter.keras needs Keras 3: pip install 'runai[keras]'", name="keras"
        ) from _exc
    if _exc.name in ("tensorflow", "jax", "torch"):  # Keras is there; its backend is not
        raise ModuleNotFoundError(
            f"Keras cannot load its backend ({_exc}): install it, or pick an installed one with "
            "KERAS_BACKEND=torch, jax or tensorflow",
            name=_exc.name,
        ) from _exc
    raise

from ._autolog import AUTOLOG_DEFAULTS, AutologCallbackMixin
from ._autolog_fit import AutologState as _Autolog
from ._autolog_fit import with_callback
from ._reporter import Reporter as _BaseReporter

__all__ = [
    "AUTOLOG_DEFAULTS",
    "Reporter",
    "ReporterCallback",
    "autolog",
    "autologged",
    "disableAutoLog",
    "disableAutolog",
]

logger = logging.getLogger(__name__)


class ReporterCallback(AutologCallbackMixin, keras.callbacks.Callback):  # type: ignore[misc]
    """A Keras callback that reports training progress through runai.reporter.

    Pass it to ``fit(callbacks=[...])`` yourself, or let :func:`autolog` add it.

    Args:
        reporter: the :class:`runai.reporter.Reporter` to report through;
            None reports through the global (non-scoped) reporter.
        every_n_steps: report batch metrics (``step``, ``loss``, ...) every N
            batches instead of every batch.
        batch_size: the batch size to report; ``autolog`` fills it in from
            ``fit``'s arguments.
        **options: 0.4.1's switches, see :data:`AUTOLOG_DEFAULTS`.
    """


# -- patching -----------------------------------------------------------------


_INHERITED = object()  # an original that was only inherited: deleting ours restores it
_active: _Autolog | None = None
_patch_lock = threading.RLock()


def autolog(*, every_n_steps: int = 1, **options: bool) -> None:
    """Report every ``fit`` through the global (non-scoped) reporter.

    Options are runai 0.4.1's (see :data:`AUTOLOG_DEFAULTS`). Calling it again
    replaces the options; it never wraps ``fit`` twice.
    """
    _enable(None, every_n_steps, options)


def disableAutolog() -> None:  # 0.4.1's name
    """Stop autologging and restore Keras' original ``fit`` methods exactly."""
    global _active
    with _patch_lock:
        state, _active = _active, None
        if state is None:
            return
        for (cls, attr), original in state.originals.items():
            if original is _INHERITED:
                delattr(cls, attr)
            else:
                setattr(cls, attr, original)


disableAutoLog = disableAutolog  # the spelling 0.4.1 actually shipped


def autologged() -> bool:
    """True while autologging is enabled."""
    return _active is not None


class Reporter(_BaseReporter):
    """A :class:`runai.reporter.Reporter` that can autolog Keras training.

    ``Reporter(autolog=True)`` enables autologging through this reporter;
    leaving the ``with`` block (or :meth:`finish`) disables it again.
    Autolog options (``loss_method=True``, ...) may be given here too; every
    other keyword is a Reporter setting.
    """

    def __init__(self, autolog: bool = False, **options: Any) -> None:
        autolog_options = {k: options.pop(k) for k in list(options) if k in AUTOLOG_DEFAULTS}
        every_n_steps = options.pop("every_n_steps", 1)
        super().__init__(**options)
        if autolog:
            self.autolog(every_n_steps=every_n_steps, **autolog_options)
        elif autolog_options:
            raise TypeError("autolog options were given but autolog is off: pass autolog=True")

    def autolog(self, *, every_n_steps: int = 1, **options: bool) -> None:
        """Report every ``fit`` through this reporter until it finishes."""
        _enable(self, every_n_steps, options)

    def finish(self, timeout: float | None = None) -> bool:
        if _active is not None and _active.reporter is self:
            disableAutolog()
        return super().finish(timeout)


def _enable(reporter: _BaseReporter | None, every_n_steps: int, options: dict[str, bool]) -> None:
    global _active
    # Validate now, in the caller, rather than at the first fit.
    ReporterCallback(reporter, every_n_steps=every_n_steps, **options)
    with _patch_lock:
        if _active is not None:  # re-enabling replaces the settings, keeps the patches
            _active.reporter, _active.every_n_steps, _active.options = reporter, every_n_steps, options
            return
        state = _Autolog(reporter, every_n_steps, options)
        _patch(state, keras.Model, "fit", ReporterCallback)
        tf_keras = _tf_keras()
        if tf_keras is not None:
            callback_class = _tf_keras_callback_class(tf_keras)
            for name in ("fit", "fit_generator"):
                if hasattr(tf_keras.Model, name):
                    _patch(state, tf_keras.Model, name, callback_class)
        _active = state


def _tf_keras() -> Any:
    """The Keras 2 package (``tf_keras``) if it is installed, else None."""
    if importlib.util.find_spec("tf_keras") is None:
        return None
    try:
        import tf_keras
    except Exception as exc:  # a broken TensorFlow must not stop Keras 3 autologging
        logger.warning("tf_keras is installed but cannot be imported (%s); not autologging it", exc)
        return None
    return tf_keras


@functools.lru_cache(maxsize=None)
def _tf_keras_callback_class(tf_keras: Any) -> type:
    # Keras 2's CallbackList calls private hooks that only its own Callback has.
    class TFKerasReporterCallback(AutologCallbackMixin, tf_keras.callbacks.Callback):  # type: ignore[misc]
        pass

    return TFKerasReporterCallback


def _patch(state: _Autolog, cls: type, attr: str, callback_class: type) -> None:
    original = getattr(cls, attr)
    state.originals[(cls, attr)] = cls.__dict__.get(attr, _INHERITED)
    # Arguments are found by name in the method's own signature: positions differ
    # (tf_keras' fit_generator takes callbacks 5th, after self, and no batch_size).
    signature = inspect.signature(original)

    @functools.wraps(original)
    def fit_with_autolog(model: Any, *args: Any, **kwargs: Any) -> Any:
        active = _active
        if active is not None:
            try:
                args, kwargs = with_callback(active, callback_class, signature, model, args, kwargs, keras.tree.flatten)
            except Exception as exc:  # never break training
                logger.warning(
                    "runai autologging could not attach to fit (%s: %s); training without it", type(exc).__name__, exc
                )
        return original(model, *args, **kwargs)

    fit_with_autolog.__runai_autolog__ = True  # type: ignore[attr-defined]
    setattr(cls, attr, fit_with_autolog)
