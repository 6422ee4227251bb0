"""Where an experiment runs: in this process, a subprocess, another interpreter (venv) or a container.
One JSON protocol: an experiment request in, an ExperimentResult JSON out, a log kept."""
