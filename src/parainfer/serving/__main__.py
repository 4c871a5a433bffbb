"""``python -m parainfer.serving --task embed ...``: the same as ``parainfer serve``."""

import typer

from parainfer.serving.cli import serve_command

if __name__ == "__main__":
    typer.run(serve_command)
