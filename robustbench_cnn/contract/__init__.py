"""The results contract: the metrics and columns of ``results.csv`` (extend, never rename), rows and their
CSV, and the run manifest. Imports nothing of ours but errors and the atomic writer."""
