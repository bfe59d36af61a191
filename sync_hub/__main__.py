import os
import sys

from sync_hub.cli import main

sys.exit(main(sys.argv[1:], env=os.environ))
