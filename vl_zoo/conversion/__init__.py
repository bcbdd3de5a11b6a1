"""Checkpoint converters. The scripts in the repository's conversion/ folder are thin wrappers around these."""
