"""``python -m lockdock``: the ``lockdock`` command, for an environment whose scripts folder
is not on ``PATH``."""

from lockdock.cli import main

main()
