"""``python -m warden.ctl``: the ``wardenctl`` command."""

import sys

from warden.ctl.main import main

if __name__ == "__main__":
    sys.exit(main())
