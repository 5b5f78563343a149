"""Monitoring: confirmatory outcomes, each site's own calibration, drift and health.

Read from the store's results (and the measures of each image kept with them) and the
bundles' manifests; written to the store only for what staff record (outcomes, the
site threshold's history, accepted baselines) and the summary queued for the hub.

    outcomes.py     confirmatory results: entered, imported from a lab's CSV, listed
    lab_register.py reading that CSV strictly: encoding, row and size limits
    calibration.py  the site's operating point from its confirmed cases; apply, roll back
    drift.py        do recent scores and images still look like the reference? (pure)
    health.py       disk, temperature, how long images wait
    monitor.py      the report, its cache, the hub's summary
    charts.py       ROC curve and histograms as SVG, drawn on the box
    stats.py        the statistics (pure numpy; no scipy on the box)
    notices.py      every message, in plain English with a stable code
"""
