"""trace-diff: per-step metrics of two runs, the regression statistics, the report model and its renderers."""
