"""Picking the artifact that meets a latency target on a device (torch-free)."""
