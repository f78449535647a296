"""Safety tooling: personal-data detectors (`pii`), and later classifiers and watermarking."""
