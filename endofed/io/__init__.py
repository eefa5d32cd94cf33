"""Persistence at the edge: checkpoints (safetensors + JSON metadata, never pickle) and metric writers."""
