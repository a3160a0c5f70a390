"""`vit-finetune SUBCOMMAND ...`: one entry point for train, eval and predict.

The benchmark is not a sub-command: it lives in the repository's `benchmarks/` (not installed) and
runs as `python scripts/benchmark.py` from a checkout.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "vit_finetune.commands.train",
    "eval": "vit_finetune.commands.eval",
    "predict": "vit_finetune.commands.predict",
}
USAGE = "usage: vit-finetune {" + ",".join(COMMANDS) + "} [--help] ..."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"vit-finetune: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:], prog=f"vit-finetune {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
