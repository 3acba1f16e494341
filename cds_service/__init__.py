"""va-cds: a CDS Hooks 2.0 service for patient safety around vertebral augmentation."""

__version__ = "0.1.0"
