"""Where a voice ends and where a reply becomes audible: one definition for every measurer.

`voicectl talk` (a caller in a room), `voicectl say` (no room) and the benchmarks compare
voice-to-voice times, so they must start and stop their clocks on the same samples: from the
last voiced sample of the question (|sample| above VOICED_PEAK) to the first 10 ms of the
reply whose RMS is above SOUND_RMS. A TTS voice begins with some silence of its own (piper:
about 50 ms); a listener hears the reply only after it, so it counts.
"""

from __future__ import annotations

import numpy as np

#: |sample| above which the caller's own recording counts as voiced (int16)
VOICED_PEAK = 500
#: RMS of a slice of the reply above which it counts as sound (int16)
SOUND_RMS = 200.0
#: the slice of reply audio judged sound or silence
SOUND_STEP_S = 0.01


def voiced_end(pcm: np.ndarray, rate: int) -> float:
    """Seconds into the recording of its last voiced sample (ValueError when silent)."""
    voiced = np.nonzero(np.abs(pcm.astype(np.int32)) > VOICED_PEAK)[0]
    if not len(voiced):
        raise ValueError("the recording is silent: nothing to say")
    return (int(voiced[-1]) + 1) / rate


def first_sound_offset(samples: np.ndarray, rate: int) -> float | None:
    """Seconds into `samples` (int16 mono) of the first slice that is sound, or None."""
    step = max(1, int(rate * SOUND_STEP_S))
    for i in range(0, len(samples), step):
        part = samples[i:i + step].astype(np.float64)
        if len(part) and float(np.sqrt(np.mean(part**2))) > SOUND_RMS:
            return i / rate
    return None


__all__ = ["SOUND_RMS", "SOUND_STEP_S", "VOICED_PEAK", "first_sound_offset", "voiced_end"]
