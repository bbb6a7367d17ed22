"""Drain and exporters: buffer to per-process trace files to Chrome, JSON lines, summaries."""
