"""Jobs of many ranks: one task per rank returning a small summary, job-level analyses on the summaries."""
