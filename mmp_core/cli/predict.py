"""`mmp predict`: its options, and the command that runs a `Predictor` on --image / --text or an inputs file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmp_core.cli.stages import METHOD_CHOICES


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict labels for new images and/or texts with a published run or an adapter",
        description="Predict labels for new inputs. Each input may lack its image or its text: the missing "
        "modality is detected and the matching prompts are used. Bad inputs are reported per row and the rest "
        "are still predicted; the exit code is 1 if any input failed.",
    )
    model = parser.add_argument_group("model (default: the champion of the store)")
    model.add_argument(
        "--store",
        help="artifact store: a directory or s3://bucket/prefix (default: $MMP_STORE, else store/ at the project root)",
    )
    model.add_argument("--run-id", help="a published run instead of the champion")
    model.add_argument(
        "--method", choices=METHOD_CHOICES, help="which of the run's adapters (default: the champion's method)"
    )
    model.add_argument("--adapter", help="an adapter directory (from mmp train) instead of a store")
    model.add_argument(
        "--params",
        metavar="PATH",
        help="with --adapter: the params.yaml it was trained with, for adapters that do not record their input "
        "settings (text length, image sizes); default: the adapter's own record",
    )
    model.add_argument(
        "--backbone",
        help="the backbone the adapter was trained on, if not where training found it (a directory, s3:// URI or "
        "Hugging Face id)",
    )
    model.add_argument(
        "--s3-endpoint-url", help="S3-compatible server for an s3:// store (default: $MMP_S3_ENDPOINT_URL)"
    )
    model.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    given = parser.add_argument_group("inputs (--image and/or --text, or --inputs)")
    given.add_argument("--image", help="an image file (JPEG, PNG, ...)")
    given.add_argument("--text", help="a text")
    given.add_argument(
        "--inputs",
        help='a .jsonl (one {"image": ..., "text": ..., "id": ...} per line) or .csv (header: image, text, '
        "optional id) file; relative image paths are taken from the file's folder",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--threshold",
        type=float,
        help="report labels scoring above this (default: 0.5 for multi-label tasks, none for single-label ones)",
    )
    output.add_argument(
        "--top-k",
        type=int,
        help="report at most this many labels (default: all above the threshold; 1 for single-label)",
    )
    output.add_argument("--json", action="store_true", help="print one JSON object per input (JSON Lines)")
    output.add_argument("--out", help="also write the results to this file as JSON Lines")
    output.add_argument("--batch-size", type=int, default=16, help="inputs per forward pass (default: %(default)s)")
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    import json
    import sys

    from mmp_core.config import TrainParams
    from mmp_core.fileio import atomic_write_text
    from mmp_core.params_file import find_project_root, load_section, params_path
    from mmp_core.predict.inputs import PredictionInput, read_inputs
    from mmp_core.predict.predictor import Predictor

    if args.inputs and (args.image or args.text is not None):
        raise ValueError("give --inputs, or --image and/or --text, not both")
    if args.inputs:
        inputs = read_inputs(args.inputs)
    elif args.image or args.text is not None:
        inputs = [PredictionInput(image=args.image, text=args.text, source="--image/--text")]
    else:
        raise ValueError("nothing to predict: give --image and/or --text, or --inputs FILE")
    if args.adapter and (args.store or args.run_id):
        raise ValueError("give --adapter, or --store (and --run-id), not both")
    if args.params and not args.adapter:
        raise ValueError("--params goes with --adapter (a published run brings its own params.yaml)")
    options = {"device": args.device, "batch_size": args.batch_size}
    if args.adapter:
        params = load_section(params_path(args.params), "train", TrainParams) if args.params else None
        predictor = Predictor.from_adapter(args.adapter, args.backbone, params=params, **options)
    else:
        root = find_project_root()
        store = args.store or os.environ.get("MMP_STORE") or str((root or Path.cwd()) / "store")
        endpoint = args.s3_endpoint_url or os.environ.get("MMP_S3_ENDPOINT_URL") or None
        predictor = Predictor.from_store(
            store, args.run_id, method=args.method, backbone=args.backbone, endpoint_url=endpoint, **options
        )
    print(f"model: {predictor.description}", file=sys.stderr)
    lines, failed = [], 0
    for result in predictor.iter_predict(inputs, threshold=args.threshold, top_k=args.top_k, progress=True):
        line = json.dumps(result.to_dict())
        lines.append(line)
        if not result.ok:
            failed += 1
            print(f"mmp predict: {result.source}: {result.error}", file=sys.stderr)
        if args.json:
            print(line, flush=True)
        elif result.ok:
            print(result.summary(), flush=True)
    if args.out:
        atomic_write_text(args.out, "".join(line + "\n" for line in lines))
        print(f"wrote {len(lines)} result(s) to {args.out}", file=sys.stderr)
    if failed:
        print(f"mmp predict: {failed} of {len(lines)} input(s) failed", file=sys.stderr)
        return 1
    return 0
