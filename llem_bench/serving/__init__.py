"""The serving scenario's parts: arrival times, the HTTP load generator, the server process and the
steady-state window. scenarios/serving.py puts them together."""
