"""The premise experiment of docs/premise.md, as one command: 5 methods x 5 seeds on one backbone, paired.

    python bench/premise.py --backbone backbones/generic            # or: make premise BACKBONE=generic
    python bench/premise.py --backbone backbones/embedded --seeds 0 1   # a part of it; rerun to add seeds

What it does, in a project of its own (`--workdir`, default experiments/premise-<backbone>):
1. copies this project's pipeline (dvc.yaml, mmp_core, flows, infra, the backbone) into a fresh git + DVC
   repository whose params.yaml is the design: the embedded benchmark with a 3,000-sample test split, the five
   methods, the seeds, the backbone;
2. chooses `finetune`'s backbone learning rate once, on the validation split of seed 0, from {1e-4, 3e-4, 1e-3}
   (the winner's run is recorded as the train@finetune-0 stage, not trained twice);
3. runs the pipeline flow there (DVC stages, report, a local store and dashboard): every stage that already ran
   is skipped, so an interrupted experiment, or one extended by more seeds, picks up where it stopped;
4. measures the backbone alone: the linear probe of its frozen [CLS] and the missing-case separability;
5. writes `premise.json` and `premise.md`: the method x column table (mean ± sd over seeds), each method's
   paired difference to the baseline with its 95% t-interval over seeds and the verdict, the paired bootstrap
   over test samples on the first seed with its half-width, the gap to finetune recovered, the wall time of
   training, and the properties P1-P3 against their thresholds.

It never looks at the test split to choose anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmp_core.evaluation.paired import (  # noqa: E402
    bootstrap_interval,
    contrast_interval,
    format_paired,
    metric,
    paired_table,
    verdict,
)

METHODS = ["baseline", "shared", "attention", "input", "finetune"]
BACKBONE_LRS = [1e-4, 3e-4, 1e-3]
TEST_SAMPLES = 3000
RATE = 0.7
TYPES = ("text", "image", "both")
COLUMNS = [*TYPES, "complete"]
P1_MIN_ITM, P2_MIN_ROOM = 0.85, 0.10
PLANNED_SEEDS, H2_MIN_GAP_SHARE = 5, 0.5


# ---------------------------------------------------------------------------------------------- the project
def environment(workdir: Path) -> dict:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(workdir),  # the stages run the copy's code
        "DVC_NO_ANALYTICS": "1",
        "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "MMP_CACHE_DIR": str(workdir / ".cache"),
        "GIT_AUTHOR_NAME": "mmp premise",
        "GIT_AUTHOR_EMAIL": "premise@localhost",
        "GIT_COMMITTER_NAME": "mmp premise",
        "GIT_COMMITTER_EMAIL": "premise@localhost",
    }


def run(args: list[str], cwd: Path, env: dict) -> str:
    print("$", " ".join(map(str, args)), flush=True)
    result = subprocess.run(args, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.exit(f"failed ({result.returncode}): {' '.join(map(str, args))}\n{result.stdout[-6000:]}")
    return result.stdout


def design_params(backbone: str, methods: list[str], seeds: list[int]) -> dict:
    """This project's params.yaml with the design's changes: methods, seeds, test split size, backbone."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["methods"], params["seeds"] = methods, seeds
    params["generate"]["test"] = TEST_SAMPLES
    params["train"]["backbone"] = backbone
    return params


def set_up(workdir: Path, backbone: str, methods: list[str], seeds: list[int], env: dict) -> None:
    params_path = workdir / "params.yaml"
    if not workdir.exists():
        workdir.mkdir(parents=True)
        for name in ("mmp_core", "flows", "infra"):
            shutil.copytree(ROOT / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / backbone, workdir / backbone)
        for name in ("dvc.yaml", "pyproject.toml", ".gitignore", ".dvcignore"):
            shutil.copy(ROOT / name, workdir / name)
        params_path.write_text(yaml.safe_dump(design_params(backbone, methods, seeds), sort_keys=False))
        run(["git", "init", "-q"], workdir, env)
        run([sys.executable, "-m", "dvc", "init", "-q"], workdir, env)
        run(["git", "add", "-A"], workdir, env)
        run(["git", "commit", "-qm", f"premise experiment on {backbone}"], workdir, env)
        return
    # An experiment under way: only the seeds and methods may grow; everything else is the design it started with.
    params = yaml.safe_load(params_path.read_text())
    if params["train"]["backbone"] != backbone:
        sys.exit(
            f"{workdir} runs the experiment on {params['train']['backbone']}, not {backbone}: use another --workdir"
        )
    params["methods"], params["seeds"] = methods, sorted(set(params["seeds"]) | set(seeds))
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def select_backbone_lr(workdir: Path, env: dict) -> float:
    """finetune's backbone learning rate, by the best validation score of seed 0 (never the test split)."""
    chosen_path = workdir / "backbone_lr_selection.json"
    if chosen_path.exists():
        return json.loads(chosen_path.read_text())["chosen"]
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "repro", "-q", "prepare"], workdir, env)
    scores = {}
    for lr in BACKBONE_LRS:
        out = workdir / "selection" / f"finetune-lr{lr:g}"
        if not (out / "train_summary.json").exists():
            run([sys.executable, "-m", "mmp_core.cli", "train", "--method", "finetune", "--prepared", "data/prepared",
                 "--out", str(out), "--checkpoint-dir", str(workdir / ".checkpoints" / f"selection-{lr:g}"),
                 "--set", "train.seed=0", "--set", f"train.backbone_lr={lr}"], workdir, env)  # fmt: skip
        summary = json.loads((out / "train_summary.json").read_text())
        scores[lr] = {"best_val": summary[f"best_val_{summary['metric']}"], "seconds": summary["seconds"]}
    chosen = max(BACKBONE_LRS, key=lambda lr: (scores[lr]["best_val"], -lr))
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["backbone_lr"] = chosen
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The winner IS train@finetune-0 (same command, params and data): record it instead of training it again.
    target = workdir / "models" / "finetune" / "seeds" / "0"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(workdir / "selection" / f"finetune-lr{chosen:g}", target)
    run([*dvc, "commit", "-f", "-q", "train@finetune-0"], workdir, env)
    chosen_path.write_text(json.dumps({"chosen": chosen, "validation": {f"{k:g}": v for k, v in scores.items()}}))
    return chosen


# ---------------------------------------------------------------------------------------------- the analysis
def backbone_properties(workdir: Path, backbone: str, env: dict) -> dict:
    """P1 (held-out matching, from the pretraining summary) and the probe's P2 and P3 inputs."""
    probe_path = workdir / "probe.json"
    if not probe_path.exists():
        params = yaml.safe_load((workdir / "params.yaml").read_text())["train"]
        image = params["image"]
        out = run([sys.executable, "-m", "mmp_core.cli", "probe", "--backbone", backbone, "--prepared", "data/prepared",
                   "--image", str(image["shorter_side"]), str(image["longer_side"]), str(image["patch_size"]),
                   "--max-text-len", str(params["max_text_len"])], workdir, env)  # fmt: skip
        lines = out.splitlines()  # the JSON document `mmp probe` prints last, between a "{" and a "}" line
        probe_path.write_text("\n".join(lines[lines.index("{") : len(lines) - lines[::-1].index("}")]))
    probe = json.loads(probe_path.read_text())
    summary = json.loads((workdir / backbone / "pretrain_summary.json").read_text())
    heldout = summary.get("heldout") or {}
    return {
        "heldout_itm_accuracy": heldout.get("itm_accuracy"),
        "probe_complete": probe["complete"][probe["metric"]],
        "probe": {name: probe[name][probe["metric"]] for name in ("complete", "text missing", "image missing")},
        "missing_case_accuracy": probe.get("missing_case_accuracy"),
    }


def bootstraps(workdir: Path, methods: list[str], seed: int) -> dict:
    """{method: {column: (diff, low, high)}}: each method minus the baseline on seed `seed`'s test samples."""
    from mmp_core.config import TrainParams
    from mmp_core.evaluation.evaluate import load_variant_outputs
    from mmp_core.model.loading import missing_seed, open_prepared
    from mmp_core.scenarios import MissingScenario

    prepared = open_prepared(workdir / "data" / "prepared")
    train = TrainParams.model_validate(yaml.safe_load((workdir / "params.yaml").read_text())["train"])
    split, task = prepared.spec.test_split, prepared.spec.task
    score = metric(task, prepared.spec.primary_metric)
    cells = {t: MissingScenario(t, RATE) for t in TYPES} | {"complete": MissingScenario(TYPES[0], 0.0)}
    tables = {c: prepared.missing_table(split, s, missing_seed(prepared, train)) for c, s in cells.items()}

    def outputs(method):
        return load_variant_outputs(workdir / "results" / method / "seeds" / str(seed) / "scores.npz")

    base = outputs("baseline")
    result = {}
    for method in methods:
        if method == "baseline":
            continue
        own = outputs(method)
        result[method] = {
            column: bootstrap_interval(score, own.assemble(table), base.assemble(table), base.labels)
            for column, table in tables.items()
        }
    return result


def hypotheses(results: dict, rate: float = RATE) -> dict:
    """H1-H3 of docs/premise.md, judged mechanically from the results documents ({method: metrics.json}).

    - H1: attention- or input-level prompts are ahead of the baseline (t-interval over seeds above 0) on each of
      text, image and both missing.
    - H2: the better of the two (by its mean share over the three missing types) recovers at least half of the
      baseline -> finetune gap, averaged over the three missing types.
    - H3: attention-level missing-aware prompts are ahead of `shared` (attention-level, one prompt set) on each
      missing type, paired seed by seed.
    H4 contrasts two backbones' experiments and is judged from both premise.json files, not here. Each entry says
    on how many seeds it was judged: below the plan's 5 seeds a verdict is preliminary.
    """
    versus_baseline = paired_table(results, rate)
    prompts = [m for m in ("attention", "input") if m in versus_baseline]
    ahead = {m: [t for t in TYPES if versus_baseline[m][t]["verdict"] == "ahead"] for m in prompts}
    shares = {
        m: float(np.mean([versus_baseline[m][t]["gap_recovered"] for t in TYPES]))
        for m in prompts
        if all(versus_baseline[m][t]["gap_recovered"] is not None for t in TYPES)
    }
    seeds = min((versus_baseline[m][TYPES[0]]["seeds"] for m in versus_baseline), default=0)
    judged = {"seeds": seeds, "preliminary": seeds < PLANNED_SEEDS}
    result = {
        "H1": {**judged, "holds": any(len(t) == len(TYPES) for t in ahead.values()), "ahead_on": ahead},
        "H2": {**judged, "holds": None, "mean_gap_share": shares},
    }
    if shares:
        better = max(shares, key=shares.get)
        result["H2"].update(better=better, holds=shares[better] >= H2_MIN_GAP_SHARE)
    if {"shared", "attention"} <= set(results):
        versus_shared = paired_table({m: results[m] for m in ("shared", "attention")}, rate, baseline="shared")
        cells = {t: versus_shared["attention"][t] for t in TYPES}
        result["H3"] = {
            "seeds": cells[TYPES[0]]["seeds"],
            "preliminary": cells[TYPES[0]]["seeds"] < PLANNED_SEEDS,
            "holds": all(c["verdict"] == "ahead" for c in cells.values()),
            "attention_minus_shared": cells,
        }
    return result


def contrast(premise: dict, task_aligned: dict) -> dict:
    """H4 of docs/premise.md: each prompt method's lead over the baseline on the premise backbone (`premise`, a
    premise.json of backbones/generic) minus its lead on the task-aligned one (`task_aligned`, backbones/embedded),
    per missing type, with a Welch 95% interval (`contrast_interval`: the two backbones' seeds are independent runs).

    H4 holds when, for the prompt method that H2 named the better one on the premise backbone, the difference is
    ahead (interval above 0) on each of text, image and both missing. The other prompt methods are reported beside.
    """
    cells = {}
    for method in ("shared", "attention", "input"):
        if method in premise["paired"] and method in task_aligned["paired"]:
            cells[method] = {}
            for column in COLUMNS:
                difference, low, high = contrast_interval(
                    premise["paired"][method][column], task_aligned["paired"][method][column]
                )
                cells[method][column] = {
                    "mean": difference,
                    "low": low,
                    "high": high,
                    "verdict": verdict(low, high),
                    "seeds": min(side["paired"][method][column]["seeds"] for side in (premise, task_aligned)),
                }
    better = premise["hypotheses"]["H2"].get("better")
    seeds = min((c["seeds"] for m in cells.values() for c in m.values()), default=0)
    return {
        "backbones": [premise["backbone"], task_aligned["backbone"]],
        "better": better,
        "holds": better in cells and all(cells[better][t]["verdict"] == "ahead" for t in TYPES),
        "seeds": seeds,
        "preliminary": seeds < PLANNED_SEEDS,
        "lead_difference": cells,
    }


def analyse(workdir: Path, backbone: str, methods: list[str], env: dict) -> dict:
    results = {m: json.loads((workdir / "results" / m / "metrics.json").read_text()) for m in methods}
    seeds = sorted(set.intersection(*(set(r["seeds"]) for r in results.values())))
    primary = results["baseline"]["primary_metric"]

    def cell(document, column):
        missing_type, rate = (TYPES[0], 0.0) if column == "complete" else (column, RATE)
        index = next(
            i for i, row in enumerate(document["grid"])
            if row["missing_type"] == missing_type and abs(row["missing_rate"] - rate) < 1e-9
        )  # fmt: skip
        return document["grid"][index][primary], document["grid_sd"][index][primary]

    seconds = {}
    for method in methods:
        runs = [json.loads((workdir / "models" / method / "seeds" / str(s) / "train_summary.json").read_text())
                for s in results[method]["seeds"]]  # fmt: skip
        seconds[method] = {"mean": float(np.mean([r["seconds"] for r in runs])), "steps": [r["steps"] for r in runs]}
    properties = backbone_properties(workdir, backbone, env)
    finetune_complete = cell(results["finetune"], "complete")[0] if "finetune" in results else None
    return {
        "backbone": backbone,
        "metric": primary,
        "seeds": seeds,
        "test_samples": results["baseline"]["test_samples"],
        "table": {m: {c: cell(results[m], c) for c in COLUMNS} for m in methods},
        "paired": paired_table(results, RATE),
        "hypotheses": hypotheses(results),
        "bootstrap_seed": seeds[0],
        "bootstrap": bootstraps(workdir, methods, seeds[0]),
        "train_seconds": seconds,
        "properties": {
            **properties,
            "P1": None
            if properties["heldout_itm_accuracy"] is None
            else properties["heldout_itm_accuracy"] >= P1_MIN_ITM,
            "finetune_complete": finetune_complete,
            "P2": None
            if finetune_complete is None
            else properties["probe_complete"] <= finetune_complete - P2_MIN_ROOM,
        },
        "backbone_lr": json.loads((workdir / "backbone_lr_selection.json").read_text())
        if (workdir / "backbone_lr_selection.json").exists()
        else None,
    }


def markdown(analysis: dict) -> str:
    seeds, several = analysis["seeds"], len(analysis["seeds"]) > 1
    metric_name = analysis["metric"]
    lines = [
        f"### `{analysis['backbone']}`: test {metric_name}, {analysis['test_samples']} test samples, "
        f"seeds {seeds}" + (" (mean ± sd)" if several else ""),
        "",
        "| method | " + " | ".join(c if c == "complete" else f"{c} {RATE:.0%}" for c in COLUMNS) + " | train s |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for method, cells in analysis["table"].items():
        values = [f"{m:.4f} ± {s:.4f}" if several else f"{m:.4f}" for m, s in cells.values()]
        lines.append(f"| {method} | " + " | ".join(values) + f" | {analysis['train_seconds'][method]['mean']:.0f} |")
    lines += ["", f"Paired with the baseline (95% t-interval over {len(seeds)} seeds; bootstrap over test samples, "
              f"seed {analysis['bootstrap_seed']}, 1,000 resamples; share of the baseline → finetune gap):", "",
              "| method | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]  # fmt: skip
    widths = []
    for method, columns in analysis["paired"].items():
        cells = []
        for column in COLUMNS:
            paired = columns.get(column)
            _, low, high = analysis["bootstrap"][method][column]
            widths.append((high - low) / 2)
            text = format_paired(paired) if paired else "-"
            text += f"; bootstrap [{low:+.3f}, {high:+.3f}]"
            if paired and paired["gap_recovered"] is not None:
                text += f"; {paired['gap_recovered']:.0%} of the gap"
            cells.append(text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    properties = analysis["properties"]
    lines += [
        "",
        f"Bootstrap half-width reached: {min(widths):.4f} to {max(widths):.4f} (target ≤ 0.01).",
        "",
        f"- P1 held-out image-text matching {properties['heldout_itm_accuracy']} (≥ {P1_MIN_ITM}): {properties['P1']}",
        f"- P2 frozen-[CLS] linear probe, complete {properties['probe_complete']:.4f} vs finetune complete "
        f"{properties['finetune_complete']:.4f} − {P2_MIN_ROOM}: {properties['P2']}",
        f"- P3 missing-case separability {properties['missing_case_accuracy']:.3f} (chance 0.333)",
    ]
    judged = analysis.get("hypotheses", {})
    if judged:
        lines += ["", f"Hypotheses (docs/premise.md), judged on {judged['H1']['seeds']} of {PLANNED_SEEDS} seeds"
                  + (" (preliminary):" if judged["H1"]["preliminary"] else ":")]  # fmt: skip
        h1 = judged["H1"]
        lines.append(f"- H1 (prompts ahead on each missing type): {h1['holds']}; ahead on "
                     + "; ".join(f"{m}: {', '.join(t) or 'none'}" for m, t in h1["ahead_on"].items()))  # fmt: skip
        h2 = judged["H2"]
        lines.append(f"- H2 (the better recovers ≥ {H2_MIN_GAP_SHARE:.0%} of the gap): {h2['holds']}; mean share "
                     + ", ".join(f"{m} {v:.0%}" for m, v in h2["mean_gap_share"].items()))  # fmt: skip
        if "H3" in judged:
            cells = judged["H3"]["attention_minus_shared"]
            lines.append(f"- H3 (attention ahead of shared on each missing type): {judged['H3']['holds']}; "
                         + "; ".join(f"{t} {format_paired(c)}" for t, c in cells.items()))  # fmt: skip
        h4 = analysis.get("H4")
        if h4 is None:
            lines.append(
                "- H4 (larger lead on generic than on embedded): run with --contrast-with <generic premise.json>"
            )
        else:
            lines.append(
                f"- H4 (the lead of {h4['better']} over the baseline larger on {h4['backbones'][0]} than on "
                f"{h4['backbones'][1]} on each missing type; Welch 95% interval): {h4['holds']}"
                + (" (preliminary)" if h4["preliminary"] else "")
            )
            for method, columns in h4["lead_difference"].items():
                lines.append(f"  - {method}: " + "; ".join(f"{c} {format_paired(v)}" for c, v in columns.items()))
    if analysis["backbone_lr"]:
        chosen = analysis["backbone_lr"]
        lines.append(f"- finetune backbone lr {chosen['chosen']:g}, chosen on seed 0's validation split: "
                     + ", ".join(f"{lr}: {v['best_val']:.4f}" for lr, v in chosen["validation"].items()))  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="backbones/generic", help="a backbone directory of this project")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workdir", type=Path, help="default: experiments/premise-<backbone name>")
    parser.add_argument("--analyse-only", action="store_true", help="write premise.md from what has run")
    parser.add_argument(
        "--contrast-with",
        type=Path,
        metavar="PREMISE_JSON",
        help="the premise backbone's premise.json (backbones/generic's): judge H4, its leads minus this backbone's",
    )
    args = parser.parse_args(argv)
    if "baseline" not in args.methods:
        parser.error("the baseline is what every method is paired with: keep it in --methods")
    workdir = (args.workdir or ROOT / "experiments" / f"premise-{Path(args.backbone).name}").resolve()
    env = environment(workdir)
    if not args.analyse_only:
        set_up(workdir, args.backbone, args.methods, args.seeds, env)
        if "finetune" in args.methods:
            select_backbone_lr(workdir, env)
        run(["git", "add", "-A"], workdir, env)
        subprocess.run(["git", "commit", "-qm", "design"], cwd=workdir, env=env)  # nothing to commit is fine
        run([sys.executable, "-m", "flows.pipeline", "--repo", str(workdir), "--store", str(workdir / "store")],
            workdir, env)  # fmt: skip
    analysis = analyse(workdir, args.backbone, args.methods, env)
    if args.contrast_with:
        analysis["H4"] = contrast(json.loads(args.contrast_with.read_text()), analysis)
    (workdir / "premise.json").write_text(json.dumps(analysis, indent=2, default=float))
    text = markdown(analysis)
    (workdir / "premise.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
