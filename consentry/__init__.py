"""Consentry: keeps the data of people who object out of AI training."""

__version__ = "0.1.0"
