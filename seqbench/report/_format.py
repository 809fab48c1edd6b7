"""Labels and number formatting shared by figures and documents.

Why one place: the same configuration must read the same in a legend, a table and a
sentence, and a missing value must always print as an em dash - never as 0 or nan.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import pandas as pd

from seqbench.rundir import Metric

MISSING = "—"

_OPTIMIZER_NAMES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
}


def is_missing(x: object) -> bool:
    """None, NaN and pandas NA are missing; everything else is a value."""
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def num(x: object, digits: int = 3) -> str:
    """A number for humans: 3 significant digits, thousands grouped, integers exact."""
    if is_missing(x):
        return MISSING
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, Integral):
        return f"{int(x):,}" if abs(int(x)) >= 10000 else str(int(x))
    if isinstance(x, Real):
        v = float(x)
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}" if abs(v) >= 10000 else str(int(v))
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(x)


def lr(x: object) -> str:
    """A learning rate as written in a config (0.001, 2, 8)."""
    if is_missing(x):
        return MISSING
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)


def pct(x: object) -> str:
    return MISSING if is_missing(x) else f"{100.0 * float(x):.0f}%"


def interval(mean: object, lo: object, hi: object, digits: int = 3) -> str:
    """``mean [lo, hi]``; the bracket is left out when the interval is undefined."""
    if is_missing(mean):
        return MISSING
    m = float(mean)  # type: ignore[arg-type]
    if not math.isfinite(m) or m == 0 or abs(m) >= 10000:
        if is_missing(lo) or is_missing(hi):
            return num(mean, digits)
        return f"{num(mean, digits)} [{num(lo, digits)}, {num(hi, digits)}]"
    # one number of decimals for all three, from the mean's significant digits
    dec = max(0, digits - 1 - math.floor(math.log10(abs(m))))
    if is_missing(lo) or is_missing(hi):
        return f"{m:.{dec}f}"
    return f"{m:.{dec}f} [{float(lo):.{dec}f}, {float(hi):.{dec}f}]"  # type: ignore[arg-type]


def rate(k: object, n: object, lo: object, hi: object) -> str:
    """``k/n (rate [lo, hi])`` with a Wilson interval; ``—`` when n is 0."""
    if is_missing(n) or int(n) == 0:
        return MISSING
    k_i, n_i = int(k), int(n)  # type: ignore[call-overload]
    return f"{k_i}/{n_i} ({k_i / n_i:.2f} [{float(lo):.2f}, {float(hi):.2f}])"  # type: ignore[arg-type]


def optimizer(name: object) -> str:
    """Display name of an optimizer (``sgd`` -> ``SGD``)."""
    if is_missing(name):
        return MISSING
    return _OPTIMIZER_NAMES.get(str(name).lower(), str(name))


def clip_short(method: object, threshold: object) -> str:
    """Legend label of a clip setting: ``none``, ``norm 1``, ``value 0.5``."""
    if is_missing(method):
        return MISSING
    m = str(method)
    if m == "none" or is_missing(threshold):
        return m
    if m == "norm_relative":
        return f"norm {lr(threshold)}x median"
    if m == "norm_per_tensor":
        return f"per-tensor norm {lr(threshold)}"
    return f"{m} {lr(threshold)}"


def clip_phrase(method: object, threshold: object) -> str:
    """Sentence form: ``no clipping``, ``norm clipping at 1``."""
    if is_missing(method):
        return "an unknown clip setting"
    m = str(method)
    if m == "none":
        return "no clipping"
    if m == "norm_relative":
        if is_missing(threshold):
            return "relative norm clipping"
        return f"norm clipping at {lr(threshold)}x the median gradient norm"
    if m in _CLIP_NAMES:  # methods named after their source, with no single threshold
        return _CLIP_NAMES[m]
    if m == "norm_per_tensor":
        name = "per-tensor norm"
    elif m == "norm":
        name = "global norm"
    else:
        name = m
    if is_missing(threshold):
        return f"{name} clipping"
    return f"{name} clipping at {lr(threshold)}"


_CLIP_NAMES = {"autoclip": "AutoClip", "agc": "adaptive gradient clipping (AGC)",
               "zclip": "ZClip", "combined": "combined value and norm clipping",
               "graves": "Graves' per-group clipping"}


def metric(name: object) -> str:
    """Display name of a task's metric (``mse`` -> ``MSE``, ``error_rate`` -> ``error rate``)."""
    if is_missing(name):
        return MISSING
    return Metric(str(name), "").label


def metric_long(name: object) -> str:
    """The metric spelled out for titles (``bpc`` -> ``bits per character``)."""
    if is_missing(name):
        return MISSING
    return Metric(str(name), "").long


def short(x: object) -> str:
    """A value for a heatmap square: 2 decimals at 1 and above, 2 significant digits below.

    Why not :func:`num`: squares are small, and metrics range from bits per character
    (1.47) to mean squared errors (0.0012) - a fixed ``.2f`` would print the latter as 0.00.
    """
    if is_missing(x):
        return MISSING
    v = float(x)  # type: ignore[arg-type]
    if not math.isfinite(v):
        return num(v)
    if v == 0 or abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.2g}"


_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "tanh RNN", "rnn_relu": "ReLU RNN"}


def setting(key: str, value: object) -> str:
    """A config value in words: ``tanh RNN`` (model.cell), ``momentum 0.9`` or ``no
    momentum`` (optim.momentum), else ``key=value``."""
    if key == "model.cell":
        return _CELLS.get(str(value), str(value))
    if key == "optim.momentum":
        return f"momentum {num(value)}" if value else "no momentum"
    if key == "model.forget_bias":
        return f"forget bias {num(value)}"
    if key == "model.init" and value == "pascanu":
        return "Pascanu's init"
    if key == "spike":  # report.spikes.spike_label
        return "no spike" if value == "none" else f"spike: {value}"
    return f"{key}={value if isinstance(value, str) else num(value)}"


def join(items) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
