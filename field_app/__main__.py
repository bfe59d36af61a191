import os
import sys

from field_app.cli import main

sys.exit(main(sys.argv[1:], env=os.environ))
