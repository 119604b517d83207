"""Time-series rules shared by preprocessing, training and forecasting: a regular series from raw
rows, the hold-out, the scaling fitted on train only, windows and calendar features."""
