"""torchscope's recording side: ``profiler.profile(...)`` writes a run bundle from inside the job."""
