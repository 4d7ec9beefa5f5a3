"""Progress bars: one switch for the whole package.

Every long loop of the package (generating and reading images, training, extraction,
fitting detectors, scoring and explaining in the command line) shows a
`tqdm <https://tqdm.github.io>`_ bar on standard error, unless its caller passes
``progress=False`` or the environment sets ``NERO_LITE_PROGRESS=0``. The book's build sets
that variable (``make notebooks``, ``make book``), so that no bar lands in an executed
chapter; a reader running a chapter in Jupyter still sees them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm import tqdm

__all__ = ["bar", "enabled"]

#: Values of ``NERO_LITE_PROGRESS`` that switch every bar off (case-insensitive).
OFF = frozenset({"0", "false", "no", "off"})


def enabled() -> bool:
    """Whether bars are shown at all: ``NERO_LITE_PROGRESS`` is unset or not one of :data:`OFF`."""
    return os.environ.get("NERO_LITE_PROGRESS", "1").strip().lower() not in OFF


def bar(iterable: Iterable | None = None, *, show: bool = True, **kwargs) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``), hidden unless ``show`` and :func:`enabled`."""
    return tqdm(iterable, disable=not (show and enabled()), **kwargs)
