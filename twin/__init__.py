"""iomt-twin: a network digital twin for hospital and medical-IoT security."""

__version__ = "0.1.0"
