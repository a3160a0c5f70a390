"""`eval`: evaluate a trained model (or checkpoint-N, or HF folder / hub id) on a labelled split."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from vit_finetune.commands.arguments import add_precision_argument, add_threshold_argument, positive_int


def build_parser(prog: str = "eval.py") -> argparse.ArgumentParser:
    """The `eval` command line (kept import-light so that --help is instant)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate a checkpoint: accuracy, top-5, per-class precision/recall/F1, confusion matrix "
                    "(a multi-label model: mAP, micro/macro F1 at --threshold, per-label precision/recall/F1). "
                    "Writes eval_results.json and confusion_matrix.png.",
        epilog="example: eval.py --checkpoint runs/cifar10 data.dataset=../shared/data/cifar10 "
               "data.max_eval_samples=1000",
    )
    parser.add_argument("--checkpoint", required=True,
                        help="training output folder, a checkpoint-N in it, or an HF image-classification folder / hub id")
    parser.add_argument("--config",
                        help="a run config (YAML file or name in configs/) instead of the recorded run_config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="dotted overrides of the run config, e.g. data.dataset=DIR data.eval_split=test")
    parser.add_argument("--output-dir", help="where to write the results (default: CHECKPOINT/eval-<split>)")
    parser.add_argument("--batch-size", type=positive_int, help="default: the run's per_device_eval_batch_size")
    add_precision_argument(parser)
    add_threshold_argument(parser)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON on stdout")
    return parser


def main(argv: list[str] | None = None, prog: str = "eval.py") -> int:
    """Parse `argv` and evaluate; returns the exit status."""
    from vit_finetune.commands import run_guarded

    args = build_parser(prog).parse_args(argv)
    return run_guarded(lambda: _eval(args))


def _eval(args: argparse.Namespace) -> int:
    from vit_finetune.evaluation import evaluate_checkpoint, format_summary

    with contextlib.redirect_stdout(sys.stderr):  # library chatter goes to stderr; stdout stays for --json
        output = evaluate_checkpoint(args.checkpoint, config=args.config, overrides=args.overrides,
                                     output_dir=args.output_dir, batch_size=args.batch_size, precision=args.precision,
                                     threshold=args.threshold)
    print(format_summary(output.results), file=sys.stderr if args.json else sys.stdout)
    print(f"results in {output.output_dir}", file=sys.stderr)
    if args.json:
        print(json.dumps(output.results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
