"""Code the consent pipeline's Singer plugins share, kept in one place and imported."""

__version__ = "0.1.0"
