"""Data: region-feature tables, importers, task datasets, collators and the built-in synthetic data."""
