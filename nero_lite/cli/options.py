"""What the commands of ``python -m nero_lite`` share on their command line: the argument types,
the option groups (the classifier, the detectors, ``--explain``, ``--device`` and ``--no-cache``),
the parser that reports bad usage in one line, and the checks of the folders, ``--device``,
``--out`` and the cache made before any image is read.

Parsing imports nothing heavy (the names offered come from :mod:`nero_lite.constants`), so
``--help`` and a usage error answer at once; the checks after parsing import what they need
(torch for ``--device``, timm for an architecture that is not one of ours).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from ..constants import ARCHITECTURES, CORNER_FRACTION, DETECTORS, PRESETS, TEXT_MARGIN_FRACTION

__all__ = ["CommandOptions", "EngineOptions", "ModelOptions", "Parser", "add_detector_options", "add_device_option", "add_engine_options",
           "add_explain_option", "add_model_options", "add_run_options", "check_model", "device_or_out_problem", "engine_problem",
           "folder_problem", "fraction", "positive"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommandOptions:
    """The options of one command, resolved once at the entry point (:func:`nero_lite.cli.main`) into a typed record.

    A command's record has one field per option of its parser (``command`` is the name it was
    called by: ``score`` runs ``evaluate``); :meth:`from_namespace` refuses a namespace with
    other names, so the record and the parser cannot drift apart.
    """

    command: str
    out: Path
    device: str

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> CommandOptions:
        """The record of a parsed command line."""
        return cls(**vars(namespace))

    def as_json(self) -> dict:
        """The options as ``run.json`` holds them (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineOptions(CommandOptions):
    """The options that choose where the images are read and scored (:func:`add_engine_options`)."""

    engine: str
    address: str | None
    workers: int | None
    gpus_per_worker: float | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOptions(EngineOptions):
    """The options ``evaluate`` and ``fit`` share: the classifier (:func:`add_model_options`), the
    detectors (:func:`add_detector_options`) and the run (:func:`add_run_options`)."""

    arch: str
    pretrained: bool
    weights: Path | None
    recipe: str
    size: int
    epochs: int
    seed: int
    mask_corner: bool
    mask_text: bool
    preset: str
    detectors: list[str]
    no_cache: bool


def _detector_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in DETECTORS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown detector(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(DETECTORS)}"
        )
    return list(dict.fromkeys(names))


def _architecture(text: str) -> str:
    if text in ARCHITECTURES:
        return text
    import timm  # only for a name that is not one of ours: timm's registry takes seconds to import

    if not timm.is_model(text):
        raise argparse.ArgumentTypeError(f"unknown architecture {text!r}: choose {', '.join(ARCHITECTURES)} or a timm model name")
    return text


def positive(text: str) -> int:
    """An argument type: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _gpus(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _preset(text: str) -> str:
    if text == "reference":  # the name of the official preset before this release
        print("python -m nero_lite: --preset reference is now --preset official (NERO's official code's settings)", file=sys.stderr)
        return "official"
    return text


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def fraction(text: str) -> float:
    """An argument type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``evaluate`` and ``fit`` that choose, train and mask the classifier."""
    parser.add_argument("--arch", type=_architecture, default="resnet18d", metavar="ARCH",
                        help="the classifier: resnet18d (timm ResNet-18-D, whose relevance maps have no fixed grid), resnet18 "
                             "(the paper's CNN), vit (DeiT-Tiny on an 8×8 grid of patches), deit_small (the paper's "
                             "transformer, 16-pixel patches) or any timm model name with a linear head (default: resnet18d)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--pretrained", action="store_true",
                       help="fine-tune from timm's ImageNet weights (downloaded: needs internet; resnet18 gets torchvision's, as the paper)")
    start.add_argument("--weights", type=Path, metavar="FILE",
                       help="start from a local safetensors or weights-only torch state dict of ARCH: a whole classifier "
                            "whose head has one output per training class is used as it is (no training); any other "
                            "(e.g. ImageNet weights) is fine-tuned with a new head")
    parser.add_argument("--recipe", choices=("book", "paper"), default="book",
                        help="training recipe: book (AdamW, one-cycle, flips and transposes) or paper (the NERO paper's: "
                             "Adam lr 1e-4, batch 32, flips, colour jitter, invert, equalize) (default: book)")
    parser.add_argument("--size", type=positive, default=128, help="images are center-cropped and resized to SIZE×SIZE pixels (default: 128)")
    parser.add_argument("--epochs", type=positive, default=20, help="training epochs (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds initialisation, batch order and augmentation (default: 0)")
    parser.add_argument("--mask-corner", action="store_true",
                        help=f"black out the lower-left {round(100 * CORNER_FRACTION)}%% square of every image (HyperKvasir's box)")
    parser.add_argument("--mask-text", action="store_true",
                        help=f"black out the left {round(100 * TEXT_MARGIN_FRACTION)}%% strip of every image (on-screen text)")


def add_explain_option(parser: argparse.ArgumentParser, text: str) -> None:
    """``--explain N`` (``evaluate``, ``flag``): how many of report.html's images are explained."""
    parser.add_argument("--explain", type=_non_negative, default=8, metavar="N", help=text)


def add_detector_options(parser: argparse.ArgumentParser, default: list[str], shown: str) -> None:
    """``--preset`` and ``--detectors`` (``evaluate``, ``fit``)."""
    parser.add_argument("--preset", type=_preset, choices=PRESETS, default="ours",
                        help="detector hyperparameters: ours (each method's paper) or official (NERO's official code, "
                             "for a resnet or vit/deit ARCH: NERO k=175, ReAct clip 0.9/0.99, ODIN T=100, eps=5e-4, NECO's "
                             "transformer form) (default: ours)")
    parser.add_argument("--detectors", type=_detector_list, default=default, metavar="NAMES",
                        help=f"comma-separated detectors, e.g. nero,msp,knn (default: {shown})")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` (every command)."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")


def add_engine_options(parser: argparse.ArgumentParser, work: str) -> None:
    """``--engine`` and the options of the Ray engine (every command); ``work`` says what the engine does."""
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help=f"local: {work} in this process, on one device; ray: {work} with Ray Data on a Ray cluster, "
                             "each worker holding the classifier once (needs nero_lite[scale]) (default: local)")
    parser.add_argument("--address", metavar="ADDR",
                        help="with --engine ray: the Ray cluster to use, auto (the one started here by `ray start --head`) "
                             "or HOST:PORT (default: start Ray on this machine, all its cores and GPUs)")
    parser.add_argument("--workers", type=positive, metavar="N",
                        help="with --engine ray: scoring workers (default: one per GPU of the cluster, else 1)")
    parser.add_argument("--gpus-per-worker", type=_gpus, metavar="G",
                        help="with --engine ray: GPUs of each worker, 0 for none; fractions share a GPU "
                             "(default: 1 where the cluster has GPUs, else 0)")


def engine_problem(args: EngineOptions) -> str | None:
    """What is wrong with the engine options, before Ray starts (``None``: nothing)."""
    if args.engine == "local":
        given = [name for name, value in (("--address", args.address), ("--workers", args.workers),
                                          ("--gpus-per-worker", args.gpus_per_worker)) if value is not None]
        return f"{', '.join(given)}: only with --engine ray" if given else None
    from ..scale import engine_problem as ray_problem

    return ray_problem(args.address, args.gpus_per_worker)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--no-cache`` and the engine (``evaluate``, ``fit``)."""
    add_device_option(parser)
    parser.add_argument("--no-cache", action="store_true", help="neither reuse nor store images and trained weights")
    add_engine_options(parser, "extract the images' features (training stays on one device)")


class Parser(argparse.ArgumentParser):
    """Reports bad usage as one line (``prog: error: ... (see --help)``) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_model(args: ModelOptions) -> str | None:
    """What is wrong with the options ``evaluate`` and ``fit`` share (``None``: nothing)."""
    from ..cache import cache_dir
    from ..detectors.presets import arch_family
    from ..models import read_weights, size_problem

    problem = size_problem(args.arch, args.size, "SIZE")
    if problem:
        return f"--size: {problem}"
    if args.preset == "official":
        try:
            arch_family(args.arch)
        except ValueError as error:
            return f"--preset official: {error}"
    if args.weights is not None:
        try:
            read_weights(args.weights)
        except (FileNotFoundError, ValueError) as error:
            return f"--weights: {error}"
    problem = device_or_out_problem(args) or engine_problem(args)
    if problem:
        return problem
    if not args.no_cache:
        problem = _unwritable(cache_dir(create=False))
        if problem:
            return f"the cache (NERO_LITE_CACHE): {problem}; set NERO_LITE_CACHE or use --no-cache"
    return None


def device_or_out_problem(args: CommandOptions) -> str | None:
    """What is wrong with ``--device`` and ``--out``, as one line (``None``: nothing); every command has both."""
    from ..devices import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as error:
        return f"--device: {error}"
    problem = _unwritable(args.out)
    return f"--out: {problem}" if problem else None


def folder_problem(option: str, folder: Path, wanted: str = "a folder") -> str | None:
    """Why ``folder`` (the value of ``option``) is not an existing folder (``None``: it is);
    for a file in its place the message asks for ``wanted`` instead."""
    if folder.is_file():
        return f"{option}: {folder} is a file; give {wanted}"
    if not folder.is_dir():
        return f"{option}: folder not found: {folder}"
    return None


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written to (``None``: it can); creates nothing."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{folder} cannot be created: {existing} is a file"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"{existing} is not writable ({error.strerror or error})"
    return None
