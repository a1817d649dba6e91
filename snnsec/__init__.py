"""snnsec: robustness and security evaluation for spiking neural networks."""

__version__ = "0.1.0"
