"""The model every analysis shares: the loaded trace, findings, results, reports, the registry, errors."""
