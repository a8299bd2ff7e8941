"""Roofline analysis: FLOPs and bytes per op, compute- or memory-bound, efficiency against the roofs, MFU."""
