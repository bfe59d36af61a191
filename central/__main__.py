import os
import sys

from central.cli import main

sys.exit(main(sys.argv[1:], env=os.environ))
