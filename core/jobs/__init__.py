"""Job orchestration (torch-free): sweeps, the queue and its worker, launchers local and Slurm."""
