"""torchscope's recording side: ``profiler.profile(...)`` writes a run bundle from inside the job.

    import profiler
    with profiler.profile("runs/my_run", model=model) as prof:
        for batch in loader:
            train_step(batch)
            prof.step(tokens=batch.numel())
"""

from profiler.session import DEFAULT_SCHEDULE, profile, schedule

__all__ = ["profile", "schedule", "DEFAULT_SCHEDULE"]
