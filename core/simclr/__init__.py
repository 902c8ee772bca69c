"""The SimCLR library: views, encoders, NT-Xent, LARS, schedules, distributed helpers, kNN (torch)."""
