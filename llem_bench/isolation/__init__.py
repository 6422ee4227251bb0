"""Where an experiment runs: in this process, a fresh subprocess, or another interpreter (venv).
One JSON protocol: an experiment request in, an ExperimentResult JSON out, a log kept."""
