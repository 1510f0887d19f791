"""The ``robustbench-cnn`` command: the parser (:mod:`.parser`, imports nothing heavy) and the commands
(:mod:`.main`)."""

from robustbench_cnn.cli.main import main

__all__ = ["main"]
