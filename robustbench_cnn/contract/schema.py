"""The results contract's vocabulary: column order and metric names (standard library only, so the
torch-free edge validator writes the same schema).

Columns and metric names are a contract other tools build on: extend, never rename.
"""

COLUMNS = (
    "run_id", "suite", "dataset", "model", "arch", "defense", "compression", "format", "runtime",
    "device", "metric", "attack", "norm", "eps", "value", "n",
    # extensions (appended, never reordered): the batch size a latency row was measured at
    "batch_size",
    # extensions: 95% Clopper-Pearson interval of an accuracy row (from value and n)
    "ci_low", "ci_high",
)  # fmt: skip

METRICS = frozenset(
    {
        "clean_acc", "robust_acc", "certified_acc", "macro_f1", "ece",
        "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput",
        "size_bytes", "params", "macs",
        # extensions: evaluation sanity checks (1 = passed, 0 = failed)
        "check_pgd_vs_fgsm", "check_large_eps", "check_more_steps", "check_transfer", "check_grad_norm",
        # extensions: pre-flight checks (1 = passed) and whether the model is randomized (1: attacked with EOT)
        "check_logits", "check_num_classes", "randomized",
        # extensions: agreement of an exported model with its torch source on the eval set
        "parity_top1_agreement", "parity_max_abs_logit_diff",
        # extensions: with performance.attack_precision = "bf16", the clean forward under autocast
        "clean_acc_bf16", "bf16_agreement",
        # extensions: an export's parity verdict (1 passed, 0 failed: rows kept, marked unreliable), and a
        # GPU export target skipped on a machine without a GPU (1; no other rows for that export)
        "check_parity", "export_skipped",
        # extensions: 0 when a model's clean or training accuracy is under checks.min_clean_acc (undertrained)
        "check_trained",
        # extensions: the spread of the timed calls behind a latency row (p75 - p25, standard deviation)
        "latency_ms_iqr", "latency_ms_std",
        # extensions: 0 when a zoo model's clean accuracy contradicts its published figure (95% interval), or
        # its worst case lies below its published certified lower bound (no correct attack can do that)
        "check_published_clean", "check_certified_bound",
        # extensions: 1 when the worst case at a budget is no higher than any attack's stronger run there (it
        # is then the headline's verdict, and an attack's own check_more_steps there is a note, not a verdict)
        "check_headline_converged",
        # extensions: 0 when a randomized model (``randomized`` = 1) is attacked without EOT (checks.eot_samples < 2)
        "check_eot",
    }
)  # fmt: skip

NUMERIC = ("eps", "value", "n", "batch_size", "ci_low", "ci_high")

# accuracy metrics (fractions of ``n`` images) that carry a Clopper-Pearson interval
ACCURACY_METRICS = frozenset({"clean_acc", "robust_acc", "certified_acc", "clean_acc_bf16"})
