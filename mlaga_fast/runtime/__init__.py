"""What every stage shares about where and how it computes: the device and the precision policy."""
