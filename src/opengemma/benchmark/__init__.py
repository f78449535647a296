"""Side-by-side benchmarks of opengemma, llama.cpp and transformers (`opengemma bench`).

engines.py runs each engine in a child process of its own; harness.py times and compares them;
report.py prints and writes the results; cli.py is the command. `DEFAULT_TEXT` is the prose the
prompts and the perplexity are cut from, shipped with the package (importlib.resources), so
`opengemma bench` finds it in an installed wheel as well as in a checkout.
"""

from importlib.resources import files

DEFAULT_TEXT = files(__name__) / "prose.txt"
