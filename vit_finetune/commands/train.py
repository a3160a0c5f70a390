"""`train`: fine-tune or train from scratch as a YAML config says."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Fine-tune a Vision Transformer (or train one from scratch) with the HF Trainer.",
        epilog="example: train.py --config cifar10-tiny data.dataset=../shared/data/cifar10 training.max_steps=50\n"
               "exit status: 0 done; 2 bad config, data, checkpoint or image, or output_dir in use by another run; "
               "3 non-finite loss; 4 out of memory; 130 (SIGINT) / 143 (SIGTERM) interrupted after saving a "
               "checkpoint (continue with training.resume_from_checkpoint=true)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True,
                        help="a YAML file, or a bare name looked up in configs/ (e.g. cifar10, cifar10-tiny)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="dotted overrides, parsed as YAML scalars (5e-5 is a float)")
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON on stdout")
    return parser


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    from vit_finetune.commands import run_guarded

    args = build_parser(prog).parse_args(argv)
    return run_guarded(lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from vit_finetune.config import load_run_config
    from vit_finetune.training.run import train

    run = load_run_config(args.config, args.overrides)
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints logs; stdout stays for --json
        result = train(run)
    metrics = result.metrics
    score = "mAP" if run.data.task == "multi_label" else "accuracy"
    print(f"done: test {score} {metrics.get(f'test_{score}', float('nan')):.4f} on "
          f"{run.data.dataset} ({run.data.eval_split}), {metrics.get('train_runtime', 0) / 60:.1f} min, "
          f"{metrics.get('train_samples_per_second', 0):.1f} img/s; model in {result.output_dir}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
