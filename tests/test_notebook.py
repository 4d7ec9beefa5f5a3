"""notebook.skip_remaining_cells: later cells run nothing, in an IPython shell."""

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nero_lite import notebook


def test_cells_after_the_skip_run_nothing(capsys):
    shell = InteractiveShell.instance()
    before = list(shell.input_transformers_cleanup)
    try:
        shell.run_cell("x = 1")
        shell.run_cell("from nero_lite import notebook; notebook.skip_remaining_cells('no images')")
        assert "Every later cell of this notebook is skipped: no images" in capsys.readouterr().out
        result = shell.run_cell("x = 2\nraise ValueError('never raised')")
        assert result.success and shell.user_ns["x"] == 1
    finally:
        shell.input_transformers_cleanup[:] = before
        InteractiveShell.clear_instance()


def test_outside_ipython_it_refuses():
    with pytest.raises(RuntimeError, match="IPython"):
        notebook.skip_remaining_cells("no images")
