"""`python -m torchscope` runs the torchscope command line."""

from torchscope.cli import main

raise SystemExit(main())
