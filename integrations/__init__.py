"""Framework callbacks that drive ``torchscope.profile`` from a training framework's own loop.

``torchscope.integrations.transformers.ProfilerCallback`` (Hugging Face ``Trainer``) and
``torchscope.integrations.lightning.ProfilerCallback`` (``lightning.pytorch`` and
``pytorch_lightning``). Each imports its framework only when used.
"""
