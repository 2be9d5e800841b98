"""``python -m training`` = ``python -m training.train_dncnn``."""
import sys

from .train_dncnn import main

sys.exit(main())
