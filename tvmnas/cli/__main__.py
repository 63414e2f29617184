import sys

from tvmnas.cli import main

sys.exit(main())
