"""Safety tooling: personal-data detectors (`pii`), the policy classifier and its `guard`,
SynthID Text watermarking (`watermark`) and the safety report (`report`)."""
