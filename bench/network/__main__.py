"""``python -m bench.network``: the benchmark (``callbridge bench network``)."""

import sys

from bench.network import main

sys.exit(main(sys.argv[1:]))
