"""Scoring and extraction over a Ray cluster with `Ray Data <https://docs.ray.io/en/latest/data/>`_:
the ``--engine ray`` of ``python -m nero_lite flag``, ``evaluate`` and ``fit``.

The images are never gathered in one process. Ray Data reads the list of files in blocks;
:func:`decode` turns each batch into uint8 pixels on CPU tasks (as
:func:`~nero_lite.data.read_image` reads them, an unreadable file marked, not retried); a
pool of actors (``ActorPoolStrategy``), each holding the bundle or the classifier once,
scores or extracts the batches, on a GPU each when ``gpus_per_worker`` asks for it
(:class:`BundleScorer`, :class:`OutputsExtractor`); the results stream back to the caller
batch by batch, in the order of the files (``preserve_order``), so that ``flags.csv`` is
row for row the one of the local engine. On a machine without GPUs decoding and scoring
ask for the same resources, and Ray Data runs both in the actor (one operator, no pixels
between processes).

An actor whose process dies is restarted and its batches are run again (Ray Data's actors
have ``max_restarts=-1`` and ``max_task_retries=-1``): every file is scored once. An
exception raised by the scoring itself is not retried.

Ray is an optional dependency: ``pip install 'nero_lite[scale]'`` (``ray[data]``). Nothing
here imports it before :func:`engine_problem` has checked that it is installed. ::

    with cluster(address=None) as workers:  # a local Ray on all cores and GPUs of this machine
        for batch in score_files("bundle/", files, size=128, detector="nero", workers=workers):
            batch.files, batch.columns["score"], batch.unreadable
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .constants import FLAG_COLUMNS

if TYPE_CHECKING:
    from torch import nn

    from .data import ImageSet, Preprocessing
    from .outputs import Outputs

__all__ = ["CONNECT_SECONDS", "INSTALL", "BundleScorer", "EngineError", "OutputsExtractor", "ScoredBatch", "Workers", "cluster", "decode",
           "engine_problem", "extract_files", "score_files"]

#: How to install the engine's dependency (Ray Data), as the one-line errors say.
INSTALL = "pip install 'nero_lite[scale]'"
#: Seconds :func:`engine_problem` waits for an ``--address`` HOST:PORT to answer.
CONNECT_SECONDS = 3.0
_COLUMNS = FLAG_COLUMNS[1:]  # what a scorer returns for each file, beside the file


class EngineError(RuntimeError):
    """The Ray cluster failed or went away during a run (one line: what happened)."""


@dataclass
class ScoredBatch:
    """One batch of files scored: the ``files`` read, the columns of ``flags.csv`` for them
    (:meth:`~nero_lite.bundle.BundleScores.columns`) and the ``unreadable`` files skipped."""

    files: list[str]
    columns: dict[str, list]
    unreadable: list[str]


def local_gpus() -> int:
    """The GPUs torch sees on this machine."""
    import torch

    return torch.cuda.device_count()


def _import_ray():
    """Ray, with Ray Data imported, without the note it logs in Jupyter when ipywidgets is missing."""
    logging.getLogger("ray.widgets").setLevel(logging.WARNING)
    import ray
    import ray.data  # noqa: F401

    return ray


def engine_problem(address: str | None, gpus_per_worker: float | None) -> str | None:
    """What keeps ``--engine ray`` from running, as one line, found before Ray starts (``None``: nothing).

    Ray not installed; an ``--address`` ``HOST:PORT`` where nothing answers within
    :data:`CONNECT_SECONDS` (``auto`` is looked up when connecting, which fails at once when
    no cluster runs here); ``--gpus-per-worker`` above the GPUs of this machine when Ray is
    to start here (without ``--address``). A cluster's GPUs are counted by :func:`cluster`.
    """
    try:
        _import_ray()
    except ImportError:
        return f"--engine ray: Ray Data is not installed ({INSTALL})"
    if address not in (None, "auto"):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            return f"--address: give auto or HOST:PORT, got {address!r}"
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS):
                pass
        except OSError as error:
            return f"--address: no Ray cluster answers at {address} ({error.strerror or error})"
    if address is None and gpus_per_worker and gpus_per_worker > local_gpus():
        return f"--gpus-per-worker {gpus_per_worker:g}: this machine has {local_gpus()} GPU(s)"
    return None


@dataclass(frozen=True)
class Workers:
    """The actors a run gets on the cluster: ``count`` of them, ``gpus`` GPUs each; ``cpus``
    and ``cluster_gpus`` are the cluster's."""

    count: int
    gpus: float
    cpus: float
    cluster_gpus: float


@contextmanager
def cluster(address: str | None = None, workers: int | None = None, gpus_per_worker: float | None = None) -> Iterator[Workers]:
    """Connect to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``), or start one on this
    machine (``None``: all its cores and GPUs), for the duration of the block; yields the
    :class:`Workers` of the run. A Ray already initialised in this process (a notebook, a
    test) is used as it is and left running.

    Defaults: ``gpus_per_worker`` 1 where the cluster has GPUs, else 0; ``workers`` one per
    ``gpus_per_worker`` GPUs of the cluster, else 1. Raises :class:`EngineError` when no
    cluster answers and when ``gpus_per_worker`` is more than the cluster's GPUs (one line
    each). Ray Data's own progress bars and logs are off: the command shows a bar of its own.
    """
    ray = _import_ray()
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # one line from Ray, not its notes on every actor (ray#53727)
    started = not ray.is_initialized()
    if started:
        try:
            # "local": a new Ray here even where `ray start` left one running (that one is --address auto)
            ray.init(address=address or "local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        except ConnectionError as error:
            raise EngineError(f"--address {address}: {str(error).splitlines()[0]}") from None
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        # Ray Data 2.60 warns of its own deprecated settings each time it copies its context
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.data\.context")
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = True
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if gpus >= 1 else 0.0
        if gpus_per_worker > gpus:
            raise EngineError(f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has {gpus:g} GPU(s)")
        if workers is None:
            workers = max(1, int(gpus // gpus_per_worker)) if gpus_per_worker else 1
        yield Workers(count=workers, gpus=gpus_per_worker, cpus=cpus, cluster_gpus=gpus)
    finally:
        if started:
            ray.shutdown()


def decode(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """A batch of ``file`` names → uint8 ``pixels`` ``N×3×size×size`` and ``readable`` (zeros
    where a file cannot be read), read by :func:`~nero_lite.data.read_image`."""
    from .data import UNREADABLE, read_image

    pixels = np.zeros((len(batch["file"]), 3, size, size), dtype=np.uint8)
    readable = np.zeros(len(batch["file"]), dtype=bool)
    for i, file in enumerate(batch["file"]):
        try:
            pixels[i] = read_image(file, size).numpy()
            readable[i] = True
        except UNREADABLE:
            pass
    return {"file": batch["file"], "pixels": pixels, "readable": readable}


def _device(gpus_per_worker: float) -> str:
    return "cuda" if gpus_per_worker else "cpu"


class BundleScorer:
    """A Ray actor that loads the bundle in ``folder`` once and scores the readable images of
    each batch with it (:meth:`~nero_lite.bundle.Bundle.score`); returns the columns of
    ``flags.csv`` for every file of the batch (empty for an unreadable one)."""

    def __init__(self, folder: str, detector: str, gpus_per_worker: float = 0.0):
        from .bundle import Bundle

        self.bundle = Bundle.load(folder)
        self.detector = detector
        self.device = _device(gpus_per_worker)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        readable = batch["readable"]
        columns = {name: [] for name in _COLUMNS}
        if readable.any():
            pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][readable]))
            result = self.bundle.score(pixels, batch_size=len(pixels), device=self.device, progress=False)
            columns = result.columns(self.bundle.classes, self.detector, self.bundle.thresholds[self.detector])
        out = {"file": batch["file"], "readable": readable}
        blank = {"score": np.nan, "threshold": np.nan, "flagged": False}  # the rows of unreadable files; "" elsewhere
        for name in _COLUMNS:
            out[name] = np.full(len(readable), blank.get(name, ""), dtype=None if name in blank else object)
            out[name][readable] = columns[name]
        return out


def _pipeline(files: list, size: int, actor: type, args: tuple, batch_size: int, workers: Workers):
    """The Ray Data pipeline: files → :func:`decode` on CPU tasks → ``actor(*args)`` in a pool of ``workers``."""
    import ray.data

    items = ray.data.from_items([{"file": str(file)} for file in files])
    decoded = items.map_batches(decode, fn_kwargs={"size": size}, batch_size=batch_size, num_cpus=1)
    return decoded.map_batches(actor, fn_constructor_args=args, batch_size=batch_size, num_cpus=1,
                               num_gpus=workers.gpus or None, compute=ray.data.ActorPoolStrategy(size=workers.count))


@contextmanager
def _engine_errors() -> Iterator[None]:
    """Ray's failures during a run (a cluster gone away, a worker that cannot be restarted) as one :class:`EngineError` line."""
    import ray.exceptions

    try:
        yield
    except (ray.exceptions.RayError, ConnectionError) as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise EngineError(f"the Ray engine stopped: {type(error).__name__}: {lines[-1] if lines else ''}") from None


def score_files(folder: str | os.PathLike, files: list, *, size: int, detector: str, workers: Workers,
                batch_size: int = 256, actor: type = BundleScorer) -> Iterator[ScoredBatch]:
    """Score ``files`` with the bundle in ``folder`` (images of side ``size``) on the Ray cluster
    :func:`cluster` connected to: yields one :class:`ScoredBatch` per batch of ``batch_size``
    files, in the order of ``files``. ``actor`` is the scoring actor (a subclass of
    :class:`BundleScorer`)."""
    dataset = _pipeline(files, size, actor, (str(folder), detector, workers.gpus), batch_size, workers)
    with _engine_errors():
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            readable = batch["readable"]
            columns = {name: batch[name][readable].tolist() for name in _COLUMNS}
            yield ScoredBatch(files=batch["file"][readable].tolist(), columns=columns,
                              unreadable=batch["file"][~readable].tolist())


class OutputsExtractor:
    """A Ray actor that rebuilds the classifier once (``create_model(arch, classes, size)`` and
    the state dict ``state``) and returns the head's inputs and outputs of each batch
    (:func:`~nero_lite.extraction.extract`), preprocessed by ``preprocessing``."""

    def __init__(self, state: dict, arch: str, classes: int, preprocessing: Preprocessing, gpus_per_worker: float = 0.0):
        from .models import create_model

        self.model = create_model(arch, classes, preprocessing.size)
        self.model.load_state_dict(state)
        self.model.eval()
        self.preprocessing = preprocessing
        self.device = _device(gpus_per_worker)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from .data import to_input
        from .extraction import extract

        pixels = self.preprocessing.apply(torch.from_numpy(np.ascontiguousarray(batch["pixels"])))
        outputs = extract(self.model, to_input(pixels, self.device), self.device, batch_size=len(pixels), progress=False)
        return {"file": batch["file"], "readable": batch["readable"], "features": outputs.features.cpu().numpy(),
                "logits": outputs.logits.cpu().numpy()}


def extract_files(model: nn.Module, arch: str, preprocessing: Preprocessing, sets: list[ImageSet], *,
                  workers: Workers, batch_size: int = 256) -> list[Outputs]:
    """:func:`~nero_lite.extraction.extract` of each of ``sets`` on the Ray cluster :func:`cluster`
    connected to, the images read again from their files (``ImageSet.files``) and
    preprocessed by ``preprocessing``: one pass over the files of all sets, each worker
    holding a copy of ``model`` (an ``arch`` built by :func:`~nero_lite.models.create_model`).
    The outputs are on the CPU. The files must be readable (they were read once already): an
    unreadable one raises :class:`ValueError`."""
    import torch

    from .models import find_head
    from .outputs import Outputs

    missing = [i for i, images in enumerate(sets) if images.files is None]
    if missing:
        raise ValueError("--engine ray reads the images from their files: these images have no file names")
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}  # sent once per actor by Ray Data
    linear = find_head(model)
    args = (state, arch, linear.out_features, preprocessing, workers.gpus)
    files = [file for images in sets for file in images.files]
    features, logits = [], []
    with _engine_errors():
        for batch in _pipeline(files, preprocessing.size, OutputsExtractor, args, batch_size,
                               workers).iter_batches(batch_size=None, batch_format="numpy"):
            if not batch["readable"].all():
                raise ValueError(f"cannot read {batch['file'][~batch['readable']][0]}")
            features.append(torch.tensor(batch["features"]))
            logits.append(torch.tensor(batch["logits"]))
    features, logits = torch.cat(features).split([len(images) for images in sets]), torch.cat(logits).split([len(images) for images in sets])
    weight, bias = linear.weight.detach().float().cpu(), linear.bias.detach().float().cpu()
    return [Outputs(f, z, images.labels.cpu(), weight, bias) for f, z, images in zip(features, logits, sets)]
