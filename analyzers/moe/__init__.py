"""MoE expert activation: routing, load and imbalance, capacity, locality, buffering and placement what-ifs."""
