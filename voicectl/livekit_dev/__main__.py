"""``python -m voicectl.livekit_dev``: run the dev server (see ``main``)."""

import sys

from voicectl.livekit_dev.main import main

sys.exit(main())
