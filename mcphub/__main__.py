"""`python -m mcphub` and the `mcphub` console script: cli.main().

The cyclic garbage collector is off while cli's imports run. They build ~115,000 objects (the SDK's and
FastAPI's pydantic models, mostly) that live as long as the process; collecting while they are built was
~20% of the hub's start-up CPU. main() freezes what they built and turns the collector back on.
"""

import gc

gc.disable()

from mcphub.cli import main  # noqa: E402  (after gc.disable(), on purpose)

if __name__ == "__main__":
    main()
