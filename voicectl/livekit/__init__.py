"""The LiveKit server as voicectl sees it: which one runs, installing it, its API, and why a
dispatch found no worker."""
