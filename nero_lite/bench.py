"""Benchmark: every detector's metrics and timings, and NERO's throughput against a plain forward pass.

Run ``python -m nero_lite.bench --dataset synthetic --arch resnet18``. It prints

* per detector: AUROC / FPR95 / AUPR-In / AUPR-Out (pooled over the OOD classes) and
  the seconds spent fitting and scoring;
* throughput in images/s of (a) a plain ``model(x)`` forward pass and (b)
  :func:`~nero_lite.extraction.extract` followed by NERO's score, over the same images in
  the same run, and their ratio (b)/(a);

and writes ``bench-<dataset>-<arch>.csv`` (the detector table) and ``.json`` (all of it)
into ``--out``.

``python -m nero_lite.bench flag --n-images 20000 --size 64 --batch-size 256`` benchmarks
``python -m nero_lite flag`` on a folder of many PNG files instead (:func:`flag_benchmark`):
images/s and peak RSS of ``flag`` end to end and of a plain forward pass over the same
files, each in its own subprocess, and the peak RSS of ``flag`` on a quarter of the folder.

``python -m nero_lite.bench scale --counts 1000,20000,100000`` compares the engines of ``flag``
(:func:`scale_benchmark`): ``--engine local`` and ``--engine ray`` with 1 and 2 workers, beside
a plain forward pass, on folders of growing size: images/s, and the peak memory of the
driver and of each Ray worker.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image

from . import detectors
from .compare import compare_detectors, extract_splits
from .data import image_files, load, read_image, to_input, write_imagefolder
from .devices import resolve_device, synchronize
from .extraction import extract
from .models import ARCHITECTURES
from .synthetic import SyntheticConfig
from .training import train_classifier


@torch.no_grad()
def _forward_seconds(model, images, device, batch_size: int) -> float:
    synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        model(to_input(images[i : i + batch_size], device))
    synchronize(device)
    return time.perf_counter() - start


def throughput(model, imageset, nero, device, batch_size: int = 256, repeats: int = 3) -> dict[str, float]:
    """Images per second of a plain forward pass and of extract + NERO score, in one run.

    After one untimed warm-up of each, the two are interleaved ``repeats`` times over the
    same images (forward, extract + score, forward, ...). The images/s are medians over the
    rounds, and ``ratio_extract_nero_to_forward`` is the median of the per-round ratios
    :math:`t_\\text{forward} / t_\\text{extract+NERO}` (1 = as fast as a forward pass).
    """
    model = model.to(device).eval()

    def extract_and_score() -> float:
        synchronize(device)
        start = time.perf_counter()
        nero.score(extract(model, imageset, device, batch_size=batch_size, progress=False))
        synchronize(device)
        return time.perf_counter() - start

    _forward_seconds(model, imageset.images[:batch_size], device, batch_size)  # warm-up
    extract_and_score()
    rounds = [(_forward_seconds(model, imageset.images, device, batch_size), extract_and_score()) for _ in range(repeats)]
    n = len(imageset)
    return {
        "images": n,
        "forward_images_per_s": n / statistics.median(forward for forward, _ in rounds),
        "extract_nero_images_per_s": n / statistics.median(nero_s for _, nero_s in rounds),
        "ratio_extract_nero_to_forward": statistics.median(forward / nero_s for forward, nero_s in rounds),
    }


def _write_png(image: torch.Tensor, path: Path) -> None:
    """Write a uint8 ``3×H×W`` image as a PNG file."""
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


def _write_flag_folders(root: Path, counts: list[int], size: int, train_per_class: int, seed: int) -> tuple[Path, dict[int, Path]]:
    """Write the synthetic training set as an ImageFolder, and folders of PNG files to flag, one per count of ``counts``.

    The files to flag recycle the synthetic ID test and OOD images (so some get flagged);
    copy ``i`` flips the lowest bit of each pixel by a seeded random pattern of its own, so
    no two files are the same. The largest count's folder holds the files; each smaller
    one hard links to its first files. Returns the training folder and the folder of each count.
    """
    config = SyntheticConfig(n_train=train_per_class, n_test=train_per_class // 2, n_ood=train_per_class // 2)
    splits = load("synthetic", size=size, seed=seed, config=config, cache=False, progress=False)
    train = write_imagefolder(splits.train, root / "train")
    pool = torch.cat([splits.test.images, splits.ood.images])
    folders = {count: root / f"images-{count}" for count in sorted(set(counts))}
    for folder in folders.values():
        folder.mkdir()
    generator = torch.Generator().manual_seed(seed)
    for i in range(max(folders)):
        bits = torch.randint(0, 2, pool.shape[1:], generator=generator, dtype=torch.uint8)
        path = folders[max(folders)] / f"{i:06d}.png"
        _write_png(pool[i % len(pool)] ^ bits, path)
        for count, folder in folders.items():
            if i < count < max(folders):
                os.link(path, folder / path.name)
    return train, folders


@torch.no_grad()
def forward_folder(bundle: str | os.PathLike, folder: str | os.PathLike, batch_size: int, device: str = "auto") -> None:
    """A plain forward pass over every image file under ``folder``, as ``flag`` lists and reads them.

    Batches of ``batch_size`` files are read with :func:`~nero_lite.data.read_image`, turned
    into input with :func:`~nero_lite.data.to_input` and passed through the bundle's model;
    nothing is scored or written. :func:`flag_benchmark` runs it in a subprocess, beside ``flag``.
    """
    from .bundle import load_bundle

    loaded = load_bundle(bundle)
    device = resolve_device(device)
    model = loaded.model.to(device).eval()
    files = image_files(Path(folder), recursive=True)
    for first in range(0, len(files), batch_size):
        pixels = torch.stack([read_image(path, loaded.size) for path in files[first : first + batch_size]])
        model(to_input(pixels, device))
    synchronize(device)


def measured_child(argv: list[str]) -> None:
    """The body of each subprocess :func:`flag_benchmark` times: ``RSS_FILE flag ARGS...`` or ``RSS_FILE forward ARGS...``.

    ``flag`` runs ``python -m nero_lite flag ARGS...`` (the module, as from the shell),
    ``forward`` :func:`forward_folder` ``(BUNDLE, FOLDER, BATCH_SIZE, DEVICE)``. Either way it
    writes its own peak resident memory in KiB into ``RSS_FILE`` as it ends: ``VmHWM`` of
    ``/proc/self/status`` (Linux), the high-water mark of this program's memory alone.
    ``ru_maxrss`` would not do: it carries over the parent's size through fork and exec.
    """
    rss_file, mode, *args = argv
    try:
        if mode == "flag":
            sys.argv = ["nero_lite", "flag", *args]
            runpy.run_module("nero_lite", run_name="__main__", alter_sys=True)
        else:
            forward_folder(args[0], args[1], int(args[2]), args[3])
    finally:
        status = Path("/proc/self/status").read_text().splitlines()
        Path(rss_file).write_text(next(line for line in status if line.startswith("VmHWM:")).split()[1])


def _timed_subprocess(args: list[str], root: Path) -> tuple[float, float]:
    """Run :func:`measured_child` ``(args)`` in a fresh Python; returns its wall seconds and peak RSS in MiB.

    Its output goes to a log in ``root``; a failure raises with the log's tail.
    """
    rss_file, log = root / "rss.txt", root / f"{args[0]}.log"
    command = [sys.executable, "-c", "import sys; from nero_lite.bench import measured_child; measured_child(sys.argv[1:])",
               str(rss_file), *args]
    with open(log, "wb") as output:
        start = time.perf_counter()
        status = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} exited with status {status}:\n{log.read_text(errors='replace')[-2000:]}")
    return seconds, int(rss_file.read_text()) / 1024


def flag_benchmark(n_images: int = 20000, size: int = 64, batch_size: int = 256, repeats: int = 3, *,
                   arch: str = "resnet18d", epochs: int = 2, train_per_class: int = 100, device: str = "auto",
                   seed: int = 0) -> dict[str, float]:
    """Images/s and peak RSS of ``python -m nero_lite flag`` on ``n_images`` files, against a plain forward pass.

    In a temporary folder (removed at the end) it writes, once and timed apart
    (``write_s``): a synthetic training set of ``train_per_class`` images per class, and
    ``n_images`` PNG files of ``size``×``size`` recycled from the synthetic ID test and OOD
    images, each with its own lowest-bit noise. It fits a
    bundle on the training set once with ``python -m nero_lite fit`` in-process (``arch``,
    ``epochs``, default detectors; ``fit_s``). Each measured run is a subprocess, so its
    wall time includes starting Python, importing and loading the bundle, and its peak RSS
    is exactly its own (:func:`measured_child`):

    * ``flag``: ``python -m nero_lite flag BUNDLE IMAGES --explain 0 --batch-size B``, end
      to end (reading, scoring every detector of the bundle, writing flags.csv, report.html
      and run.json);
    * ``forward``: :func:`forward_folder` over the same files, same batch size, same model.

    After one untimed ``flag`` on the quarter folder (``n_images // 4`` of the files; its
    peak RSS is ``flag_quarter_peak_rss_mib``: memory held by a batch, not the folder),
    the two are interleaved ``repeats`` times (forward, flag, forward, ...). The images/s
    are medians over the rounds, ``ratio_flag_to_forward`` the median of the per-round
    ratios :math:`t_\\text{forward} / t_\\text{flag}` (1 = as fast as a forward pass), and
    each peak RSS the largest over the rounds.
    """
    from . import cli

    with tempfile.TemporaryDirectory(prefix="nero_lite-flag-bench-") as temp:
        root = Path(temp)
        start = time.perf_counter()
        train, folders = _write_flag_folders(root, [n_images, n_images // 4], size, train_per_class, seed)
        full, quarter = folders[n_images], folders[n_images // 4]
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        bundle = root / "bundle"
        status = cli.main(["fit", "--train", str(train), "--out", str(bundle), "--arch", arch, "--size", str(size),
                           "--epochs", str(epochs), "--seed", str(seed), "--device", device, "--no-cache"])
        if status != 0:
            raise RuntimeError(f"fitting the bundle failed with status {status}")
        fit_s = time.perf_counter() - start

        def flag(folder: Path) -> tuple[float, float]:
            return _timed_subprocess(["flag", str(bundle), str(folder), "--out", str(root / "report"), "--explain", "0",
                                      "--batch-size", str(batch_size), "--device", device], root)

        def forward() -> tuple[float, float]:
            return _timed_subprocess(["forward", str(bundle), str(full), str(batch_size), device], root)

        _, quarter_rss = flag(quarter)
        rounds = [(forward(), flag(full)) for _ in range(repeats)]
    return {
        "images": n_images,
        "quarter_images": n_images // 4,
        "size": size,
        "batch_size": batch_size,
        "repeats": repeats,
        "write_s": write_s,
        "fit_s": fit_s,
        "forward_images_per_s": n_images / statistics.median(fwd[0] for fwd, _ in rounds),
        "flag_images_per_s": n_images / statistics.median(flg[0] for _, flg in rounds),
        "ratio_flag_to_forward": statistics.median(fwd[0] / flg[0] for fwd, flg in rounds),
        "forward_peak_rss_mib": max(fwd[1] for fwd, _ in rounds),
        "flag_peak_rss_mib": max(flg[1] for _, flg in rounds),
        "flag_quarter_peak_rss_mib": quarter_rss,
    }


class _WorkerPeaks:
    """Peak resident memory (MiB) of each Ray Data map worker process while the block runs,
    by polling ``VmHWM`` of the processes titled ``ray::MapWorker...`` in ``/proc`` every
    0.2 s (Linux): the workers are not children of the measured program."""

    def __init__(self):
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> _WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            for process in Path("/proc").iterdir():
                if not process.name.isdigit():
                    continue
                try:
                    if not (process / "cmdline").read_bytes().startswith(b"ray::MapWorker"):
                        continue
                    status = (process / "status").read_text().splitlines()
                except OSError:  # the process ended meanwhile
                    continue
                peak = int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024
                self.peaks[int(process.name)] = max(peak, self.peaks.get(int(process.name), 0.0))


def scale_benchmark(counts: tuple[int, ...] = (1000, 20000, 100000), size: int = 32, batch_size: int = 256,
                    repeats: tuple[int, ...] = (3, 3, 1), workers: tuple[int, ...] = (1, 2), *, arch: str = "resnet18d",
                    epochs: int = 2, train_per_class: int = 100, device: str = "auto", seed: int = 0) -> list[dict]:
    """Images/s and peak memory of ``flag --engine local`` and ``flag --engine ray --workers N`` on folders of ``counts`` PNG files.

    Writes the folders and fits a bundle as :func:`flag_benchmark` does (the largest folder
    holds the files, the smaller ones link to its first files). For each count it runs, in
    ``repeats`` interleaved rounds, each in its own subprocess: the plain forward pass of
    :func:`forward_folder`, ``flag --explain 0`` with the local engine, then with
    ``--engine ray --workers N`` for each N of ``workers`` (Ray started by the command on
    all cores and GPUs of this machine, its start counted). One row per count and run:
    images/s (median over the rounds), ``ratio_to_forward`` (median of the per-round
    :math:`t_\\text{forward} / t_\\text{run}`), the peak RSS of the driver (the command's own
    process) and the largest peak RSS of a Ray worker (polled in /proc while the run lasts), in MiB.
    """
    from . import cli

    rows = []
    with tempfile.TemporaryDirectory(prefix="nero_lite-scale-bench-") as temp:
        root = Path(temp)
        train, folders = _write_flag_folders(root, list(counts), size, train_per_class, seed)
        bundle = root / "bundle"
        if cli.main(["fit", "--train", str(train), "--out", str(bundle), "--arch", arch, "--size", str(size),
                     "--epochs", str(epochs), "--seed", str(seed), "--device", device, "--no-cache"]) != 0:
            raise RuntimeError("fitting the bundle failed")
        runs = {"forward": None, "local": ["--engine", "local"],
                **{f"ray, {n} worker{'s' * (n > 1)}": ["--engine", "ray", "--workers", str(n)] for n in workers}}
        for count, rounds in zip(counts, repeats):
            measured: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
            for _ in range(rounds):
                for name, engine in runs.items():
                    if engine is None:
                        args = ["forward", str(bundle), str(folders[count]), str(batch_size), device]
                    else:
                        args = ["flag", str(bundle), str(folders[count]), "--out", str(root / "report"), "--explain", "0",
                                "--batch-size", str(batch_size), *engine]
                    with _WorkerPeaks() as workers_seen:
                        seconds, rss = _timed_subprocess(args, root)
                    measured[name].append((seconds, rss, max(workers_seen.peaks.values(), default=0.0)))
            for name, results in measured.items():
                rows.append({
                    "images": count, "run": name, "rounds": rounds,
                    "images_per_s": count / statistics.median(r[0] for r in results),
                    "ratio_to_forward": statistics.median(f[0] / r[0] for f, r in zip(measured["forward"], results)),
                    "driver_peak_rss_mib": max(r[1] for r in results),
                    "worker_peak_rss_mib": max(r[2] for r in results),
                })
    return rows


def scale_main(argv: list[str]) -> list[dict]:
    """``python -m nero_lite.bench scale ...``: run :func:`scale_benchmark`, print its table, write its JSON."""
    parser = argparse.ArgumentParser(prog="python -m nero_lite.bench scale",
                                     description=scale_benchmark.__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,20000,100000", help="image files per folder, comma-separated")
    parser.add_argument("--repeats", default="3,3,1", help="interleaved rounds for each count, comma-separated")
    parser.add_argument("--workers", default="1,2", help="the --workers of each Ray run, comma-separated")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--arch", default="resnet18d", choices=ARCHITECTURES)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the JSON")
    args = parser.parse_args(argv)
    numbers = lambda text: tuple(int(value) for value in text.split(","))  # noqa: E731
    rows = scale_benchmark(numbers(args.counts), args.size, args.batch_size, numbers(args.repeats), numbers(args.workers),
                           arch=args.arch, device=args.device)
    print(f"\nflag on folders of PNG files of {args.size}×{args.size}, batch {args.batch_size}, {args.arch}, "
          f"{os.cpu_count()} CPUs, {torch.cuda.device_count()} GPU(s); medians of interleaved rounds")
    print(f"{'images':>8}  {'run':<20}{'rounds':>7}{'images/s':>10}{'÷ forward':>10}{'driver MiB':>12}{'worker MiB':>12}")
    for row in rows:
        print(f"{row['images']:>8}  {row['run']:<20}{row['rounds']:>7}{row['images_per_s']:>10.0f}{row['ratio_to_forward']:>10.2f}"
              f"{row['driver_peak_rss_mib']:>12.0f}{row['worker_peak_rss_mib'] or float('nan'):>12.0f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-scale-{args.size}.json"
    path.write_text(json.dumps({"cpus": os.cpu_count(), "gpus": torch.cuda.device_count(), "size": args.size,
                                "batch_size": args.batch_size, "arch": args.arch, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return rows


def flag_main(argv: list[str]) -> dict:
    """``python -m nero_lite.bench flag ...``: run :func:`flag_benchmark`, print its table, write its JSON."""
    parser = argparse.ArgumentParser(prog="python -m nero_lite.bench flag",
                                     description=flag_benchmark.__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", default="resnet18d", choices=ARCHITECTURES)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of the bundle's classifier")
    parser.add_argument("--train-per-class", type=int, default=100, help="synthetic training images per class")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the JSON")
    args = parser.parse_args(argv)
    result = flag_benchmark(args.n_images, args.size, args.batch_size, args.repeats, arch=args.arch, epochs=args.epochs,
                            train_per_class=args.train_per_class, device=args.device, seed=args.seed)
    result["cpu_threads"] = torch.get_num_threads()
    print(f"\nflag on {result['images']} PNG files of {args.size}×{args.size}, batch {args.batch_size}, {args.arch}, "
          f"{result['cpu_threads']} CPU threads; median of {args.repeats} interleaved rounds "
          f"(files written in {result['write_s']:.0f} s, bundle fitted in {result['fit_s']:.0f} s, neither timed below)")
    print(f"{'run':<28}{'images/s':>10}{'peak RSS MiB':>14}")
    print(f"{'forward pass (read+model)':<28}{result['forward_images_per_s']:>10.0f}{result['forward_peak_rss_mib']:>14.0f}")
    print(f"{'flag --explain 0':<28}{result['flag_images_per_s']:>10.0f}{result['flag_peak_rss_mib']:>14.0f}")
    print(f"{'flag, ' + str(result['quarter_images']) + ' files':<28}{'':>10}{result['flag_quarter_peak_rss_mib']:>14.0f}")
    print(f"ratio flag / forward (t_forward / t_flag): {result['ratio_flag_to_forward']:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-flag-{args.n_images}-{args.size}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return result


def main(argv: list[str] | None = None) -> dict:
    """Entry point of ``python -m nero_lite.bench``: the detector benchmark, or with ``flag`` first :func:`flag_main`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["flag"]:
        return flag_main(argv[1:])
    if argv[:1] == ["scale"]:
        return scale_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m nero_lite.bench", description=__doc__.split("\n\n")[0],
                                     epilog="python -m nero_lite.bench flag --help: the benchmark of `flag` on many image files; "
                                            "python -m nero_lite.bench scale --help: its engines on growing folders")
    parser.add_argument("--dataset", default="synthetic", help="synthetic, hyperkvasir, kvasir, gastrovision or a folder")
    parser.add_argument("--arch", default="resnet18d", choices=ARCHITECTURES)
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (dataset default when omitted)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the CSV and JSON")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    splits = load(args.dataset, size=args.size, seed=args.seed)
    model = train_classifier(splits.train, args.arch, seed=args.seed, device=device)
    outputs = extract_splits(model, splits, device)
    table, _ = compare_detectors(outputs, splits, model=model)
    pooled = table[table.ood_class == "all"].set_index("detector")
    pooled = pooled[["auroc", "fpr95", "aupr_in", "aupr_out", "fit_s", "score_s"]]
    nero = detectors.create("nero").fit(outputs.train)
    speed = throughput(model, splits.test, nero, device, args.batch_size)

    print(f"\n{splits.name} / {args.arch} on {device} ({torch.get_num_threads()} CPU threads)")
    print(pooled.to_string(float_format=lambda v: f"{v:.3f}"))
    print(
        f"\nthroughput over {speed['images']} images: forward {speed['forward_images_per_s']:.0f} img/s, "
        f"extract + NERO {speed['extract_nero_images_per_s']:.0f} img/s, "
        f"ratio {speed['ratio_extract_nero_to_forward']:.2f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-{Path(str(args.dataset)).name}-{args.arch}"
    table.to_csv(stem.with_suffix(".csv"), index=False)
    report = {
        "dataset": splits.name,
        "arch": args.arch,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "accuracy": float((outputs.test.predictions() == outputs.test.labels).float().mean()),
        "detectors": pooled.reset_index().to_dict(orient="records"),
        "throughput": speed,
    }
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.json')}")
    return report


if __name__ == "__main__":
    main()
