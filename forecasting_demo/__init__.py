"""forecasting_demo: the paper's ensemble forecasts, bootstrap bands and forecast evaluation."""
