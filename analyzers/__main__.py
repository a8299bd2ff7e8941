"""`python -m analyzers` runs the torchscope command line."""

from .cli import main

raise SystemExit(main())
