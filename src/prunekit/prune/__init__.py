"""Pruning: masks, scoring, allocation, surgery."""
