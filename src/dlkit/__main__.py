"""`python -m dlkit ...` and `torchrun --nproc-per-node N -m dlkit train ...`: the `dlkit` command."""
from .cli.main import run

if __name__ == "__main__":
    run()
