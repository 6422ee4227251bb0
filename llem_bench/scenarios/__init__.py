"""Scenarios own what is measured and how; backends only load, generate and stream."""
