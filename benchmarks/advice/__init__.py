"""The before/after advice corpus: pairs of workloads that differ by one recommendation, and their runner."""
