"""Benchmark: binarized weights (BWN / BinaryConnect) on the real CIFAR-10 subset — accuracy before and after
STE fine-tuning against fp32, and the size of the compact binary export.

Models (everything goes through the real CLI, ``prunekit.cli.main``, in-process):

* ResNet-20, pretrained (akamaster's ``resnet20-12fca82f.th`` from ../shared), converted with
  ``prunekit convert --model resnet20 --weights … --normalize imagenet``;
* VGG-11 at a quarter width (``--model-cfg 16,M,32,M,64,64,M,128,128,M,128,128``, 0.59 M parameters),
  trained by ``prunekit train`` for ``--vgg-epochs`` epochs on the subset (slim so it trains in minutes on
  this CPU; its accuracy is that of a short run on 5,085 images, not of a converged VGG-11).

For each: ``prunekit binarize --finetune-epochs E`` (BWN; for ResNet-20 also BinaryConnect and BWN with sign
activations), then ``prunekit export --format compact --values binary``. Recorded: test top-1 on the 509
real test images of the fp32 model, of the binarized model before fine-tuning and after, the same for the
model loaded back from the compact binary file (must equal the checkpoint's), file sizes, and per
binarized layer its bytes in the file (sign bits + mask bits + fp32 channel scales) over its fp32 bytes
(target ≤ 1/25). For the ``compare`` table ResNet-20 is also pruned (OMP unstructured 50 %, 1 retraining
epoch), the pruned model binarized (ternary), and the dense model quantized to int8; ``prunekit compare``
then measures dense, pruned, int8, binarized and pruned + binarized side by side.

Threads: ``torch.set_num_threads(--threads)`` (default 1: the machine's 2 cores are shared).

    python benchmarks/binarize.py [--resnet-epochs 3] [--vgg-epochs 6] [--vgg-finetune-epochs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, SHARED, add_smoke_flag, results_folder, write_results
from prunekit.checkpoint import load_checkpoint, read_checkpoint_file
from prunekit.cli import main
from prunekit.data import get_data
from prunekit.data.normalisation import input_normalisation
from prunekit.export.compact import binary_payload
from prunekit.report.tables import markdown_table
from prunekit.evaluation import evaluate_split

DATA = SHARED / "data" / "cifar10-subset"
RESNET20 = SHARED / "pretrained" / "resnet20-12fca82f.th"
VGG_CFG = "16,M,32,M,64,64,M,128,128,M,128,128"


def cli(*argv: str) -> str:
    """Run ``prunekit ARGV`` in-process; return its stdout (also echoed), fail loudly on a non-zero exit."""
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    text = out.getvalue()
    print(f"$ prunekit {' '.join(map(str, argv))}  [{time.perf_counter() - started:.0f} s]\n{text}", flush=True)
    if code != 0:
        raise SystemExit(f"prunekit {argv[0]} failed with exit status {code}")
    return text


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one {pattern} in {folder}, found {found}")
    return found[0]


def test_top1(path: Path, data) -> float:
    loaded = load_checkpoint(path)
    mean, std = input_normalisation(loaded.meta, data.info)
    return evaluate_split(loaded.model, data, "test", mean, std).top1


def binarize_row(label: str, source: Path, out: Path, epochs: int, data, *extra: str) -> dict:
    """``prunekit binarize`` then ``export --values binary``; accuracies, sizes and per-layer ratios."""
    started = time.perf_counter()
    cli("binarize", source, "--finetune-epochs", epochs, "--out", out, "--data", DATA, "--device", "cpu",
        "--no-progress", *extra)
    seconds = time.perf_counter() - started
    result = only(out, "Bin_*.pt")
    binary = out / "binary.pt"
    exported = json.loads(cli("export", result, "--format", "compact", "--values", "binary", "--out", binary, "--json"))
    meta = load_checkpoint(result).meta
    layers = binary_payload(read_checkpoint_file(binary))
    ratios = {key: row["payload_bytes"] / row["fp32_bytes"] for key, row in layers.items()}
    payload, fp32 = sum(r["payload_bytes"] for r in layers.values()), sum(r["fp32_bytes"] for r in layers.values())
    return {"label": label, "source": str(source), "result": str(result), "binary_file": str(binary),
            "finetune_epochs": epochs, "binarize_seconds": seconds, "options": list(extra),
            "fp32_top1": meta["fp32_top1"], "binarized_top1": meta["binarized_top1"], "finetuned_top1": meta["test_top1"],
            "binary_file_top1": test_top1(binary, data),
            "fp32_file_bytes": source.stat().st_size, "checkpoint_bytes": result.stat().st_size,
            "binary_file_bytes": binary.stat().st_size, "fp32_weights_bytes": exported["weights_bytes"],
            "binarized_layers": len(layers), "binarized_payload_bytes": payload, "binarized_fp32_bytes": fp32,
            "binarized_ratio": payload / fp32, "worst_layer_ratio": max(ratios.values()),
            "worst_layer": max(ratios, key=ratios.get), "layer_bytes": layers}


def table(rows: list[dict]) -> str:
    shown = [{"model / method": r["label"], "STE epochs": r["finetune_epochs"],
              "fp32 top-1": f"{r['fp32_top1']:.2f}", "binarized, before FT": f"{r['binarized_top1']:.2f}",
              "after FT": f"{r['finetuned_top1']:.2f}", "binary file top-1": f"{r['binary_file_top1']:.2f}",
              "fp32 file": f"{r['fp32_file_bytes']:,}", "binary file": f"{r['binary_file_bytes']:,}",
              "file ratio": f"1/{r['fp32_file_bytes'] / r['binary_file_bytes']:.1f}",
              "binarized layers: bytes / fp32 bytes": f"{r['binarized_payload_bytes']:,} / {r['binarized_fp32_bytes']:,}"
                                                      f" = 1/{1 / r['binarized_ratio']:.1f}",
              "worst layer": f"1/{1 / r['worst_layer_ratio']:.1f}", "time": f"{r['binarize_seconds']:.0f} s"}
             for r in rows]
    return markdown_table(shown)


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resnet-epochs", type=int, default=3, help="STE fine-tuning epochs of ResNet-20")
    parser.add_argument("--vgg-epochs", type=int, default=6, help="training epochs of the slim VGG-11")
    parser.add_argument("--vgg-finetune-epochs", type=int, default=3, help="STE fine-tuning epochs of the VGG-11")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/prunekit-bench-binarize"))
    parser.add_argument("--skip-compare", action="store_true")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:  # the VGG-11 row only: 1 epoch on 256 images, binarized without fine-tuning
        args.vgg_epochs, args.vgg_finetune_epochs, args.skip_compare = 1, 0, True
        args.work = results_folder(True) / "work"
    torch.set_num_threads(args.threads)
    if not (DATA / "cifar-10-batches-py").is_dir() or not RESNET20.is_file():
        raise SystemExit(f"needs the real subset at {DATA} and {RESNET20}")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = get_data("cifar10", root=DATA)
    started = time.perf_counter()

    resnet = work / "resnet20.pt"
    if not resnet.exists() and not args.smoke:
        cli("convert", "--model", "resnet20", "--weights", RESNET20, "--normalize", "imagenet", "--out", resnet,
            "--evaluate", "--data", DATA)
    vgg = work / "vgg" / "last.pt"
    if not vgg.exists():
        cli("train", "--model", "vgg11", "--model-cfg", VGG_CFG, "--epochs", args.vgg_epochs, "--data", DATA,
            "--save", work / "vgg", "--device", "cpu", "--no-progress", "--seed", "0",
            *(["--limit-train", 256] if args.smoke else []))
    rows = [binarize_row(f"VGG-11 ¼ width ({args.vgg_epochs} epoch), BWN", vgg, work / "vgg_bwn", 0, data)] \
        if args.smoke else [
        binarize_row("ResNet-20 (pretrained), BWN", resnet, work / "r20_bwn", args.resnet_epochs, data),
        binarize_row(f"VGG-11 ¼ width ({args.vgg_epochs} epochs), BWN", vgg, work / "vgg_bwn",
                     args.vgg_finetune_epochs, data),
        binarize_row("ResNet-20 (pretrained), BinaryConnect", resnet, work / "r20_bc", args.resnet_epochs, data,
                     "--method", "binaryconnect"),
        binarize_row("ResNet-20 (pretrained), BWN + sign activations (XNOR-style, harder)", resnet,
                     work / "r20_xnor", args.resnet_epochs, data, "--activations", "sign"),
    ]
    compare = None if args.skip_compare else compare_section(work, resnet, args.resnet_epochs)
    payload = {"data": str(DATA), "test_images": len(data.test[1]), "train_images": len(data.train[1]),
               "vgg_cfg": VGG_CFG, "settings": vars(args) | {"work": str(args.work)}, "rows": rows,
               "compare": compare, "total_seconds": time.perf_counter() - started}
    text = table(rows)
    if compare:
        text += "\n\n`prunekit compare` (ResNet-20 family):\n\n" + compare
    write_results("binarize", payload, text, args.work.parent if args.smoke else RESULTS)


def compare_section(work: Path, resnet: Path, epochs: int) -> str:
    """Dense, pruned, int8, binarized and pruned + binarized ResNet-20 in one ``prunekit compare`` table."""
    pruned_dir = work / "r20_pruned"
    if not list(pruned_dir.glob("Omp_*.pt")):
        cli("prune", resnet, "--sparsity", "0.5", "--finetune-epochs", 1, "--out", pruned_dir, "--data", DATA,
            "--device", "cpu", "--no-progress")
    pruned = only(pruned_dir, "Omp_*.pt")
    ternary = work / "r20_pruned_bwn"
    if not list(ternary.glob("Bin_*.pt")):
        cli("binarize", pruned, "--finetune-epochs", epochs, "--out", ternary, "--data", DATA, "--device", "cpu",
            "--no-progress")
    ternary_file = ternary / "pruned_binary.pt"
    cli("export", only(ternary, "Bin_*.pt"), "--format", "compact", "--values", "binary", "--out", ternary_file)
    int8 = work / "resnet20_int8.pt"
    cli("quantize", resnet, "--data", DATA, "--out", int8)
    files = [resnet, pruned, int8, work / "r20_bwn" / "binary.pt", ternary_file]
    return cli("compare", *files, "--data", DATA, "--repeats", 20, "--threads", 1)


if __name__ == "__main__":
    sys.exit(main_benchmark())
