"""Inference backends behind the Backend seam."""
