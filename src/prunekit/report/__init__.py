"""Reports: comparison tables, sweeps, sensitivity scans, plots, HTML."""
