"""`predict`: the label of one or more image files, offline, with a fast start."""

from __future__ import annotations

import argparse
import json
import sys

from vit_finetune.commands.arguments import add_precision_argument, add_threshold_argument, positive_int


def build_parser(prog: str = "predict.py") -> argparse.ArgumentParser:
    """The `predict` command line (kept import-light so that --help is instant)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Predict the class of image files (JPEG, PNG, WebP, BMP, GIF, TIFF; any size or mode). "
                    "Prints `path: label (score)` per image (a multi-label model: every label whose sigmoid score "
                    "is at or above --threshold); unreadable files are reported on stderr "
                    "and make the exit status 2, the others are still predicted.",
        epilog="example: predict.py --checkpoint runs/cifar10 cat.jpg dog.png --top-k 3 --json",
    )
    parser.add_argument("--checkpoint", required=True,
                        help="training output folder, a checkpoint-N in it, or an HF image-classification folder / hub id")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--top-k", type=positive_int, default=5, help="classes listed per image in --json (default 5)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    add_precision_argument(parser)
    add_threshold_argument(parser)
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list of {"path", "label", "score", "top_k": [{"label", "score"}, ...]} '
                             '(a multi-label model: {"path", "threshold", "labels": [{"label", "score"}, ...], '
                             '"scores": {label: score} of every label})')
    return parser


def main(argv: list[str] | None = None, prog: str = "predict.py") -> int:
    """Parse `argv` and predict; returns the exit status (2 if any image could not be read)."""
    from vit_finetune.commands import run_guarded

    args = build_parser(prog).parse_args(argv)
    return run_guarded(lambda: _predict(args))


def _predict(args: argparse.Namespace) -> int:
    from vit_finetune.commands import EXIT_USER_ERROR
    from vit_finetune.loading import load_for_inference
    from vit_finetune.prediction import predict_files

    loaded = load_for_inference(args.checkpoint)
    run = predict_files(loaded, args.images, top_k=args.top_k, batch_size=args.batch_size, precision=args.precision,
                        threshold=args.threshold)
    for error in run.errors:
        print(f"error: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps([prediction.to_dict() for prediction in run.predictions], indent=2))
    else:
        print("\n".join(str(prediction) for prediction in run.predictions))
    return EXIT_USER_ERROR if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
