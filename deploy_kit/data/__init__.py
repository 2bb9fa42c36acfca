"""Package-shipped sample images used for parity inputs and the default calibration set."""
