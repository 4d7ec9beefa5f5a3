"""What the book's notebooks need from IPython: stop a chapter early and visibly when what it needs is missing.

Chapter 8 needs the real images. Without them it says why in one place, at its top, and
:func:`skip_remaining_cells` turns every later cell of the kernel into a comment, so the
chapter still runs to its end (in CI and in a reader's Jupyter) without one ``if`` per cell.
"""

from __future__ import annotations

__all__ = ["skip_remaining_cells"]


def skip_remaining_cells(reason: str) -> None:
    """From the next cell on, run nothing in this IPython kernel, and say so in one line.

    Every later cell's source is replaced, before it runs, by the comment ``# skipped: reason``
    (an IPython input transformer), so the cells produce no output and no error. Restart the
    kernel to run them again. Raises :class:`RuntimeError` outside IPython (a script has no
    later cells to skip).
    """
    try:
        from IPython import get_ipython
    except ImportError:  # IPython is not installed
        shell = None
    else:
        shell = get_ipython()
    if shell is None:
        raise RuntimeError("skip_remaining_cells works in a notebook or IPython only")
    comment = "# skipped: " + " ".join(reason.split())
    shell.input_transformers_cleanup.append(lambda lines: [comment + "\n"])
    print(f"Every later cell of this notebook is skipped: {reason}")
