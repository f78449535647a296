"""Exception types. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class OpenGemmaError(Exception):
    """Base class of every error opengemma raises on purpose."""


class ModelLoadError(OpenGemmaError):
    """A model file or directory is missing, unreadable, malformed or not a Gemma checkpoint."""


class TokenizerError(OpenGemmaError):
    """A tokenizer could not be built, or was asked to encode/decode something it cannot."""


class InvalidRequestError(OpenGemmaError, ValueError):
    """A generation request is malformed: empty prompt, prompt past the context, bad option."""


class ConfigError(OpenGemmaError, ValueError):
    """A configuration is inconsistent or names an unknown preset."""


class UsageError(OpenGemmaError, ValueError):
    """A command was given a bad option or argument value (the CLI exits with status 2)."""
