"""Shipping subcommands: export (compact sparse file or ONNX) and quantize (int8, CPU)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.cli.common import (POSITIVE_INT, add_checkpoint_arg, add_data_args, add_json_arg,
                                 add_model_relocation_arg, add_model_source_args, add_out_arg, data_for,
                                 load_model_source, print_json, warn_if_collapsed)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a compact sparse checkpoint or an ONNX file")
    add_checkpoint_arg(p, help="a prunekit checkpoint (compact files are accepted too)")
    p.add_argument("--format", choices=list(EXPORT_FORMATS), required=True,
                   help="; ".join(f"{name}: {what}" for name, (_, what) in EXPORT_FORMATS.items()))
    add_out_arg(p, metavar="FILE", required=True, help="where to write the file")
    p.add_argument("--values", choices=["fp32", "fp16", "int8", "binary"], default="fp32",
                   help="compact: how kept weights are stored; fp32 is lossless; binary (a `prunekit binarize` "
                        "checkpoint): 1 sign bit per weight + one fp32 scale per channel (default: %(default)s)")
    p.add_argument("--no-check", action="store_true", help="onnx: skip the ONNX Runtime vs PyTorch check")
    add_model_relocation_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="int8 post-training static quantization for CPU inference")
    add_model_source_args(p)
    add_data_args(p)
    p.add_argument("--calib-batches", type=int, default=8, metavar="N",
                   help="training batches observed for the activation ranges (default: %(default)s)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="images per calibration batch (default: %(default)s)")
    p.add_argument("--normalize", default=None, metavar="NAME|MEAN,STD",
                   help="input normalisation as for `evaluate` (a prunekit checkpoint uses its own)")
    add_out_arg(p, metavar="FILE", required=True, help="where to write the file")
    add_json_arg(p)
    p.set_defaults(func=cmd_quantize)


def cmd_export(args) -> int:
    from prunekit.checkpoint import load_checkpoint

    loaded = load_checkpoint(args.checkpoint, model_ref=args.model)
    write, _ = EXPORT_FORMATS[args.format]
    result = write(loaded, args)
    if args.json:
        print_json(result)
    return 0


def export_compact(loaded, args) -> dict:
    """Sizes compared: the dense checkpoint ``save_checkpoint`` writes for this model (effective weights +
    bool masks + meta, no training state) and the plain fp32 state dict alone (``serialized_size``)."""
    from prunekit.checkpoint import checkpoint_dict
    from prunekit.errors import PrunekitError
    from prunekit.export import encoded_size, is_quantized, save_compact
    from prunekit.measure import serialized_size

    if is_quantized(loaded.model):
        raise PrunekitError(f"{args.checkpoint} is an int8 model; the compact format takes float checkpoints")
    dense = checkpoint_dict(loaded.model, loaded.meta)
    path = save_compact(dense, args.out, values=args.values)
    result = {"out": str(path), "values": args.values, "dense_bytes": encoded_size(dense),
              "weights_bytes": serialized_size(loaded.model), "compact_bytes": path.stat().st_size}
    result["ratio"] = result["compact_bytes"] / result["dense_bytes"]
    result["ratio_to_weights"] = result["compact_bytes"] / result["weights_bytes"]
    if args.values == "binary":
        result["binarized_layers"] = binarized_layer_sizes(path)
    if not args.json:
        print(f"dense checkpoint {result['dense_bytes']:,} B (fp32 weights alone {result['weights_bytes']:,} B) → "
              f"compact ({args.values}) {result['compact_bytes']:,} B = {100 * result['ratio']:.1f}% of the "
              f"checkpoint, {100 * result['ratio_to_weights']:.1f}% of the weights; wrote {path}")
    if args.values == "binary" and not args.json:
        layers = result["binarized_layers"]
        print(f"binarized layers: {layers['payload_bytes']:,} B (sign + mask bits, channel scales) for "
              f"{layers['fp32_bytes']:,} B of fp32 weights = 1/{layers['fp32_bytes'] / layers['payload_bytes']:.1f}; "
              f"worst layer 1/{1 / layers['worst_ratio']:.1f}")
    return result


def binarized_layer_sizes(path) -> dict:
    """Bytes the binarized layers take in a ``binary`` compact file vs their fp32 weights (total, worst layer)."""
    from prunekit.checkpoint import read_checkpoint_file
    from prunekit.export.compact import binary_payload

    rows = binary_payload(read_checkpoint_file(path))
    payload, fp32 = sum(r["payload_bytes"] for r in rows.values()), sum(r["fp32_bytes"] for r in rows.values())
    return {"layers": len(rows), "payload_bytes": payload, "fp32_bytes": fp32,
            "worst_ratio": max(r["payload_bytes"] / r["fp32_bytes"] for r in rows.values())}


def export_onnx_file(loaded, args) -> dict:
    from prunekit.export import export_onnx

    diff = export_onnx(loaded.model, args.out, check=not args.no_check)
    result = {"out": args.out, "onnx_bytes": Path(args.out).stat().st_size, "max_abs_diff": diff}
    if not args.json:
        checked = "not checked (no onnxruntime)" if diff is None else f"max |ONNX Runtime − PyTorch| = {diff:.2e}"
        print(f"wrote {args.out} ({result['onnx_bytes']:,} B, dynamic batch axis); {checked}")
    return result


def cmd_quantize(args) -> int:
    from prunekit.data import DeviceLoader
    from prunekit.data.normalisation import input_normalisation
    from prunekit.errors import PrunekitError
    from prunekit.export import quantize_model, save_quantized

    if args.calib_batches < 1:
        raise PrunekitError("--calib-batches must be at least 1: int8 calibration needs real training images")
    loaded, dataset, data = source_and_data(args)
    mean, std = input_normalisation(loaded.meta, data.info, args.normalize)
    loader = DeviceLoader(*data.train, args.batch_size, mean=mean, std=std, train=False)
    quantized = quantize_model(loaded.model, loader, max_batches=args.calib_batches)
    images = min(args.calib_batches * args.batch_size, len(data.train[1]))
    calibration = {"dataset": dataset, "synthetic": data.synthetic, "batches": min(args.calib_batches, len(loader)),
                   "batch_size": args.batch_size, "images": images}
    meta = {**loaded.meta, "dataset": dataset, "mean": list(mean), "std": list(std),
            "num_classes": loaded.meta.get("num_classes", data.info.num_classes), "calibration": calibration,
            "source": str(loaded.path or args.model)}
    path = save_quantized(quantized, args.out, meta)
    result = {"out": str(path), "int8_bytes": path.stat().st_size, "calibration": calibration,
              **accuracy_and_size(loaded.model, quantized, data, mean, std, path)}
    if args.json:
        print_json(result)
    else:
        print(f"int8 (FX graph mode, x86 backend) calibrated on {images} {dataset} training images"
              f"{' (SYNTHETIC)' if data.synthetic else ''}; wrote {path} ({result['int8_bytes']:,} B)")
        print(f"test top-1 fp32 {result['fp32_top1']:.2f}% → int8 {result['int8_top1']:.2f}% on "
              f"{result['test_images']} {'SYNTHETIC ' if data.synthetic else ''}images; size fp32 weights "
              f"{result['fp32_bytes']:,} B → int8 file {result['int8_bytes']:,} B (×{result['size_ratio']:.2f})")
    warn_if_collapsed(result.pop("int8_metrics"), ("fp32 top-1", result["fp32_top1"]), "the int8 model")
    return 0


def accuracy_and_size(fp32_model, quantized, data, mean, std, path) -> dict:
    """Test top-1 of the fp32 model and its int8 version (same images, same normalisation), and the int8
    file's size over the fp32 weights' (``serialized_size``). ``int8_metrics``: the int8 evaluation."""
    from prunekit.measure import serialized_size
    from prunekit.evaluation import evaluate_split

    fp32 = evaluate_split(fp32_model, data, "test", mean, std)
    int8 = evaluate_split(quantized, data, "test", mean, std)
    fp32_bytes = serialized_size(fp32_model)
    return {"fp32_top1": fp32.top1, "int8_top1": int8.top1, "test_images": int8.images, "fp32_bytes": fp32_bytes,
            "size_ratio": path.stat().st_size / fp32_bytes, "int8_metrics": int8}


def source_and_data(args):
    """The model to quantize, its dataset's name and data: the checkpoint's own dataset, else ``--dataset``
    (default cifar10); ``--model NAME`` gets the dataset's class count unless ``--num-classes`` says."""
    from prunekit.checkpoint import check_classes

    if args.checkpoint:
        loaded = load_model_source(args)
        data = data_for(args, loaded)  # its remembered data unless options say otherwise; classes checked
    else:
        data = data_for(args, None)
        loaded = load_model_source(args, num_classes=data.info.num_classes)
        check_classes(loaded, data, args.model)  # --num-classes may disagree with the dataset
    return loaded, data.info.name, data


#: ``export --format NAME`` -> (writer(loaded checkpoint, args) -> result dict, what it writes): the one list of
#: export formats; a new format is a writer here (its file reader registers with prunekit.checkpoint).
EXPORT_FORMATS = {"compact": (export_compact, "sparse prunekit file"), "onnx": (export_onnx_file, "ONNX graph")}
