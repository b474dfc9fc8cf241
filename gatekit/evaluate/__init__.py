"""Evaluation of a trained encoder: features, k-NN, linear probe, FLOPs and channel usage."""

from gatekit.evaluate.channel_usage import channel_usage, format_usage_table, plot_channel_usage
from gatekit.evaluate.features import Features, extract_features
from gatekit.evaluate.flops_stats import flops_stats, per_sample_macs
from gatekit.evaluate.knn import knn_accuracy, knn_predict
from gatekit.evaluate.linear_probe import ProbeResult, load_probe, save_probe, train_linear_probe
from gatekit.evaluate.report import evaluate_model, format_results_table

__all__ = [
    "Features",
    "ProbeResult",
    "channel_usage",
    "evaluate_model",
    "extract_features",
    "flops_stats",
    "format_results_table",
    "format_usage_table",
    "knn_accuracy",
    "knn_predict",
    "load_probe",
    "per_sample_macs",
    "plot_channel_usage",
    "save_probe",
    "train_linear_probe",
]
