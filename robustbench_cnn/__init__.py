"""robustbench-cnn: accuracy, robustness and speed of CNNs, before and after defense, compression and export."""

__version__ = "0.1.0"
