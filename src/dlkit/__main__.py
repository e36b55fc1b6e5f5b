"""`python -m dlkit ...` and `torchrun --nproc-per-node N -m dlkit train ...`: the `dlkit` command."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
