"""``python -m bridge.emulator [--host H] [--port P] [--record DIR] [--speed X] [--set NAME=VALUE] ...``"""

import sys

from bridge.emulator.server import main

sys.exit(main())
