"""``python -m geninv.cli``: the ``geninv`` command line."""

import sys

from geninv.cli import main

if __name__ == "__main__":
    sys.exit(main())
