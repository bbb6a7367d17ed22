"""Drain, trace files and exporters: buffer to per-process binary traces to Chrome, JSON lines,
summaries."""
