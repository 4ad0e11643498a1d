"""`python -m pgcore.lm`: the engine's command line (`pgcore.engine.cli`)."""
import sys

from pgcore.engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
