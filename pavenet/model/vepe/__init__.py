"""VEPE: the second end-to-end video pose design, built on PAVE-Net's shared parts."""
from __future__ import annotations

from pavenet.model.vepe.network import VEPENet, build_vepe

__all__ = ["VEPENet", "build_vepe"]
