"""gdtrustar: AWS GuardDuty findings into TruSTAR Station as incident reports."""

__version__ = "0.1.0"
