import sys

from optwin.cli import main

sys.exit(main())
