"""Benchmark: every detector's metrics and timings, and NERO's throughput against a plain forward pass.

Run ``python -m nero_lite.bench --dataset synthetic --arch resnet18``. It prints

* per detector: AUROC / FPR95 / AUPR-In / AUPR-Out (pooled over the OOD classes) and
  the seconds spent fitting and scoring;
* throughput in images/s of (a) a plain ``model(x)`` forward pass and (b)
  :func:`~nero_lite.models.extract` followed by NERO's score, over the same images in
  the same run, and their ratio (b)/(a);

and writes ``bench-<dataset>-<arch>.csv`` (the detector table) and ``.json`` (all of it)
into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from . import detectors
from .compare import compare_detectors, extract_splits
from .data import load, to_input
from .models import ARCHITECTURES, extract, resolve_device, train_classifier


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _forward_seconds(model, images, device, batch_size: int) -> float:
    _synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        model(to_input(images[i : i + batch_size], device))
    _synchronize(device)
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
        _synchronize(device)
        start = time.perf_counter()
        nero.score(extract(model, imageset, device, batch_size=batch_size, progress=False))
        _synchronize(device)
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m nero_lite.bench", description=__doc__.split("\n\n")[0])
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
