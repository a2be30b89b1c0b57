"""Defaults shared by every deployable (CLI, preprocessor service, gateway), so a limit means the same
thing wherever a video is checked.

WHY one module: the CLI used to accept videos up to 3600 s while both services stopped at 600 s, so the
same file passed one and failed the other. Each settings class takes its default from here and each can
still be raised on its own (``DEEPFAKE_MAX_DURATION_S``).
"""

from __future__ import annotations

# Longest accepted video in seconds (10 minutes): the analysis samples a fixed number of frames, so a
# longer video mostly costs decode/seek time and upload storage on the public service.
DEFAULT_MAX_DURATION_S = 600.0
