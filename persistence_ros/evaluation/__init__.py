"""Scoring runs against truth.json; MOT metrics through trackeval."""
