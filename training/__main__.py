"""``python -m training {train,export,evaluate,smoke}`` (see :mod:`training.cli`)."""
import sys

from .cli import main

sys.exit(main())
