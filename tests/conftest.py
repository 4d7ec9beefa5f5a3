"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny networks on one torch thread, then restore the setting.

    Small models gain nothing from a second thread, and OpenMP threads stall each other
    when the two cores are shared with other work.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
