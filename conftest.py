# The llem-bench pytest plugin is registered through its `pytest11` entry point ("llem") once the
# package is installed (pip install -e .). Without installing, run pytest with -p llem_bench.plugin.
