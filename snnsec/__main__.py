import sys

from snnsec.cli import main

# the guard keeps a spawned worker (the demo's) from running the CLI again when it imports this module
if __name__ == "__main__":
    sys.exit(main())
