"""The error every checkpoint reader and writer raises on a bad file, path or request."""

from __future__ import annotations

from opengemma.errors import ModelLoadError


class CheckpointError(ModelLoadError):
    """A checkpoint file is malformed, hostile, unsupported or does not fit its config.

    The message names the file and the problem, and says what to do about it.
    """
