"""`python -m mlaga_fast ...` is the CLI; torchrun launches it this way for multi-process training."""
from mlaga_fast.cli.main import cli

if __name__ == "__main__":
    cli()
