"""pavenet: end-to-end multi-person pose estimation and tracking in video."""
__version__ = "0.1.0"
