import sys

from snnsec.cli import main

sys.exit(main())
