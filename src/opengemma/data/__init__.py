"""Corpus pipeline: readers/writers, PII and secret scrubbing, dedup, decontamination; local and
Ray engines. `run_scrub(ScrubJob(...))` is the API behind `opengemma scrub`."""

from opengemma.data.formats import ScrubError
from opengemma.data.pipeline import ScrubJob, run_scrub
from opengemma.data.scrub import Scrubber, ScrubOptions
from opengemma.data.scrub_report import Report

__all__ = ["Report", "ScrubError", "ScrubJob", "ScrubOptions", "Scrubber", "run_scrub"]
