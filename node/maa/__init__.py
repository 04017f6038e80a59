"""99mTc-MAA SPECT for Y-90 radioembolization: uptake ratios, lung shunt, partition model, perfusion correlation."""
