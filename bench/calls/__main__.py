"""``python -m bench.calls``: the benchmark, and the roles of its subprocesses (``--role caller|loopback``)."""

import sys

from bench.calls import main

sys.exit(main(sys.argv[1:]))
