"""Benchmark: structured (filter) pruning of every zoo model, beside Torch-Pruning, and what it buys on CPU.

0. User-style networks: every case of ``tests/user_styles`` (67 networks written in the styles of public
   CIFAR code and of downloaded model libraries) at every ratio: ok / kept / refused / broken (see ``style_rows``).
1. Pruning. Every registered model (10 classes, random init; BN statistics calibrated on one random batch
   and γ/β randomised, so equivalence checks are meaningful) at ratios 0.3 and 0.5 of every channel group
   (L1 criterion, layer scope): ``prune_channels`` wall time, params and MACs before/after
   (``prunekit.measure``), and the equivalence of masked and physical pruning: ``filter_masks`` + the
   masked forward vs ``shrink`` + the physical forward (max |Δ| over 4 random images).
2. Torch-Pruning, side by side when ``torch_pruning`` imports (run this script with /tmp/tpvenv/bin/python):
   ``MetaPruner`` + ``MagnitudeImportance(p=1)`` at the same ratio, classifier ignored. Its own
   equivalence check: the groups it prunes are recorded (interactive mode), the same channels are zeroed
   in a copy (conv rows/biases, BN γ/β), and the copy's output is compared with the pruned model's. A
   crash, a wrong output shape or a mismatch is recorded as the status.
3. Library models (when timm / torchvision import): the networks people download, built with random
   weights (``pretrained=False`` / ``weights=None``), pruned at ratio 0.5 (L1) on a 64x64 input: asked vs
   achieved filters, MACs before/after, ``plan_channels`` time (trace, allocation, cut and float64 self-check
   of a copy) and the top blocking ops. ``--library-survey`` adds the smallest model of ~50 timm CNN families
   (``SURVEY_MODELS``) with the float64 self-check of each (physical vs masked twin).
4. Speed-up. VGG-11, VGG-16, ResNet-56: CPU latency (``time_inference``: eval, inference_mode, warm-up,
   median; torch threads fixed by ``--threads``, default 1) of the original and the pruned models at batch 1 and 64,
   in alternating rounds (median of round medians) so background load hits all alike, beside the MACs
   reduction.

    /tmp/tpvenv/bin/python benchmarks/structured.py [--quick | --smoke] [--threads 1]
        [--part all|pruning|styles|libraries|latency] [--library-survey]

Writes ``benchmarks/results/structured.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
import traceback

import torch
from torch import nn

from common import RESULTS, add_smoke_flag, results_folder, write_results
from prunekit.report.tables import markdown_table
from prunekit.config import PruneConfig
from prunekit.images import IMAGE_SHAPE, example_input
from prunekit.measure import count_macs, count_parameters, time_inference
from prunekit.models import create_model, list_models
from prunekit.prune.channels import filter_masks, filter_sparsity, plan_channels, prune_channels, shrink
from prunekit.prune.mask import apply_masks

RATIOS = (0.3, 0.5)
LATENCY_MODELS = ("vgg11", "vgg16", "resnet56")
EQUIVALENCE_IMAGES = 4


def torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    return tp


def calibrated(name: str, seed: int = 0) -> nn.Module:
    """A freshly initialised model with random γ/β and BN statistics of one random batch; eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10)
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.data.copy_(torch.rand(bn.num_features, generator=g) * 0.4 - 0.2)
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *IMAGE_SHAPE, generator=g))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def images(n: int = EQUIVALENCE_IMAGES) -> torch.Tensor:
    return torch.randn(n, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(1))


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.shape == b.shape else float("nan")


def prunekit_row(name: str, ratio: float) -> dict:
    """prune_channels time and costs, and masked-vs-physical equivalence, for one model and ratio."""
    model = calibrated(name)
    x, example = images(), example_input()
    row = {"params_before": count_parameters(model), "macs_before": count_macs(model)}
    start = time.perf_counter()
    pruned = prune_channels(copy.deepcopy(model), example, ratio=ratio, criterion="l1", scope="layer")
    row["prunekit_seconds"] = time.perf_counter() - start
    row.update(prunekit_params=count_parameters(pruned), prunekit_macs=count_macs(pruned),
               achieved_filters=filter_sparsity(model, pruned))
    config = PruneConfig(granularity="filter", sparsity=ratio, scope="layer", criterion="l1")
    masked = apply_masks(model, filter_masks(model, example, config))
    with torch.no_grad():
        reference = masked(x)
        physical = shrink(masked, example)(x)
    row["prunekit_max_diff"] = max_difference(physical, reference)
    return row


def tp_row(tp, name: str, ratio: float) -> dict:
    """Torch-Pruning at the same ratio: status, time, costs and its own masked-vs-physical equivalence."""
    model = calibrated(name)
    x, example = images(), example_input()
    reference_model = copy.deepcopy(model)
    names = {id(m): n for n, m in model.named_modules()}
    try:
        start = time.perf_counter()
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=ratio, ignored_layers=[model.get_submodule(model.classifier_name)])
        removed = record_tp_groups(pruner, names)
        seconds = time.perf_counter() - start
    except Exception as exc:  # Torch-Pruning raises many types on graphs it does not understand
        return {"tp_status": f"prune failed: {type(exc).__name__}: {str(exc)[:120]}"}
    row = {"tp_seconds": seconds}
    zero_channels(reference_model, removed)
    try:
        with torch.no_grad():
            out = model(x)
            expected = reference_model(x)
    except Exception as exc:
        return {**row, "tp_status": f"broken model, forward fails: {type(exc).__name__}: {str(exc)[:120]}"}
    row.update(tp_params=count_parameters(model), tp_macs=count_macs(model), tp_max_diff=max_difference(out, expected))
    if out.shape != (len(x), 10):
        row["tp_status"] = f"broken model: output shape {tuple(out.shape)}"
    elif not row["tp_max_diff"] <= 1e-4 * max(1.0, float(expected.abs().max())):
        row["tp_status"] = "broken model: output differs from the zeroed original"
    else:
        row["tp_status"] = "ok"
    return row


def record_tp_groups(pruner, names: dict) -> dict[str, set[int]]:
    """Prune group by group, recording the *original* output indices each conv/BN loses."""
    alive: dict[str, list[int]] = {}
    removed: dict[str, set[int]] = {}
    for group in pruner.step(interactive=True):
        for item in group:
            module = item.dep.target.module
            handler = getattr(item.dep.handler, "__name__", str(item.dep.handler))
            if not isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) or handler != "prune_out_channels":
                continue
            name = names[id(module)]
            width = module.out_channels if isinstance(module, nn.Conv2d) else module.num_features
            current = alive.setdefault(name, list(range(width)))
            lost = {current[i] for i in item.idxs}
            removed.setdefault(name, set()).update(lost)
            alive[name] = [c for c in current if c not in lost]
        group.prune()
    return removed


def zero_channels(model: nn.Module, removed: dict[str, set[int]]) -> None:
    """Zero conv rows + biases and BN γ/β at the recorded indices (what the pruned channels contribute)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, indices in removed.items():
            index = torch.tensor(sorted(indices), dtype=torch.long)
            for param in ("weight", "bias"):
                tensor = getattr(modules[name], param, None)
                if tensor is not None:
                    tensor[index] = 0


def pruning_rows(names: list[str], ratios: tuple[float, ...], tp) -> list[dict]:
    rows = []
    for name in names:
        for ratio in ratios:
            row = {"model": name, "ratio": ratio}
            try:
                row.update(prunekit_row(name, ratio))
            except Exception as exc:
                row["prunekit_status"] = f"failed: {type(exc).__name__}: {exc}"
                traceback.print_exc()
            row["tp_status"] = "torch_pruning not installed"
            if tp is not None:
                row.update(tp_row(tp, name, ratio))
            print(f"{name} r={ratio}: prunekit {row.get('prunekit_seconds', float('nan')):.2f}s "
                  f"Δ={row.get('prunekit_max_diff')}; TP: {row['tp_status']}", flush=True)
            rows.append(row)
    return rows


def style_rows(ratios: tuple[float, ...], limit: int | None = None) -> list[dict]:
    """Every network of the user-style zoo (tests/user_styles) through ``prune_channels``: ``ok`` (pruned and
    equal to the masked twin within 1e-5 relative), ``kept`` (exact, nothing prunable), ``refused`` (a
    PrunekitError) or ``broken`` (a model that fails or differs: must never happen)."""
    import sys

    sys.path.insert(0, str(RESULTS.parents[1] / "tests"))
    from user_styles import CASES

    from prunekit.errors import PrunekitError
    from prunekit.prune.channels import plan_channels

    rows = []
    for case in CASES[:limit]:
        for ratio in ratios:
            torch.manual_seed(0)
            model, x = case.build().eval(), torch.randn(case.input_shape)
            row = {"case": case.name, "pattern": case.pattern, "ratio": ratio}
            start = time.perf_counter()
            try:
                plan = plan_channels(model, x, ratio=ratio)
                twin = apply_masks(copy.deepcopy(model), plan.masks)
                pruned = prune_channels(copy.deepcopy(model), x, plan=plan)
            except PrunekitError as exc:
                rows.append({**row, "status": "refused", "why": str(exc)})
                continue
            except Exception as exc:  # a crash is a broken result, recorded, never hidden
                rows.append({**row, "status": "broken", "why": f"{type(exc).__name__}: {exc}"})
                continue
            with torch.no_grad():
                expected, actual = (out[0] if isinstance(out, tuple) else out for out in (twin(x), pruned(x)))
            error = ((expected - actual).abs().max() / expected.abs().max()).item()
            params = count_parameters(pruned) / count_parameters(model)
            status = "broken" if error > 1e-5 else ("ok" if plan.removed else "kept")
            rows.append({**row, "status": status, "relative_error": error, "params_kept": params,
                         "achieved_filters": plan.outcome.achieved_filters, "macs_cut": plan.outcome.achieved_macs,
                         "seconds": time.perf_counter() - start, "retraced": plan.retraced,
                         "kept_because": sorted(set(plan.blocked.values()) - {"the network's output channels are fixed"})})
    return rows


def style_counts(rows: list[dict]) -> dict[str, int]:
    return {status: sum(r["status"] == status for r in rows) for status in ("ok", "kept", "refused", "broken")}


def style_table(rows: list[dict]) -> str:
    return markdown_table([{"case": r["case"], "pattern": r["pattern"], "ratio": r["ratio"], "status": r["status"],
                            "achieved / asked": achieved_over_asked(r),
                            "params kept": None if "params_kept" not in r else round(r["params_kept"], 2),
                            "rel. error": r.get("relative_error"), "retraced": r.get("retraced"),
                            "channels kept because": "; ".join(r.get("kept_because", []))[:140]} for r in rows])


def achieved_over_asked(row: dict) -> str | None:
    """``0.50 / 0.50``: fraction of filters removed / asked (None when the row has no result)."""
    achieved = row.get("achieved_filters")
    return None if achieved is None else f"{achieved:.2f} / {row['ratio']:.2f}"


LIBRARY_MODELS = {
    "timm": ("resnetv2_50", "regnetx_002", "efficientnet_b0", "mobilenetv3_large_100", "convnext_atto", "cspresnet50",
             "dpn68", "densenet121", "resnet50_gn", "ecaresnet26t", "skresnet18", "repvgg_a0", "ese_vovnet19b_dw",
             "mixnet_s"),
    "torchvision": ("resnet18", "mobilenet_v3_large", "efficientnet_b0", "regnet_x_400mf", "densenet121",
                    "convnext_tiny"),
}
SMOKE_LIBRARY_MODELS = {"timm": ("regnetx_002",), "torchvision": ("resnet18",)}
LIBRARY_INPUT = (1, 3, 64, 64)


def library_rows(ratio: float = 0.5, smoke: bool = False) -> list[dict]:
    """Every model of :data:`LIBRARY_MODELS` whose library imports, pruned at ``ratio`` (see the module doc)."""
    from prunekit.errors import PrunekitError
    from prunekit.models import resolve_model

    rows = []
    for library, names in (SMOKE_LIBRARY_MODELS if smoke else LIBRARY_MODELS).items():
        for name in names:
            row = {"model": f"{library}:{name}", "ratio": ratio}
            try:
                model = resolve_model(row["model"]).eval()
            except PrunekitError as exc:
                print(f"{row['model']}: skipped ({exc})", flush=True)
                break  # the library does not import here: its other models would not either
            example = torch.randn(*LIBRARY_INPUT, generator=torch.Generator().manual_seed(0))
            try:
                cut = prune_and_measure(model, example, ratio)
                row.update(status="ok", library=model.arch.get("library"), seconds=cut["seconds"],
                           macs_before=cut["macs_before"], macs_after=cut["macs_after"],
                           achieved_filters=cut["achieved_filters"], coverage=cut["coverage"],
                           blockers=cut["blockers"][:2])
            except Exception as exc:  # refused or broken: recorded, never hidden
                row.update(status=f"{type(exc).__name__}: {str(exc)[:160]}")
            print(f"{row['model']}: {row['status']} {row.get('seconds', float('nan')):.1f}s", flush=True)
            rows.append(row)
    return rows


def prune_and_measure(model: nn.Module, example: torch.Tensor, ratio: float, self_check: bool = False) -> dict:
    """Plan ``model`` at ``ratio`` (L1, timed), cut it in place and measure: MACs before and after, achieved
    filters, coverage, the blocking ops other than the model output, notes, whether it was retraced, and with
    ``self_check`` the float64 max |physical − masked twin| relative to the output's max."""
    start = time.perf_counter()
    plan = plan_channels(model, example, ratio=ratio)
    seconds = time.perf_counter() - start
    shape = tuple(example.shape)
    twin = apply_masks(copy.deepcopy(model), plan.masks).double() if self_check else None
    before = count_macs(model, shape)
    pruned = prune_channels(model, example, plan=plan)
    outcome = plan.outcome
    measured = {"seconds": seconds, "macs_before": before, "macs_after": count_macs(pruned, shape),
                "achieved_filters": outcome.achieved_filters, "coverage": outcome.coverage,
                "blockers": [list(b) for b in outcome.blockers if b[1] != "model output"],
                "retraced": plan.retraced, "notes": list(outcome.notes)}
    if self_check:
        with torch.no_grad():
            expected, actual = twin(example.double()), copy.deepcopy(pruned).double()(example.double())
        measured["self_check"] = float((expected - actual).abs().max() / expected.abs().max())
    return measured


# The smallest model of each timm CNN family (pretrained=False), for --library-survey. inception_v3 needs 96x96:
# at 64x64 its own forward fails (a 3x3 conv meets a 2x2 map), pruned or not.
SURVEY_MODELS = (
    "resnet18", "resnet18d", "resnetv2_50", "resnext26ts", "seresnext26d_32x4d", "regnetx_002", "regnety_002",
    "efficientnet_b0", "efficientnetv2_rw_t", "mobilenetv2_050", "mobilenetv3_small_050", "mobilenetv4_conv_small",
    "fbnetc_100", "lcnet_050", "tinynet_e", "mnasnet_small", "semnasnet_050", "spnasnet_100", "rexnet_100", "dpn68",
    "cspresnet50", "cs3darknet_s", "darknet17", "ese_vovnet19b_dw", "repvgg_a0", "mobileone_s0", "gernet_s",
    "densenet121", "inception_v3", "xception41", "convnext_atto", "convnextv2_atto", "edgenext_xx_small",
    "skresnet18", "nf_resnet26", "nfnet_l0", "nf_regnet_b0", "ecaresnet26t", "res2net50_14w_8s", "resnest14d",
    "selecsls42b", "hrnet_w18_small", "ghostnet_100", "mixnet_s", "hardcorenas_a", "efficientvit_b0", "dla46_c",
    "vgg11", "repghostnet_050", "inception_next_atto",
)
SURVEY_INPUT_SIDE = {"inception_v3": 96}
SURVEY_TARGET_MACS_CUT = 0.4


def survey_rows(ratio: float = 0.5) -> list[dict]:
    """Every family of :data:`SURVEY_MODELS` at ``ratio`` (L1): MACs cut, achieved / asked filters, the float64
    self-check (max |physical - masked twin| relative to the output's max), plan seconds and the top blocking op.
    Empty when timm does not import; a name this timm does not know is a row saying so."""
    import importlib.util

    from prunekit.errors import PrunekitError
    from prunekit.models import resolve_model

    if importlib.util.find_spec("timm") is None:
        print("library survey skipped: timm is not installed", flush=True)
        return []
    rows, load_before = [], os.getloadavg()[0]
    for name in SURVEY_MODELS:
        side = SURVEY_INPUT_SIDE.get(name, LIBRARY_INPUT[-1])
        row = {"model": f"timm:{name}", "ratio": ratio, "input": side}
        example = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        try:
            model = resolve_model(row["model"]).eval()
        except PrunekitError as exc:  # a family this timm version does not have
            print(f"{row['model']}: not run ({exc})", flush=True)
            rows.append({**row, "status": f"not run: {str(exc)[:160]}"})
            continue
        try:
            cut = prune_and_measure(model, example, ratio, self_check=True)
            row.update(status="ok", seconds=cut["seconds"], macs_cut=1 - cut["macs_after"] / cut["macs_before"],
                       achieved_filters=cut["achieved_filters"], retraced=cut["retraced"],
                       self_check=cut["self_check"], blocker=cut["blockers"][0] if cut["blockers"] else None,
                       notes=cut["notes"])
        except Exception as exc:  # refused or broken: recorded, never hidden
            row["status"] = f"{type(exc).__name__}: {str(exc)[:160]}"
        print(f"{row['model']}: {row['status']} MACs cut {row.get('macs_cut', float('nan')):.1%} "
              f"{row.get('seconds', float('nan')):.1f}s", flush=True)
        rows.append(row)
    for row in rows:  # the machine's load while the survey ran (plan seconds depend on it)
        row["load_average"] = [load_before, os.getloadavg()[0]]
    return rows


def survey_table(rows: list[dict]) -> str:
    def blocker(r):
        return "" if not r.get("blocker") else f"{r['blocker'][0]} × {r['blocker'][1]}: {r['blocker'][2]}"[:150]

    if not rows:
        return "Not run (needs timm; `--library-survey`)."
    reached = sum(r.get("macs_cut", 0) >= SURVEY_TARGET_MACS_CUT for r in rows)
    load = rows[0].get("load_average", [float("nan")] * 2)
    head = (f"{reached} of {len(rows)} families lose >= {SURVEY_TARGET_MACS_CUT:.0%} of their MACs. Self-check: "
            "max |physical - masked twin| / max |twin| of the logits, both in float64 (weight-standardised convs "
            "become plain convs holding their computed weight in the model's float32, hence up to ~1e-7). Plan s: "
            f"plan_channels wall time, 1 torch thread, 1-min load average {load[0]:.1f} before / {load[1]:.1f} "
            f"after on {os.cpu_count()} CPUs.\n\n")
    return head + markdown_table([
        {"model": r["model"], "input": r["input"], "status": r["status"],
         "MACs cut": None if "macs_cut" not in r else f"{r['macs_cut']:.1%}",
         "achieved / asked": achieved_over_asked(r), "self-check max rel. Δ": r.get("self_check"),
         "plan s": r.get("seconds"), "top blocking op": blocker(r)} for r in rows])


def library_table(rows: list[dict]) -> str:
    def cut(r):
        return None if "macs_after" not in r else f"{1 - r['macs_after'] / r['macs_before']:.1%}"

    def kept_because(r):
        return "; ".join(f"{n} × {place}: {why}" for n, place, why in r.get("blockers", []))[:160]

    return markdown_table([{"model": r["model"], "status": r["status"], "achieved / asked": achieved_over_asked(r),
                            "MACs cut": cut(r), "free filters": None if "coverage" not in r else f"{r['coverage']:.0%}",
                            "plan s": r.get("seconds"), "kept because": kept_because(r)} for r in rows])


def latency_rows(names: tuple[str, ...], ratios: tuple[float, ...], batches: tuple[int, ...], threads: int,
                 rounds: int) -> list[dict]:
    rows = []
    for name in names:
        models = {0.0: calibrated(name)}
        for ratio in ratios:
            models[ratio] = prune_channels(copy.deepcopy(models[0.0]), example_input(), ratio=ratio)
        macs = {r: count_macs(m) for r, m in models.items()}
        for batch in batches:
            medians = alternating_medians(models, batch, threads, rounds)
            for ratio in ratios:
                rows.append({"model": name, "ratio": ratio, "batch": batch,
                             "macs_reduction": macs[0.0] / macs[ratio],
                             "original_ms": medians[0.0], "pruned_ms": medians[ratio],
                             "speedup": medians[0.0] / medians[ratio]})
                print(f"latency {name} r={ratio} batch {batch}: {rows[-1]['speedup']:.2f}x "
                      f"(MACs {rows[-1]['macs_reduction']:.2f}x)", flush=True)
    return rows


def alternating_medians(models: dict, batch: int, threads: int, rounds: int) -> dict:
    """Median over rounds of each model's median batch latency (ms); models timed in turn each round."""
    repeats = 20 if batch == 1 else 3
    samples = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            timing = time_inference(model, batch, "cpu", warmup=3 if batch == 1 else 1, repeats=repeats,
                                    threads=threads)
            samples[key].append(timing.median_ms)
    return {key: statistics.median(values) for key, values in samples.items()}


def pruning_table(rows: list[dict]) -> str:
    def m(value):
        return None if value is None else round(value / 1e6, 2)

    table = [{"model": r["model"], "ratio": r["ratio"],
              "params M": f"{m(r.get('params_before'))} → {m(r.get('prunekit_params'))}",
              "MACs M": f"{m(r.get('macs_before'))} → {m(r.get('prunekit_macs'))}",
              "achieved / asked": achieved_over_asked(r),
              "prunekit s": r.get("prunekit_seconds"), "prunekit max|Δ|": r.get("prunekit_max_diff"),
              "TP status": r.get("tp_status"), "TP params M": m(r.get("tp_params")), "TP MACs M": m(r.get("tp_macs")),
              "TP s": r.get("tp_seconds"), "TP max|Δ|": r.get("tp_max_diff")} for r in rows]
    return markdown_table(table)


def latency_table(rows: list[dict]) -> str:
    return markdown_table([{"model": r["model"], "ratio": r["ratio"], "batch": r["batch"],
                            "MACs reduction": f"{r['macs_reduction']:.2f}x", "original ms": r["original_ms"],
                            "pruned ms": r["pruned_ms"], "speed-up": f"{r['speedup']:.2f}x"} for r in rows])


def previous_results() -> dict:
    path = RESULTS / "structured.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 models, ratio 0.5, batch 1 only (smoke run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for latency (default: 1: stable on shared cores, where one preempted "
                             "OpenMP thread stalls every op of a multi-threaded run; use 2+ on an idle machine)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (default: 5)")
    parser.add_argument("--part", choices=["all", "pruning", "styles", "libraries", "latency"], default="all",
                        help="re-run one part, keeping the other from the last results (e.g. time again "
                             "when the machine is quiet)")
    parser.add_argument("--library-survey", action="store_true",
                        help="also survey the smallest model of ~50 timm CNN families (needs timm; several minutes); "
                             "without it the last survey is kept")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:  # one model, no user-style zoo, no library models, no Torch-Pruning, one timing round
        args.quick, args.part = True, "all"
    tp = None if args.smoke else torch_pruning()
    names = ["resnet20"] if args.smoke else ["vgg11", "resnet20", "mobilenetv2"] if args.quick else list_models()
    ratios = (0.5,) if args.quick else RATIOS
    rounds = 1 if args.smoke else 2 if args.quick else args.rounds
    previous = previous_results() if args.part != "all" else {}
    start = time.perf_counter()
    torch.set_num_threads(1)  # pruning and equivalence: one thread is fastest on shared cores
    pruning = previous.get("pruning", []) if args.part in ("latency", "styles", "libraries") else pruning_rows(
        names, ratios, tp)
    skip_styles = args.smoke or args.part in ("latency", "pruning", "libraries")
    styles = previous.get("styles", []) if skip_styles else style_rows(ratios)
    libraries = previous.get("libraries", []) if args.part in ("latency", "pruning", "styles") else library_rows(
        smoke=args.smoke)
    survey = [] if args.smoke else survey_rows() if args.library_survey else previous_results().get("survey", [])
    print("user-style zoo:", style_counts(styles), "| shipped zoo:",
          {s: sum(r.get("prunekit_status", "ok") == s for r in pruning) for s in ("ok",)}, flush=True)
    torch.set_num_threads(args.threads)  # latency (and the hardware header) use the fixed thread count
    load_before = os.getloadavg()[0]
    latency = [] if args.smoke else previous.get("latency", []) if args.part in ("pruning", "styles", "libraries") \
        else latency_rows(("vgg11",) if args.quick else LATENCY_MODELS, ratios, (1,) if args.quick else (1, 64),
                          args.threads, rounds)
    load = [load_before, os.getloadavg()[0]] if args.part in ("all", "latency") else previous.get(
        "latency_load_average", [load_before, load_before])
    payload = {"quick": args.quick, "ratios": ratios, "criterion": "l1", "scope": "layer",
               "torch_pruning": getattr(tp, "__version__", None) if tp else None, "latency_threads": args.threads,
               "latency_rounds": rounds, "latency_load_average": load,
               "seconds": time.perf_counter() - start, "pruning": pruning, "latency": latency,
               "styles": styles, "style_counts": style_counts(styles), "libraries": libraries,
               "library_input": LIBRARY_INPUT, "survey": survey}
    notes = ("prunekit max|Δ|: masked (filter_masks) vs physical (shrink) output, 4 random images, calibrated BN. "
             "TP max|Δ|: Torch-Pruning's pruned model vs the original with the channels it removed zeroed. "
             f"Latency: ms per batch, median of {rounds} alternating rounds (original, r=0.3, r=0.5 in turn), "
             f"{args.threads} threads, 1-min load average {load[0]:.1f} before / {load[1]:.1f} after on "
             f"{os.cpu_count()} CPUs.")
    counts = style_counts(styles)
    table = "## Pruning (L1, layer scope)\n\n" + pruning_table(pruning) + "\n\n## User-style networks (tests/user_styles)\n\n" \
        + ", ".join(f"{k}: {v}" for k, v in counts.items()) + "\n\n" + style_table(styles) \
        + "\n\n## Library models (ratio 0.5, L1, 64x64 input, random weights)\n\n" + library_table(libraries) \
        + "\n\n## Library survey (timm CNN families, smallest model each, ratio 0.5, L1, random weights)\n\n" \
        + survey_table(survey) + "\n\n## CPU latency\n\n" + latency_table(latency) + "\n\n" + notes
    write_results("structured", payload, table, results_folder(args.smoke))


if __name__ == "__main__":
    main()
