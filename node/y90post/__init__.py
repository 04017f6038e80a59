"""Y-90 dose delivered, from post-therapy imaging (Y-90 PET/CT or bremsstrahlung SPECT/CT), against the dose the
MAA predicted, region by region (science.md section 4; issue 18 part 3)."""
