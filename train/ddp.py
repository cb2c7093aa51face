"""`python -m train.ddp TRAIN-ARGS`: the worker entry point torchrun starts once per GPU.

    torchrun --standalone --nproc-per-node 8 -m train.ddp --data D --clip C --out RUN [train options]

The arguments are those of `clipinspect train` (see train/distributed.py for the semantics);
`clipinspect train --nproc N` builds this command line for you.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from edge_runtime.cli import main as cli_main

    if "WORLD_SIZE" not in os.environ:
        print(
            "train.ddp: error: run under torchrun (torchrun --nproc-per-node N -m train.ddp ...), "
            "or use 'clipinspect train --nproc N'",
            file=sys.stderr,
        )
        return 2
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
