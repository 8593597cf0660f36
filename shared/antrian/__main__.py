import sys

from antrian.cli import main

sys.exit(main())
