"""cmgems: from a reference genome to pretrained, evaluated DNA language models (GeneMask, CM-GEMS)."""

__version__ = "0.1.0"
