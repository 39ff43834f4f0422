import sys

from tokenlimit.cli import main

sys.exit(main())
