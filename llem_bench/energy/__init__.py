"""GPU energy measurement: NVML's total-energy counter read at synchronised window edges."""

from llem_bench.energy.meter import EnergyMeter, EnergyWindow, UnavailableMeter, make_energy_meter

__all__ = ["EnergyMeter", "EnergyWindow", "UnavailableMeter", "make_energy_meter"]
