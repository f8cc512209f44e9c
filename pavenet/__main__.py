import sys

from pavenet.cli import main

sys.exit(main())
