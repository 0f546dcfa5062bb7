"""`python -m retinaug.cli` (used by torchrun / accelerate launch)."""

from . import main

main()
