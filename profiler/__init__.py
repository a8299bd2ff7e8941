"""torchscope's recording side: ``torchscope.profile(...)`` writes a run bundle from inside the job.

    import torchscope
    with torchscope.profile("runs/my_run", model=model) as prof:
        for batch in loader:
            train_step(batch)
            prof.step(tokens=batch.numel())
"""

from torchscope.profiler.options import ProfileOptions
from torchscope.profiler.session import DEFAULT_SCHEDULE, profile, schedule

__all__ = ["profile", "schedule", "ProfileOptions", "DEFAULT_SCHEDULE"]
